"""The top-level ``sia`` group: built-in commands, then plugin commands loaded only when used.

A plugin adds a command in one of two ways:

- an entry point in the ``sia.commands`` group, ``report = "sia_report.cli:report_cmd"``: listed
  by ``sia --help`` from package metadata alone (its short help is the distribution's summary)
  and imported only when ``sia report`` runs. This keeps ``sia --help`` free of plugin imports.
- the ``sia_register_commands`` hook: the plugins are loaded (and the hook called) the first
  time a name is not found among the above, e.g. ``sia hello`` (``sia plugins`` lists which
  plugins implement the hook).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
from collections.abc import Callable
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

import click

from sia_core.contracts.errors import SiaError

#: the entry-point group whose names are ``sia`` subcommands
COMMANDS_GROUP = "sia.commands"


def command_entry_points() -> dict[str, md.EntryPoint]:
    """``sia.commands`` entry points by name (the first of a duplicated name wins)."""
    found: dict[str, md.EntryPoint] = {}
    for ep in md.entry_points(group=COMMANDS_GROUP):
        found.setdefault(ep.name, ep)
    return found


def source_docstring(value: str) -> str:
    """The docstring of the function an entry point ``module:function`` names, read from its
    source file without importing anything ("" when it cannot be found that way)."""
    module, _, attr = value.partition(":")
    parts = module.split(".")
    try:
        spec = PathFinder.find_spec(parts[0])
        for i in range(1, len(parts)):
            locations = list(spec.submodule_search_locations or []) if spec else []
            spec = PathFinder.find_spec(".".join(parts[: i + 1]), locations)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return ""
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, ImportError):
        return ""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == attr:
            return ast.get_docstring(node) or ""
    return ""


def short_help(ep: md.EntryPoint, limit: int) -> str:
    """The first sentence of the command's docstring (read from source, not imported), else of
    its distribution's summary, cut to ``limit``."""
    text = source_docstring(ep.value).split("\n\n")[0].replace("\n", " ").strip()
    if not text:
        dist = ep.dist
        text = (dist.metadata["Summary"] or "").strip() if dist is not None else ""
        text = text or f"(from {dist.name if dist else ep.value})"
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[: max(limit - 3, 1)].rstrip() + "..."


class SiaGroup(click.Group):
    """Lists built-in commands in the order they were added, then plugin commands by name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, md.EntryPoint] = {}
        self.register_from_plugins: Callable[[click.Group], None] | None = None
        self._hooks_called = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands) + sorted(n for n in self.lazy if n not in self.commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name in self.lazy:
            return self._load(cmd_name)
        self.call_register_hook()
        return self.commands.get(cmd_name)

    def call_register_hook(self) -> None:
        """Load the plugins and let each add commands through ``sia_register_commands`` (once)."""
        if self._hooks_called or self.register_from_plugins is None:
            return
        self._hooks_called = True
        try:
            self.register_from_plugins(self)
        except Exception as exc:  # a plugin's command must not take the CLI down
            click.echo(f"sia: warning: a plugin failed to register commands: {exc}", err=True)

    def _load(self, name: str) -> click.Command:
        ep = self.lazy[name]
        try:
            command = ep.load()
        except Exception as exc:
            raise SiaError(
                f"the command {name!r} could not be loaded from {ep.value} "
                f"({type(exc).__name__}: {exc}); reinstall its package or see `sia doctor`"
            ) from exc
        if not isinstance(command, click.Command):
            raise SiaError(
                f"the entry point {name} = {ep.value!r} in group {COMMANDS_GROUP!r} is not a "
                f"click command (got {type(command).__name__}); point it at a @click.command"
            )
        self.commands[name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = [
            n for n in self.list_commands(ctx) if not getattr(self.commands.get(n), "hidden", 0)
        ]
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = []
        for name in names:
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                rows.append((name, short_help(self.lazy[name], limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
