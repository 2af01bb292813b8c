"""The weights lever end to end, through the `sia` CLI with real components only.

The real local backend (SmolLM2-135M-Instruct on llama.cpp), the real ``local`` executor (a
training worker subprocess: peft LoRA + GRPO on the CPU), llama.cpp's own converter (peft
adapter -> GGUF LoRA) and the served adapter (``llama_cpp.server --lora_path``):

- a ``--lever weights`` run trains in generation 2, saves the adapter, and generation 2's task
  model serves it: every record names it and its greedy completions differ from generation 1's
  on the same prompts (issue 4, "End to end");
- SIGKILL of the orchestrator while the training worker runs kills the worker and the model
  server with it (no orphan); ``sia resume`` keeps generation 1 as it was, restarts the train
  step, whose worker resumes from its checkpoint of the same job, and finishes with the adapter
  served (issue 4, "Killing a run during training"; issue 7, "SIGKILL during training");
- ``--task_model`` takes an HF model folder: served through a GGUF converted from it, trained
  from the folder itself, and its adapters converted against it (issue 4, item 4).

The task is tiny-add with a shaped reward (1 - relative error of the sum) and 6 dev items: the
exact-match reward is 0 for nearly every sample of a 135M model, and a group whose rewards are
all equal has zero GRPO advantage, so nothing would be learned.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_resume import install_killer
from tests.plugins.test_train_worker import SHAPED_SCORER, TINY

# minutes on 2 quiet cores; up to ~5 per test on a machine 10x oversubscribed
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DEV_ITEMS = 6
# Training settings that surely move a greedy completion. AdamW's first update moves every
# parameter with a nonzero gradient by about the learning rate (m / sqrt(v) = +-1 after bias
# correction), so lr 1e-2 changes each LoRA weight by ~1e-2 (SIA's 4e-5 would take hundreds of
# steps), and the shaped reward gives 4 samples of an item different rewards, i.e. a nonzero
# gradient. A small rank keeps the adapter (and its GGUF) small.
TRAIN_OPTS = {
    "learning_rate": "1e-2",
    "lora_rank": "8",
    "lora_alpha": "16",
    "group_size": "4",
    "items_per_step": "2",
    "max_tokens": "16",
}


@pytest.fixture(scope="module")
def shaped_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tasks") / "tiny-shaped"
    shutil.copytree(TINY, root)
    toml = (root / "task.toml").read_text()
    toml = toml.replace('scorer = "exact"', 'scorer = "scorer.py:score_item"')
    toml = toml.replace('name = "tiny-add"', 'name = "tiny-shaped"')
    # a busy machine can make a call to a freshly started server take more than tiny-add's 30 s
    (root / "task.toml").write_text(toml.replace("item_timeout_s = 30", "item_timeout_s = 300"))
    (root / "scorer.py").write_text(SHAPED_SCORER)
    for rel in ("data/public/dev.jsonl", "data/private/dev_labels.jsonl"):
        lines = (root / rel).read_text().splitlines()[:DEV_ITEMS]
        (root / rel).write_text("\n".join(lines) + "\n")
    return root


def sia(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 540
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def weights_run_args(task: Path, runs: Path, steps: int, *extra: str) -> list[str]:
    args = [
        "--task-dir",
        str(task),
        "--backend",
        "local",
        "--lever",
        "weights",
        "--max_gen",
        "2",
        "--test-eval",
        "none",
        # the process sandbox: the bwrap sandbox's gateway relay cuts every model call that
        # takes over 10 s (socket.create_connection's timeout stays on the relayed socket), and
        # on a busy machine the first calls to a freshly started server take that long
        "--sandbox",
        "process",
        "--runs-dir",
        str(runs),
        "--run_id",
        "1",
        "--train-opt",
        f"steps={steps}",
        *extra,
    ]
    for key, value in TRAIN_OPTS.items():
        args += ["--train-opt", f"{key}={value}"]
    return args


def text(reply: dict[str, Any]) -> str:
    return str(reply["choices"][0]["message"]["content"])


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def events(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]


def calls_by_item(root: Path, gen: int) -> dict[str, dict[str, Any]]:
    execution = read_json(root / f"gen_{gen}/agent_execution.json")
    assert [i["status"] for i in execution["items"]] == ["ok"] * DEV_ITEMS, execution["items"]
    return {c["item_id"]: c for c in execution["calls"]}


def assert_serves_its_adapter(root: Path) -> dict[str, tuple[str, str]]:
    """Generation 2 trained, saved and served its adapter; every record says so. Returns the
    (gen 1, gen 2) greedy completion of each dev item."""
    adapter = root / "gen_2/adapter"
    decision = read_json(root / "gen_2/decision.json")
    assert decision["lever"] == "weights" and decision["rl_algorithm"] == "grpo"
    result = read_json(root / "gen_2/train_result.json")
    assert result["status"] == "ok", result["error"]
    assert Path(result["adapter"]) == adapter.resolve()
    # the peft adapter, the optimizer state, the training log and the GGUF LoRA llama.cpp served
    files = {p.name for p in adapter.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "optimizer.pt",
        "train_log.jsonl",
        "adapter.gguf",
    } <= files
    assert (adapter / "adapter.gguf").stat().st_size > 1_000_000
    assert read_json(adapter / "adapter_config.json")["r"] == 8
    log = [json.loads(x) for x in (adapter / "train_log.jsonl").read_text().splitlines()]
    assert any(x["reward_std"] > 0 for x in log), "no reward variance: nothing was learned"

    # lineage: the train step, the archive and the gate name the adapter gen 2 serves
    finished = {
        (e["gen"], e["data"]["step"]): e["data"]
        for e in events(root)
        if e["type"] == "step_finished"
    }
    assert finished[(2, "train")]["status"] == "ok"
    assert finished[(2, "train")]["adapter"] == "gen_2/adapter"
    assert finished[(2, "gate")]["node"]["adapter"] == "gen_2/adapter"
    archive = {n["gen"]: n for n in read_json(root / "archive.json")["nodes"]}
    assert archive[1]["adapter"] is None and archive[2]["adapter"] == "gen_2/adapter"
    assert (1, "train") not in finished  # gen 1 is the reference scaffold on the base model

    # the gateway's records: gen 1 called the base model, gen 2 base + the adapter
    gen1, gen2 = calls_by_item(root, 1), calls_by_item(root, 2)
    assert set(gen1) == set(gen2) and len(gen1) == DEV_ITEMS
    assert {c["adapter"] for c in gen1.values()} == {None}
    assert {c["adapter"] for c in gen2.values()} == {str(adapter)}
    # the server itself was restarted with the converted LoRA
    server_log = (root / "local_model_server.log").read_text(errors="replace")
    assert f"--lora_path {adapter / 'adapter.gguf'}" in server_log
    assert "loading lora adapter" in server_log

    pairs = {}
    for item, first in gen1.items():
        second = gen2[item]
        assert first["status"] == second["status"] == "ok"
        # the same prompt, asked greedily (the reference scaffold sends temperature 0)
        assert first["request"]["messages"] == second["request"]["messages"]
        assert first["request"]["temperature"] == 0.0
        pairs[item] = (first["completion"], second["completion"])
    return pairs


# --------------------------------------------------------------------------------------------
# End to end: --lever weights trains, and the next generation serves the adapter
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_run(shaped_task: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("e2e") / "runs"
    start = time.monotonic()
    proc = sia(weights_run_args(shaped_task, runs, steps=1))
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"weights run: {time.monotonic() - start:.1f} s")
    return runs / "run_1"


def test_weights_generation_serves_its_trained_adapter(weights_run: Path) -> None:
    root = weights_run
    assert read_json(root / "run.json")["status"] == "finished"
    pairs = assert_serves_its_adapter(root)
    # llama.cpp is deterministic at temperature 0 (test_local_server), so a changed greedy
    # completion of the same prompt is the adapter's doing
    changed = [item for item, (before, after) in pairs.items() if before != after]
    assert len(changed) >= DEV_ITEMS // 2, pairs
    for item in changed[:2]:
        print(f"{item}: gen 1 {pairs[item][0]!r} -> gen 2 {pairs[item][1]!r}")


# --------------------------------------------------------------------------------------------
# SIGKILL during training, then `sia resume`
# --------------------------------------------------------------------------------------------


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line or working directory contains ``text``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (text in cmdline or text in cwd):
            found.append(f"{proc.name} {cmdline}")
    return found


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists()]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


def test_sigkill_during_training_then_resume(shaped_task: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_killer(site)
    runs = tmp_path / "runs"
    root = runs / "run_1"
    dump = tmp_path / "children.txt"
    # 2 steps with a checkpoint after each; the orchestrator is killed when the worker reports
    # step 1 (its checkpoint is written before that line), so the worker is in step 2 then
    args = weights_run_args(shaped_task, runs, 2, "--train-opt", "checkpoint_every=1")
    killed = sia(
        args,
        {
            "PYTHONPATH": str(site),
            "SIA_TEST_KILL_AT": "train_progress:2:1",
            "SIA_TEST_KILL_DUMP": str(dump),
        },
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    # no orphan: the training worker and the model server died with the orchestrator, and
    # nothing started for this run (scaffold workers of the rollouts included) is left
    children = dump.read_text().splitlines()
    workers = [int(c.split()[0]) for c in children if "sia_train.worker" in c]
    servers = [int(c.split()[0]) for c in children if "llama_cpp.server" in c]
    assert len(workers) == 1 and len(servers) == 1, children
    assert _wait_gone(workers + servers) == [], "a child outlived the killed orchestrator"
    deadline = time.monotonic() + 120  # a hang guard
    while _processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _processes_mentioning(str(tmp_path)) == []

    # the state the kill left: gen 1 done, gen 2's train step begun, a checkpoint of step 1
    assert read_json(root / "run.json")["status"] == "running"
    done = [(e["gen"], e["data"]["step"]) for e in events(root) if e["type"] == "step_finished"]
    assert (1, "gate") in done and (2, "propose") in done and (2, "train") not in done
    adapter = root / "gen_2/adapter"
    assert read_json(adapter / "checkpoint/state.json")["step"] == 1
    assert not (adapter / "result.json").exists()
    gen1_before = _tree_digest(root / "gen_1")

    resumed = sia(["resume", "1", "--runs-dir", str(runs)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_json(root / "run.json")["status"] == "finished"

    # generation 1 was not redone: its files are byte for byte the same, its steps ran once
    assert _tree_digest(root / "gen_1") == gen1_before
    all_events = events(root)
    finished = [(e["gen"], e["data"]["step"]) for e in all_events if e["type"] == "step_finished"]
    assert len(finished) == len(set(finished)), finished
    assert [e["type"] for e in all_events].count("run_resumed") == 1

    # the train step restarted cleanly: a second worker, resumed from the same job's checkpoint
    worker_log = (adapter / "worker.log").read_text()
    assert worker_log.count("=== sia-train worker") == 2
    result = read_json(root / "gen_2/train_result.json")
    assert result["status"] == "ok", result["error"]
    assert result["metrics"]["resumed_from"] == 1
    log = [json.loads(x) for x in (adapter / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [1, 2]
    assert not (adapter / "checkpoint").exists()

    # and the run finished with the adapter served
    assert_serves_its_adapter(root)


# --------------------------------------------------------------------------------------------
# --task_model: an HF model folder
# --------------------------------------------------------------------------------------------


def test_hf_folder_task_model_is_served_and_takes_adapters(
    weights_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HF folder (here: the fp32 folder the trainer made of SmolLM2) is converted to a GGUF
    with llama.cpp's converter and served; the trainer gets the folder itself; an adapter is
    converted against the folder and served on top of it."""
    from sia_backend_local.backend import LocalBackend
    from sia_backend_local.convert import ADAPTER_GGUF, retype_gguf
    from sia_backend_local.smollm2 import smollm2_gguf
    from sia_core.contracts.backend import BackendOptions
    from sia_train.model import gguf_to_hf

    # cached: the weights run's worker converted the GGUF it served (the bundled model as Q4_0)
    folder = gguf_to_hf(retype_gguf(smollm2_gguf(), "q4_0"))
    cache = tmp_path / "cache"
    monkeypatch.setenv("SIA_CACHE_DIR", str(cache))  # the GGUF made of the folder goes here
    backend = LocalBackend(BackendOptions(task_model=str(folder), run_dir=str(tmp_path)))
    try:
        model = backend.task_model()
        assert model.trainable and model.base_model == str(folder.resolve())
        assert model.name == folder.name
        assert model.gguf.parent == cache / "gguf" and model.gguf.stat().st_size > 100_000_000
        assert backend.task_model() is model  # converted once per run
        ask = {
            "messages": [
                {"role": "user", "content": "What is the capital of France? Answer in one word."}
            ],
            "temperature": 0.0,
            "max_tokens": 16,
        }
        assert "Paris" in text(model.chat(ask))
        # gen 1's dev requests (greedy): the adapter was trained on such sums
        requests = [c["request"] for c in calls_by_item(weights_run, 1).values()]
        base = [text(model.chat(r)) for r in requests]  # all before the switch: one restart

        # the weights run's adapter, without the GGUF LoRA converted against the default model
        adapter = tmp_path / "adapter"
        shutil.copytree(weights_run / "gen_2/adapter", adapter)
        (adapter / ADAPTER_GGUF).unlink()
        tuned = model.with_adapter(str(adapter))
        assert tuned.adapter == str(adapter) and tuned.base_model == model.base_model
        assert (adapter / ADAPTER_GGUF).is_file()
        server_log = (tmp_path / "local_model_server.log").read_text(errors="replace")
        assert f"--model {model.gguf}" in server_log
        assert f"--lora_path {adapter / ADAPTER_GGUF}" in server_log
        after = [text(tuned.chat(r)) for r in requests]
        assert sum(a != b for a, b in zip(base, after, strict=True)) >= DEV_ITEMS // 2, (
            base,
            after,
        )
    finally:
        backend.close()
