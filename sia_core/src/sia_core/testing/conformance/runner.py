"""Conformance suite every runner plugin reuses.

Subclass :class:`RunnerConformance` in a test module and supply a ``runner`` fixture (started;
closed at teardown)::

    class TestMyRunner(RunnerConformance):
        @pytest.fixture
        def runner(self):
            runner = MyRunner(RunnerOptions())
            runner.start()
            yield runner
            runner.close()

Override ``sandbox`` to run the items in another sandbox. The checks compare the runner with the
core's ``local`` runner on the same deterministic scaffold (answers, statuses, order), check that
every model call reaches the gateway bound to its item, that an item past its timeout is
recorded as ``timeout`` and leaves no process behind, and that a scaffold whose setup fails
fails every item with that error.
"""

from __future__ import annotations

import os
import secrets
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sia_core.contracts.records import Item
from sia_core.contracts.sandbox import Sandbox
from sia_core.services.gateway import Gateway
from sia_core.services.process_sandbox import ProcessSandbox
from sia_core.services.runner import ItemRunner, LocalRunner, RunSpec
from sia_core.surface.builtin.scripted import ScriptedTaskModel

# deterministic: the answer depends on the item, the public data, the params and the model's
# echo (the scripted model replies with the prompt); an item "hang-<marker>" starts a child that
# sleeps, then sleeps itself, so only a kill of the whole tree ends both
SCAFFOLD = textwrap.dedent(
    """
    import os, subprocess, sys, time
    PARAMS = {"suffix": "!"}

    def setup(ctx):
        global BASE
        with open(os.path.join(ctx.public_dir, "base.txt")) as f:
            BASE = int(f.read())

    def solve(item, ctx):
        text = str(item.input)
        if text.startswith("hang-"):
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", text])
            time.sleep(600)
        reply = ctx.llm([{"role": "user", "content": f"item {item.id}: {text}"}])
        return f"{BASE + len(text)}:{reply}{ctx.params['suffix']}"
    """
)

BROKEN_SETUP = "def setup(ctx):\n    raise RuntimeError('no index here')\n\ndef solve(item, ctx):\n    return 1\n"


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (every process of this machine)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


class RunnerConformance:
    """Checks every :class:`~sia_core.services.runner.ItemRunner` must pass."""

    #: seconds an item may take in these checks (the hanging item runs into it)
    item_timeout_s: float = 20.0

    @pytest.fixture
    def runner(self) -> Iterator[ItemRunner]:  # pragma: no cover - subclasses override
        raise NotImplementedError("subclass RunnerConformance and supply a `runner` fixture")

    @pytest.fixture
    def sandbox(self) -> Sandbox:
        return ProcessSandbox()

    @pytest.fixture
    def gateway(self, runner: ItemRunner) -> Iterator[Gateway]:
        with Gateway(ScriptedTaskModel(), host=runner.gateway_host()) as gw:
            gw.begin(1)
            yield gw

    def spec(self, tmp_path: Path, scaffold: str, name: str) -> RunSpec:
        root = tmp_path / name
        public = root / "public"
        public.mkdir(parents=True)
        (public / "base.txt").write_text("100")
        path = root / "target_agent.py"
        path.write_text(scaffold)
        return RunSpec(
            scaffold_path=path,
            work_dir=root / "work",
            public_dir=public,
            params={"suffix": "?"},
            model_name="scripted",
            parallel=2,
            item_timeout_s=self.item_timeout_s,
        )

    @staticmethod
    def items(n: int) -> list[Item]:
        return [Item(id=f"i{k}", input="x" * (k + 1), split="dev") for k in range(n)]

    def test_same_answers_as_the_local_runner_in_item_order(
        self, runner: ItemRunner, sandbox: Sandbox, gateway: Gateway, tmp_path: Path
    ) -> None:
        items = self.items(6)
        got = runner.run_items(
            self.spec(tmp_path, SCAFFOLD, "r"), items, sandbox=sandbox, gateway=gateway
        )
        want = LocalRunner().run_items(
            self.spec(tmp_path, SCAFFOLD, "l"), items, sandbox=sandbox, gateway=gateway
        )
        assert [r.item_id for r in got] == [i.id for i in items]
        assert [(r.status, r.answer) for r in got] == [(r.status, r.answer) for r in want]
        assert got[0].answer == "101:item i0: x?"

    def test_every_call_reaches_the_gateway_bound_to_its_item(
        self, runner: ItemRunner, sandbox: Sandbox, gateway: Gateway, tmp_path: Path
    ) -> None:
        items = self.items(4)
        results = runner.run_items(
            self.spec(tmp_path, SCAFFOLD, "c"), items, sandbox=sandbox, gateway=gateway
        )
        assert all(r.status == "ok" for r in results), [r.error for r in results]
        calls = gateway.calls()
        assert sorted(c.item_id or "" for c in calls) == sorted(i.id for i in items)
        for call in calls:
            assert call.status == "ok"
            assert call.completion is not None and call.completion.startswith(
                f"item {call.item_id}:"
            )

    def test_an_item_past_its_timeout_leaves_no_process(
        self, runner: ItemRunner, sandbox: Sandbox, gateway: Gateway, tmp_path: Path
    ) -> None:
        marker = "hang-" + secrets.token_hex(6)
        items = [Item(id="h", input=marker, split="dev"), *self.items(2)]
        spec = self.spec(tmp_path, SCAFFOLD, "t")
        results = runner.run_items(spec, items, sandbox=sandbox, gateway=gateway)
        by_id = {r.item_id: r for r in results}
        assert by_id["h"].status == "timeout", by_id["h"]
        assert by_id["i0"].status == "ok" and by_id["i1"].status == "ok"
        deadline = time.monotonic() + 60  # a hang guard, not a speed check
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_with(marker) == []

    def test_a_failing_setup_fails_every_item_with_its_error(
        self, runner: ItemRunner, sandbox: Sandbox, gateway: Gateway, tmp_path: Path
    ) -> None:
        items = self.items(3)
        results = runner.run_items(
            self.spec(tmp_path, BROKEN_SETUP, "s"), items, sandbox=sandbox, gateway=gateway
        )
        assert [r.item_id for r in results] == [i.id for i in items]
        for result in results:
            assert result.status == "error"
            assert "no index here" in result.error

    def test_no_items_no_results(
        self, runner: ItemRunner, sandbox: Sandbox, gateway: Gateway, tmp_path: Path
    ) -> None:
        spec = self.spec(tmp_path, SCAFFOLD, "e")
        assert runner.run_items(spec, [], sandbox=sandbox, gateway=gateway) == []
