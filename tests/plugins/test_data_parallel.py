"""Data-parallel training: two gloo processes take the update one process takes (each objective).

Each rank of ``torchrun --nproc_per_node 2`` computes half of the step's micro-batches; the
gradients are summed across ranks before the clipped AdamW step. Both ranks must end with the
parameters one process ends with, for GRPO, PPO + GAE (with its value head) and entropic.
"""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))

from ddp_update_case import step  # noqa: E402

from .test_train_worker import make_job  # noqa: E402
from .test_train_worker import model_cache as _model_cache  # noqa: E402, F401 (a fixture)
from .test_train_worker import shaped_task as _shaped_task  # noqa: E402, F401 (a fixture)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("objective", ["grpo", "ppo", "entropic"])
def test_two_gloo_processes_take_the_one_process_update(objective: str, tmp_path: Path) -> None:
    import torch

    one, one_stats = step(objective)
    assert any(float(d.abs().max()) > 1e-6 for d in one.values())
    proc = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
            str(DATA / "ddp_update_case.py"), str(tmp_path), objective,
        ],
        capture_output=True, text=True, timeout=900,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["moved"].keys() == one.keys()
        for name, delta in one.items():
            assert torch.allclose(got["moved"][name], delta, atol=1e-6, rtol=1e-4), (rank, name)
        for key in ("loss", "pg_loss", "tokens"):
            if key in one_stats:
                assert math.isclose(got["stats"][key], one_stats[key], rel_tol=1e-4, abs_tol=1e-7)


@pytest.mark.slow
@pytest.mark.usefixtures("_model_cache")
def test_the_worker_under_torchrun_trains_the_one_process_adapter(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """``--train-opt nproc=2``: two ranks (rollouts on rank 0, the update over gloo) write the
    adapter one process writes for the same job and seed, and report the same progress."""
    from safetensors.torch import load_file

    from sia_train.executor import LocalExecutor

    shaped_task = request.getfixturevalue("_shaped_task")
    adapters, events = {}, {}
    for nproc in (1, 2):
        out = tmp_path / f"nproc{nproc}"
        job = make_job(
            shaped_task, out, "grpo", torch_threads=1, group_size=4, items_per_step=2,
            rollout_parallel=1, steps=2, micro_batch_tokens=64, nproc=nproc,
        )  # fmt: skip
        got: list[dict] = []
        result = LocalExecutor().run(job, got.append)
        assert result.status == "ok", result.error
        events[nproc] = [e["event"] for e in got]
        assert got[1]["ranks"] == nproc  # the "loaded" line: how many ranks took part
        adapters[nproc] = load_file(out / "adapter_model.safetensors")
    assert events[2] == events[1] == ["start", "loaded", "step", "step", "done"]
    assert any(float(t.abs().max()) > 0 for k, t in adapters[2].items() if "lora_B" in k)
    for key, tensor in adapters[1].items():
        assert torch_close(adapters[2][key], tensor), key


def torch_close(a: object, b: object) -> bool:
    import torch

    return bool(torch.allclose(a, b, atol=1e-6, rtol=1e-4))  # type: ignore[arg-type]
