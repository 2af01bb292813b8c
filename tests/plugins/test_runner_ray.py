"""The ``ray`` runner (sia-runner-ray) on real Ray clusters of this machine.

- A one-node cluster the runner starts itself passes the runner conformance suite.
- A two-node cluster, the second node in its own network namespace (a veth pair: it reaches the
  head and the run's gateway only across it), passes it too; items run on both nodes; a hostile
  scaffold in bwrap on the second node meets the same walls as on this one; the second node
  killed mid-run leaves every item scored, the re-runs recorded; the orchestrator SIGKILLed
  mid-run resumes on the cluster and ends where an uninterrupted local run ends.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import Item
from sia_core.services.gateway import Gateway
from sia_core.services.runner import ItemRunner, RunnerOptions, RunSpec
from sia_core.surface.builtin.scripted import ScriptedTaskModel
from sia_core.testing.conformance.runner import SCAFFOLD, RunnerConformance, processes_with
from sia_runner_ray.runner import RayRunner
from sia_runner_ray.testing import TwoNodeCluster, can_make_namespaces

from ..core.test_loop import write_script
from ..core.test_resume import final_state, install_killer, run_args
from .test_train_worker import make_job
from .test_train_worker import model_cache as _model_cache  # noqa: F401 (a fixture)
from .test_train_worker import shaped_task as _shaped_task  # noqa: F401 (a fixture)


@pytest.fixture(scope="module", autouse=True)
def ray_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Token authentication with a token of this module's own, for every cluster it starts
    (Ray loads the token once per process)."""
    token = tmp_path_factory.mktemp("ray-token") / "token"
    token.write_text(secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    yield token
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="class")
def one_node_runner() -> Iterator[ItemRunner]:
    runner = RayRunner(RunnerOptions(settings={"batch_size": 2}))
    runner.start()
    yield runner
    runner.close()


class TestRayRunnerOnOneNode(RunnerConformance):
    @pytest.fixture
    def runner(self, one_node_runner: ItemRunner) -> ItemRunner:
        return one_node_runner


@pytest.mark.slow
@pytest.mark.usefixtures("one_node_runner", "_model_cache")
def test_the_ray_executor_trains_the_adapter_the_local_executor_trains(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Same job, same seed, on the CPU: the same adapter, bit for bit."""
    shaped_task = request.getfixturevalue("_shaped_task")
    from safetensors.torch import load_file

    from sia_runner_ray.executor import RayExecutor
    from sia_train.executor import LocalExecutor

    ok, why = RayExecutor().available()
    assert ok, why
    adapters = {}
    for name, executor in (("local", LocalExecutor()), ("ray", RayExecutor())):
        # one scaffold worker: the calls reach the policy in one order (batches are made by time)
        job = make_job(
            shaped_task,
            tmp_path / name,
            "grpo",
            torch_threads=1,
            group_size=4,
            items_per_step=2,
            rollout_parallel=1,
        )
        events: list[dict[str, Any]] = []
        result = executor.run(job, events.append)
        assert result.status == "ok", result.error
        assert result.adapter == str((tmp_path / name).resolve())
        assert [e["event"] for e in events] == ["start", "loaded", "step", "done"]
        adapters[name] = load_file(tmp_path / name / "adapter_model.safetensors")
    assert result.metrics["executor"] == "ray" and result.metrics["node"]
    assert adapters["ray"].keys() == adapters["local"].keys()
    for key, tensor in adapters["local"].items():
        assert (adapters["ray"][key] == tensor).all(), key
    assert any(float(t.abs().max()) > 0 for k, t in adapters["ray"].items() if "lora_B" in k)


def test_unknown_settings_and_unreachable_clusters_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SiaError, match="batch_size"):
        RayRunner(RunnerOptions(settings={"batch_size": "many"}))
    # a free port on loopback: nothing listens there
    runner = RayRunner(RunnerOptions(settings={"address": "127.0.0.1:9"}))
    with pytest.raises(SiaError, match=re.escape("cannot connect to Ray cluster at 127.0.0.1:9")):
        runner.start()
    runner.close()


def test_cli_refuses_an_unknown_runner_option(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", "--task", "tiny-add", "--backend",
         "scripted", "--runner", "ray", "--runner-opt", "adress=x", "--runs-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "--runner-opt adress: runner 'ray' has no such setting (known: address," in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


# -- two nodes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, ray_token: Path) -> Iterator[TwoNodeCluster]:
    why = can_make_namespaces()
    if why:
        pytest.skip(f"a two-node cluster on one machine {why}")
    cluster = TwoNodeCluster(tmp_path_factory.mktemp("ray-cluster"), ray_token)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="class")
def two_node_runner(cluster: TwoNodeCluster) -> Iterator[RayRunner]:
    runner = RayRunner(RunnerOptions(settings={"address": cluster.address, "batch_size": 1}))
    try:
        runner.start()
        yield runner
    finally:
        runner.close()


class TestRayRunnerOnTwoNodes(RunnerConformance):
    @pytest.fixture
    def runner(self, two_node_runner: RayRunner) -> ItemRunner:
        return two_node_runner

    def test_the_gateway_listens_where_the_cluster_reaches_it(
        self, runner: RayRunner, cluster: TwoNodeCluster
    ) -> None:
        assert runner.gateway_host() == cluster.head_ip

    def test_items_run_on_both_nodes(
        self, runner: RayRunner, cluster: TwoNodeCluster, gateway: Gateway, tmp_path: Path
    ) -> None:
        spec = self.spec(tmp_path, SLOW, "both")
        # what a batch killed with its node leaves behind (its Ray worker's pid is gone)
        stale = Path(tempfile.gettempdir()) / f"sia-ray-batch-999999999-{secrets.token_hex(3)}"
        (stale / "work").mkdir(parents=True)
        results = runner.run_items(spec, self.items(8), sandbox=_process(), gateway=gateway)
        assert not stale.exists()  # swept by the next batch on this machine
        assert all(r.status == "ok" for r in results), [r.error for r in results]
        nodes = {r.node.split()[0] for r in results}
        assert nodes == {cluster.head_ip, cluster.node_ip}
        # the workers' logs came back to the run's log folder
        assert list(spec.logs().glob("batch-*-worker-0.log"))

    def test_timed_out_items_leave_no_process_on_either_node(
        self, runner: RayRunner, cluster: TwoNodeCluster, gateway: Gateway, tmp_path: Path
    ) -> None:
        marker = "hang-" + secrets.token_hex(6)
        items = [Item(id=f"h{k}", input=f"{marker}-{k}", split="dev") for k in range(4)]
        results = runner.run_items(
            self.spec(tmp_path, SCAFFOLD, "hang"), items, sandbox=_process(), gateway=gateway
        )
        assert {r.status for r in results} == {"timeout"}
        assert {r.node.split()[0] for r in results} == {cluster.head_ip, cluster.node_ip}
        deadline = time.monotonic() + 60  # a hang guard, not a speed check
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_with(marker) == []

    def test_a_hostile_scaffold_in_bwrap_meets_the_same_walls_on_the_other_node(
        self, cluster: TwoNodeCluster, tmp_path: Path
    ) -> None:
        from sia_sandbox_bwrap.sandbox import BwrapSandbox

        ok, why = BwrapSandbox().available()
        assert ok, why  # setup installs bubblewrap: a missing one is a broken machine
        runner = RayRunner(
            RunnerOptions(settings={"address": cluster.address, "batch_size": 1}, sandbox="bwrap")
        )
        runner.start()  # already connected: checks bwrap on both nodes
        marker = f"/tmp/sia-ray-escape-{secrets.token_hex(4)}"
        with Gateway(ScriptedTaskModel(), host=runner.gateway_host()) as gw:
            gw.begin(1)
            spec = attrs_evolve(
                self.spec(tmp_path, HOSTILE, "hostile"),
                params={"marker": marker, "head": cluster.head_ip, "port": int(cluster.port)},
            )
            results = runner.run_items(spec, self.items(6), sandbox=_bwrap(), gateway=gw)
        assert all(r.status == "ok" for r in results), [r.error for r in results]
        assert cluster.node_ip in {r.node.split()[0] for r in results}
        walls = {"write": "denied", "connect": "denied", "llm": "ok", "forged": 403, "made_up": 401}
        for r in results:
            assert r.answer == walls, (r.node, r.answer)
        # the forged calls reached the gateway through the relay and were recorded as refused
        calls = gw.calls()
        refused = [c for c in calls if c.status == "refused"]
        assert len(refused) == len(results)
        assert all(c.item_id in {r.item_id for r in results} for c in refused)
        assert not Path(marker).exists()
        assert (tmp_path / "hostile/public/base.txt").read_text() == "100"

    def test_a_lost_node_has_its_items_run_again_elsewhere(
        self, runner: RayRunner, cluster: TwoNodeCluster, gateway: Gateway, tmp_path: Path
    ) -> None:
        # each item marks its start with its network namespace; the far node is killed once
        # an item is known to be running there (so a batch is in flight on it)
        started = tmp_path / "started"
        started.mkdir()
        far = os.stat(f"/run/netns/{cluster.netns}").st_ino

        def kill_when_busy() -> None:
            deadline = time.monotonic() + 300  # a hang guard
            while time.monotonic() < deadline:
                if any(p.name.endswith(f"-{far}") for p in started.iterdir()):
                    cluster.kill_second_node()
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        items = self.items(10)
        spec = attrs_evolve(self.spec(tmp_path, MARKED, "lost"), params={"dir": str(started)})
        try:
            results = runner.run_items(spec, items, sandbox=_process(), gateway=gateway)
        finally:
            killer.join(timeout=300)
            cluster.start_second_node()  # for the tests after this one
        assert [r.item_id for r in results] == [i.id for i in items]
        assert all(r.status == "ok" for r in results), [(r.item_id, r.error) for r in results]
        rerun = [r for r in results if r.reruns]
        assert rerun, "the node was killed while an item ran on it: it must have been re-run"
        for r in rerun:
            assert r.node.split()[0] == cluster.head_ip
            assert len(r.reruns) == 1
        calls = gateway.calls()
        assert {c.item_id for c in calls if c.status == "ok"} == {i.id for i in items}


def test_orchestrator_killed_mid_run_resumes_on_the_cluster(
    cluster: TwoNodeCluster, tmp_path: Path
) -> None:
    """SIGKILL mid-generation, `sia resume` on Ray: the same end as an uninterrupted local run."""
    site = tmp_path / "site"
    site.mkdir()
    install_killer(site)
    script = write_script(tmp_path)
    env = {**cluster.env(), "PYTHONPATH": str(site)}

    def sia(args: list[str], kill_at: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sia_core.surface.cli", *args],
            capture_output=True,
            text=True,
            env={**env, "SIA_TEST_KILL_AT": kill_at},
            timeout=1200,
        )

    local = sia(run_args(script, tmp_path / "local", max_gen=2))
    assert local.returncode == 0, local.stderr
    ray_args = [
        *run_args(script, tmp_path / "ray", max_gen=2),
        "--runner",
        "ray",
        "--runner-opt",
        f"address={cluster.address}",
        "--runner-opt",
        "batch_size=1",
    ]
    killed = sia(ray_args, kill_at="item_finished:1:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "sia: runner ray: items as Ray tasks" in killed.stderr
    assert "Token authentication" not in killed.stderr  # Ray's notices stay out of sia's output
    resumed = sia(["resume", "1", "--runs-dir", str(tmp_path / "ray")])
    assert resumed.returncode == 0, resumed.stderr
    assert final_state(tmp_path / "ray/run_1") == final_state(tmp_path / "local/run_1")
    run_json = json.loads((tmp_path / "ray/run_1/run.json").read_text())
    assert run_json["config"]["runner"] == "ray"
    execution = json.loads((tmp_path / "ray/run_1/gen_1/agent_execution.json").read_text())
    assert {i["node"].split()[0] for i in execution["items"]} <= {cluster.head_ip, cluster.node_ip}
    assert all(i["node"] for i in execution["items"])
    deadline = time.monotonic() + 120  # a hang guard: Ray ends a dead driver's tasks in seconds
    while _batch_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _batch_processes() == []


# -- helpers -----------------------------------------------------------------------------------

SLOW = textwrap.dedent(
    """
    import time
    def solve(item, ctx):
        time.sleep(1.0)
        return ctx.llm([{"role": "user", "content": f"item {item.id}"}])
    """
)

# marks its start (item id and network namespace inode) in a shared folder, then takes a while
MARKED = textwrap.dedent(
    """
    import os, time
    def solve(item, ctx):
        ns = os.stat("/proc/self/ns/net").st_ino
        open(os.path.join(ctx.params["dir"], f"{item.id}-{ns}"), "w").close()
        time.sleep(3.0)
        return ctx.llm([{"role": "user", "content": f"item {item.id}"}])
    """
)

# tries to write into the task's public folder and the node's /tmp, and to reach the Ray head
# across the veth pair; calls the model through the gateway (the one connection it is allowed)
HOSTILE = textwrap.dedent(
    """
    import json, os, socket, urllib.error, urllib.request
    def solve(item, ctx):
        out = {}
        try:  # the public folder is mounted read-only
            with open(os.path.join(ctx.public_dir, "base.txt"), "w") as f:
                f.write("0")
            out["write"] = "succeeded"
        except OSError:
            out["write"] = "denied"
        try:  # lands in the sandbox's own /tmp, if anywhere: never on the node's
            with open(ctx.params["marker"], "w") as f:
                f.write("escaped")
        except OSError:
            pass
        try:
            socket.create_connection((ctx.params["head"], ctx.params["port"]), 3).close()
            out["connect"] = "succeeded"
        except OSError:
            out["connect"] = "denied"
        out["llm"] = "ok" if ctx.llm([{"role": "user", "content": "hi"}]) == "hi" else "bad"
        # its own key, claiming another item's calls; then a made-up key
        other = "i0" if item.id != "i0" else "i1"
        for name, key, headers in (
            ("forged", os.environ["OPENAI_API_KEY"], {"X-Sia-Item": other}),
            ("made_up", "sia-node-guess", {}),
        ):
            req = urllib.request.Request(
                os.environ["OPENAI_BASE_URL"] + "/chat/completions",
                data=json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(),
                headers={"Authorization": "Bearer " + key, "Content-Type": "application/json",
                         **headers},
            )
            try:
                urllib.request.urlopen(req, timeout=30).read()
                out[name] = 200
            except urllib.error.HTTPError as exc:
                out[name] = exc.code
        return out
    """
)


def _process() -> Any:
    from sia_core.services.process_sandbox import ProcessSandbox

    return ProcessSandbox()


def _bwrap() -> Any:
    from sia_sandbox_bwrap.sandbox import BwrapSandbox

    return BwrapSandbox()


def attrs_evolve(spec: RunSpec, **changes: Any) -> RunSpec:
    import attrs

    return attrs.evolve(spec, **changes)


def _batch_processes() -> list[str]:
    """Processes still running a batch's work dir (``/tmp/sia-ray-batch-...``)."""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=60).stdout
    return [line for line in ps.splitlines() if "sia-ray-batch-" in line]


def test_listing_the_plugins_imports_no_ray() -> None:
    code = (
        "import sys; from sia_core.machinery.plugins import new_plugin_manager; "
        "pm = new_plugin_manager(); print(pm.runners().names(), pm.executors().names()); "
        "print('ray' in sys.modules, 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    names, imported = proc.stdout.splitlines()
    assert "'ray'" in names and "'local'" in names
    assert imported == "False False"
