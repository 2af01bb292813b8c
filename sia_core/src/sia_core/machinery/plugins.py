"""The plugin manager: a loader that survives broken plugins, and typed registries.

Load order: sia's built-in plugins, then entry points of the ``sia`` group, then
``check_pending()`` so a misspelled hook name fails loudly. Environment switches:

- ``SIA_DISABLE_PLUGINS=a,b``  skip these entry points (by entry-point or distribution name)
- ``SIA_LOAD_PLUGINS=a,b``     load only these entry points; ``SIA_LOAD_PLUGINS=`` loads none
- ``SIA_STRICT_PLUGINS=1``     re-raise a plugin's import error instead of skipping it
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata as md
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import attrs
import pluggy

from sia_core import PROJECT
from sia_core.contracts import hookspecs
from sia_core.contracts.errors import PluginConflictError, UnknownNameError
from sia_core.contracts.records import (
    AlgorithmSpec,
    BackendSpec,
    Event,
    ExecutorSpec,
    RunnerSpec,
    SandboxSpec,
    TaskSpec,
)

log = logging.getLogger("sia.plugins")

#: modules registered before entry points; each is a regular plugin module
BUILTIN_PLUGINS = ("sia_core.surface.builtin",)

R = TypeVar("R")


@attrs.frozen(kw_only=True)
class PluginInfo:
    """One loaded (or failed) plugin, as ``sia plugins`` shows it."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    hooks: tuple[str, ...] = ()
    error: str | None = None
    builtin: bool = False


@attrs.frozen(kw_only=True)
class Provided(Generic[R]):
    """A record and the plugin that yielded it."""

    record: R
    plugin: str


class Registry(Generic[R]):
    """Records of one kind collected from every plugin, by name.

    Two plugins yielding the same name raise :class:`PluginConflictError` naming both.
    """

    def __init__(self, kind: str, provided: list[Provided[R]]) -> None:
        self.kind = kind
        self._by_name: dict[str, Provided[R]] = {}
        for p in sorted(provided, key=lambda p: (p.record.name, p.plugin)):  # type: ignore[attr-defined]
            name = p.record.name  # type: ignore[attr-defined]
            if name in self._by_name:
                other = self._by_name[name].plugin
                raise PluginConflictError(
                    f"{kind} {name!r} is provided by two plugins: {other!r} and {p.plugin!r}; "
                    f"uninstall one, or disable one with SIA_DISABLE_PLUGINS={p.plugin}"
                )
            self._by_name[name] = p

    def names(self) -> list[str]:
        return list(self._by_name)

    def __iter__(self) -> Iterator[R]:
        return (p.record for p in self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> R:
        """The record called ``name``; an unknown name lists the valid ones."""
        if name not in self._by_name:
            raise UnknownNameError(self.kind, name, self.names())
        return self._by_name[name].record

    def provider(self, name: str) -> str:
        return self._by_name[name].plugin


def _split_env(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {s.strip() for s in raw.split(",") if s.strip()}


class SiaPluginManager(pluggy.PluginManager):
    """pluggy's manager with sia's hookspecs, a hardened loader and typed registry access."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}

    # -- loading ------------------------------------------------------------------------------

    def register_builtins(self) -> None:
        for modname in BUILTIN_PLUGINS:
            mod = importlib.import_module(modname)
            self.register(mod, name=modname)
            self.infos[modname] = PluginInfo(
                name=modname,
                module=modname,
                distribution="sia-core",
                version=_version("sia-core"),
                hooks=self._hooks_of(mod),
                builtin=True,
            )

    def load_entrypoints(self, group: str = PROJECT) -> None:
        """Load every entry point of ``group``; a broken one is recorded and skipped."""
        only = _split_env("SIA_LOAD_PLUGINS")
        disabled = _split_env("SIA_DISABLE_PLUGINS") or set()
        strict = os.environ.get("SIA_STRICT_PLUGINS", "") not in ("", "0")
        for ep in sorted(md.entry_points(group=group), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else None
            names = {ep.name, dist} - {None}
            if only is not None and not (names & only):
                continue
            if names & disabled:
                continue
            if ep.name in self.infos:
                log.warning(
                    "sia: two plugins use the entry-point name %r (%s and %s); keeping the first",
                    ep.name,
                    self.infos[ep.name].distribution,
                    dist,
                )
                continue
            version = ep.dist.version if ep.dist else None
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name)
                self._check_hook_names(plugin)
            except Exception as exc:
                if self.get_plugin(ep.name) is not None:
                    self.unregister(name=ep.name)
                if strict:
                    raise
                reason = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "sia: plugin %r (%s) failed to load and is skipped: %s", ep.name, dist, reason
                )
                self.infos[ep.name] = PluginInfo(
                    name=ep.name, module=ep.value, distribution=dist, version=version, error=reason
                )
                continue
            self.infos[ep.name] = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist,
                version=version,
                hooks=self._hooks_of(plugin),
            )
        self.check_pending()

    def _check_hook_names(self, plugin: object) -> None:
        """A hook name with no spec (a typo) makes the plugin fail to load, with a hint."""
        known = [n for n in dir(hookspecs) if n.startswith("sia_")]
        for caller in self.get_hookcallers(plugin) or ():
            if not caller.has_spec():
                close = difflib.get_close_matches(caller.name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise pluggy.PluginValidationError(plugin, f"unknown hook {caller.name!r}{hint}")

    def register_object(self, plugin: object, name: str) -> None:
        """Register a plugin object (tests, ``--plugin`` style use) and record it."""
        self.register(plugin, name=name)
        self.infos[name] = PluginInfo(name=name, module=repr(plugin), hooks=self._hooks_of(plugin))

    def unregister_object(self, name: str) -> None:
        self.unregister(name=name)
        self.infos.pop(name, None)

    def _hooks_of(self, plugin: object) -> tuple[str, ...]:
        return tuple(sorted(h.name for h in self.get_hookcallers(plugin) or ()))

    # -- registries ---------------------------------------------------------------------------

    def _collect(self, hook_name: str) -> list[Provided[Any]]:
        """Call each implementation on its own so every record is stamped with its plugin.

        A plugin whose registry hook raises is unregistered and listed as failed, with the
        reason (``sia plugins`` shows it); the others go on (``SIA_STRICT_PLUGINS=1`` re-raises).
        """
        provided: list[Provided[Any]] = []
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            try:
                records = [
                    Provided(record=record, plugin=impl.plugin_name)
                    for record in impl.function() or ()
                ]
            except Exception as exc:
                if os.environ.get("SIA_STRICT_PLUGINS", "") not in ("", "0"):
                    raise
                self._fail(impl.plugin_name, f"{hook_name} raised {type(exc).__name__}: {exc}")
                continue
            provided.extend(records)
        return provided

    def _fail(self, name: str, reason: str) -> None:
        """Take a loaded plugin out because one of its hooks failed; record why."""
        log.warning("sia: plugin %r failed and is skipped: %s", name, reason)
        info = self.infos.get(name) or PluginInfo(name=name, module=name)
        self.infos[name] = attrs.evolve(info, error=reason)
        if self.get_plugin(name) is not None:
            self.unregister(name=name)

    def backends(self) -> Registry[BackendSpec]:
        return Registry("backend", self._collect("sia_backends"))

    def sandboxes(self) -> Registry[SandboxSpec]:
        return Registry("sandbox", self._collect("sia_sandboxes"))

    def rl_algorithms(self) -> Registry[AlgorithmSpec]:
        return Registry("RL algorithm", self._collect("sia_rl_algorithms"))

    def executors(self) -> Registry[ExecutorSpec]:
        return Registry("executor", self._collect("sia_executors"))

    def runners(self) -> Registry[RunnerSpec]:
        return Registry("runner", self._collect("sia_runners"))

    def tasks(self) -> Registry[TaskSpec]:
        return Registry("task", self._collect("sia_tasks"))

    # -- observers ----------------------------------------------------------------------------

    def notify(self, event: Event) -> list[tuple[str, str]]:
        """Call every ``sia_on_event`` implementation in turn; errors are logged, never raised.

        Returns ``(plugin, error)`` pairs for the observers that failed.
        """
        failures: list[tuple[str, str]] = []
        for impl in reversed(self.hook.sia_on_event.get_hookimpls()):
            try:
                impl.function(*[{"event": event}[a] for a in impl.argnames])
            except Exception as exc:
                log.warning("sia: observer %r failed on %s: %r", impl.plugin_name, event.type, exc)
                failures.append((impl.plugin_name, repr(exc)))
        return failures

    def plugin_infos(self) -> list[PluginInfo]:
        return sorted(self.infos.values(), key=lambda i: (not i.builtin, i.name))


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def new_plugin_manager(*, entrypoints: bool = True) -> SiaPluginManager:
    """A manager with the built-ins registered and (unless disabled) entry points loaded."""
    pm = SiaPluginManager()
    pm.register_builtins()
    if entrypoints:
        pm.load_entrypoints()
    else:
        pm.check_pending()
    return pm


@functools.cache
def get_plugin_manager() -> SiaPluginManager:
    """The process-wide manager used by the CLI (built once)."""
    return new_plugin_manager()


def resolve(import_string: str) -> Callable[..., Any]:
    """Import ``"pkg.module:attr"`` lazily, with a message naming what is missing."""
    modname, _, attr = import_string.partition(":")
    try:
        obj: Any = importlib.import_module(modname)
    except ImportError as exc:
        from sia_core.contracts.errors import SiaError

        raise SiaError(f"cannot import {modname!r} ({exc}); is its package installed?") from exc
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]
