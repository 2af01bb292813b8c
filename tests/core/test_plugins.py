"""The plugin manager: loader hardening, registries, observers (incl. a stateful model test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sia_core import hookimpl
from sia_core.contracts.errors import PluginConflictError, UnknownNameError
from sia_core.contracts.records import BackendSpec, Event
from sia_core.machinery.plugins import new_plugin_manager


def make_fake_dist(root: Path, dist: str, ep_name: str, module: str, source: str) -> None:
    """Install a tiny distribution by hand: a module plus a dist-info with a `sia` entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[sia]\n{ep_name} = {module}\n")


GOOD = """
    from sia_core import hookimpl
    from sia_core.contracts.records import BackendSpec

    @hookimpl
    def sia_backends():
        yield BackendSpec(name="good-backend", factory="x:y")
"""


def run_sia(
    args: list[str], pythonpath: Path, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(pythonpath), **env}
    return subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,  # a hang guard, far above the seconds these take
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    make_fake_dist(tmp_path, "sia-backend-good", "backend-good", "sia_fake_good", GOOD)
    make_fake_dist(
        tmp_path,
        "sia-backend-broken",
        "backend-broken",
        "sia_fake_broken",
        "raise RuntimeError('boom at import')\n",
    )
    return tmp_path


def test_broken_plugin_is_reported_and_skipped(site: Path) -> None:
    proc = run_sia(["plugins", "--json"], site)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["plugins"]}
    assert rows["backend-broken"]["error"] == "RuntimeError: boom at import"
    assert rows["backend-broken"]["distribution"] == "sia-backend-broken"
    assert rows["backend-good"]["error"] is None
    assert rows["backend-good"]["provides"] == {"backends": ["good-backend"]}
    assert "backend-broken" in proc.stderr and "failed to load" in proc.stderr
    # the human-readable listing shows it as failed, with the reason
    human = run_sia(["plugins"], site)
    assert "FAILED  backend-broken" in human.stdout and "boom at import" in human.stdout


RAISES_WHEN_CALLED = """
    from sia_core import hookimpl

    @hookimpl
    def sia_backends():
        raise RuntimeError("boom when asked for backends")

    @hookimpl
    def sia_sandboxes():
        yield from ()
"""


def test_a_registry_hook_that_raises_is_reported_and_skipped(site: Path, tmp_path: Path) -> None:
    make_fake_dist(
        site, "sia-backend-raises", "backend-raises", "sia_fake_raises", RAISES_WHEN_CALLED
    )
    proc = run_sia(["plugins", "--json"], site)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["plugins"]}
    error = rows["backend-raises"]["error"]
    assert error == "sia_backends raised RuntimeError: boom when asked for backends", error
    assert rows["backend-good"]["provides"] == {"backends": ["good-backend"]}
    human = run_sia(["plugins"], site)
    assert "FAILED  backend-raises" in human.stdout and "boom when asked" in human.stdout
    # a run still works, with the other plugins
    runs = tmp_path / "runs"
    run = run_sia(
        ["--task", "tiny-add", "--backend", "scripted", "--max_gen", "1", "--runs-dir", str(runs)],
        site,
    )
    assert run.returncode == 0, run.stderr
    assert (runs / "run_1" / "gen_1" / "metrics.json").is_file()


def test_disable_and_load_only(site: Path) -> None:
    off = json.loads(
        run_sia(["plugins", "--json"], site, SIA_DISABLE_PLUGINS="backend-broken").stdout
    )
    assert "backend-broken" not in {r["name"] for r in off["plugins"]}
    only = json.loads(
        run_sia(["plugins", "--json"], site, SIA_LOAD_PLUGINS="sia-backend-good").stdout
    )
    names = {r["name"] for r in only["plugins"]}
    assert "backend-good" in names and "backend-broken" not in names
    none = json.loads(run_sia(["plugins", "--json"], site, SIA_LOAD_PLUGINS="").stdout)
    assert {r["name"] for r in none["plugins"]} == {"sia_core.surface.builtin"}


def test_strict_mode_reraises(site: Path) -> None:
    proc = run_sia(["plugins"], site, SIA_STRICT_PLUGINS="1")
    assert proc.returncode == 1
    assert "boom at import" in proc.stderr
    assert "Traceback" not in proc.stderr  # still one line without --debug


def test_misspelled_hook_fails_check_pending(tmp_path: Path) -> None:
    make_fake_dist(
        tmp_path,
        "sia-typo",
        "typo",
        "sia_fake_typo",
        """
        from sia_core import hookimpl

        @hookimpl
        def sia_backend():
            return []
    """,
    )
    proc = run_sia(["plugins", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["plugins"]}
    assert "unknown hook 'sia_backend' (did you mean sia_backends?)" in rows["typo"]["error"]


def test_duplicate_names_name_both_plugins(sia_pm, register_plugin) -> None:
    class A:
        @hookimpl
        def sia_backends(self):
            yield BackendSpec(name="dup", factory="a:b")

    class B:
        @hookimpl
        def sia_backends(self):
            yield BackendSpec(name="dup", factory="c:d")

    register_plugin(A(), "plugin-a")
    register_plugin(B(), "plugin-b")
    with pytest.raises(PluginConflictError, match="'plugin-a' and 'plugin-b'"):
        sia_pm.backends()


def test_unknown_name_lists_choices(sia_pm) -> None:
    with pytest.raises(UnknownNameError, match="choose one of: scripted"):
        sia_pm.backends().get("nope")


def test_observer_errors_are_isolated(sia_pm, register_plugin, caplog) -> None:
    seen: list[str] = []

    class Broken:
        @hookimpl
        def sia_on_event(self, event):
            raise ValueError("observer bug")

    class Good:
        @hookimpl
        def sia_on_event(self, event):
            seen.append(event.type)

    register_plugin(Good(), "good-observer")
    register_plugin(Broken(), "broken-observer")
    failures = sia_pm.notify(Event(type="gen_started", run_id="1"))
    assert seen == ["gen_started"]
    assert failures and failures[0][0] == "broken-observer"
    assert "broken-observer" in caplog.text


def test_hooks_have_docstrings() -> None:
    from sia_core.contracts import hookspecs

    names = [n for n in dir(hookspecs) if n.startswith("sia_")]
    assert {
        "sia_backends",
        "sia_sandboxes",
        "sia_rl_algorithms",
        "sia_executors",
        "sia_tasks",
        "sia_on_event",
        "sia_register_commands",
    } <= set(names)
    for n in names:
        assert (getattr(hookspecs, n).__doc__ or "").strip(), n


def test_register_commands_hook(sia_pm, register_plugin) -> None:
    import click
    from click.testing import CliRunner

    from sia_core.surface.cli import make_cli

    class Cmd:
        @hookimpl
        def sia_register_commands(self, cli):
            @cli.command("hello")
            def hello():
                click.echo("hello from a plugin")

    register_plugin(Cmd(), "cmd-plugin")
    result = CliRunner().invoke(make_cli(lambda: sia_pm), ["hello"])
    assert result.output.strip() == "hello from a plugin"


# -- stateful: the registry against a plain dict model ----------------------------------------


def backend_plugin(names: tuple[str, ...]) -> object:
    class P:
        @hookimpl
        def sia_backends(self):
            for n in names:
                yield BackendSpec(name=n, factory="x:y")

    return P()


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pm = new_plugin_manager(entrypoints=False)
        self.model: dict[str, tuple[str, ...]] = {"sia_core.surface.builtin": ("scripted",)}

    @rule(
        pname=st.sampled_from(["p1", "p2", "p3"]),
        names=st.lists(st.sampled_from(["a", "b", "c", "scripted"]), unique=True, max_size=3),
    )
    def register(self, pname: str, names: list[str]) -> None:
        if pname in self.model:
            with pytest.raises(ValueError):
                self.pm.register_object(backend_plugin(tuple(names)), pname)
            return
        self.pm.register_object(backend_plugin(tuple(names)), pname)
        self.model[pname] = tuple(names)

    @precondition(lambda self: len(self.model) > 1)
    @rule(data=st.data())
    def unregister(self, data: st.DataObject) -> None:
        pname = data.draw(
            st.sampled_from(sorted(k for k in self.model if k != "sia_core.surface.builtin"))
        )
        self.pm.unregister_object(pname)
        del self.model[pname]

    @invariant()
    def registry_matches_model(self) -> None:
        names = [n for ns in self.model.values() for n in ns]
        if len(names) != len(set(names)):
            with pytest.raises(PluginConflictError):
                self.pm.backends()
        else:
            reg = self.pm.backends()
            assert sorted(reg.names()) == sorted(names)
            for owner, ns in self.model.items():
                for n in ns:
                    assert reg.provider(n) == owner


TestRegistryStateful = RegistryMachine.TestCase


def test_pluggy_marker_project_name() -> None:
    assert isinstance(hookimpl, pluggy.HookimplMarker)


def test_every_hook_is_documented() -> None:
    """docs/plugins.md has a heading per hook, written with its arguments."""
    import inspect

    from sia_core.contracts import hookspecs

    doc = (Path(__file__).parents[2] / "docs/plugins.md").read_text()
    for name in (n for n in dir(hookspecs) if n.startswith("sia_")):
        args = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"### `{name}({args})`" in doc, name
