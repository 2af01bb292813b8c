"""Prompt reading (prefill) time of the local model by llama.cpp thread count, idle and beside a
busy process: the figures behind ``sia_backend_local.llama_config.default_threads``; then by
the type the model is served as (the local backend's ``serve_type``) with and without flash
attention, on every CPU: the figures behind its defaults (Q4_0, flash attention on).

Starts SmolLM2-135M-Instruct under ``llama_cpp.server`` once per setting and sends chat calls
whose ~720-token prompts differ from the first token on (so the server's prompt-prefix cache
cannot help), ``max_tokens`` 10, greedy. For each setting: idle, then with one extra process
spinning on a core. Prints a markdown table of median seconds per call and the ratio to the
1-thread idle figure; asserts nothing.

    .venv/bin/python benchmarks/bench_llama_threads.py [--calls 6] [--skip-threads]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
import urllib.request

from sia_backend_local.convert import retype_gguf
from sia_backend_local.llama_config import cpu_count
from sia_backend_local.llama_server import LlamaServer
from sia_backend_local.smollm2 import smollm2_gguf

CASE = "被告人张某于2019年在某市盗窃他人财物，价值人民币三千元。" * 12
PROMPT = "请根据下面的案情描述，从候选罪名中选出最合适的一个。" + CASE


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def median_call_seconds(server: LlamaServer, calls: int) -> float:
    times = []
    for i in range(calls + 1):  # the first call warms the server up and is not counted
        body = {
            "model": "smollm2",
            "messages": [{"role": "user", "content": f"{i} {i} {i} " + PROMPT}],
            "max_tokens": 10,
            "temperature": 0,
        }
        req = urllib.request.Request(
            server.base_url + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        started = time.perf_counter()
        with urllib.request.urlopen(req, timeout=600) as resp:
            resp.read()
        if i:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--skip-threads", action="store_true", help="only the serving types")
    args = parser.parse_args()
    if not args.skip_threads:
        threads_table(args.calls)
    types_table(args.calls)


def types_table(calls: int) -> None:
    """Seconds per call by served type and flash attention (every CPU reads the prompt)."""
    n = cpu_count()
    shipped = smollm2_gguf()
    rows = []
    for serve_type in ("q4_1", "q8_0", "q4_0", "iq4_nl", "f16", "f32"):
        path = shipped if serve_type == "q4_1" else retype_gguf(shipped, serve_type)
        for flash in (False, True):
            server = LlamaServer(
                path, n_ctx=4096, n_threads=max(1, n // 2), n_threads_batch=n, flash_attn=flash
            )
            server.start()
            try:
                rows.append((serve_type, flash, median_call_seconds(server, calls)))
            finally:
                server.stop()
    base = rows[0][2]
    print(f"\n{n} CPUs; ~720-token prompts, 10 tokens out, median of {calls} calls\n")
    print("| served as | flash attention | idle s/call | vs Q4_1 without |")
    print("|---|---|---|---|")
    for serve_type, flash, seconds in rows:
        print(
            f"| {serve_type} | {'on' if flash else 'off'} | {seconds:.2f} | {base / seconds:.2f}x |"
        )


def threads_table(calls: int) -> None:
    n = cpu_count()
    settings = sorted({(1, 1), (max(1, n // 2), n), (n, n)})
    rows = []
    for gen_threads, batch_threads in settings:
        server = LlamaServer(
            smollm2_gguf(), n_ctx=4096, n_threads=gen_threads, n_threads_batch=batch_threads
        )
        server.start()
        try:
            idle = median_call_seconds(server, calls)
            busy = multiprocessing.Process(target=spin, args=(3600,), daemon=True)
            busy.start()
            try:
                loaded = median_call_seconds(server, calls)
            finally:
                busy.terminate()
                busy.join()
        finally:
            server.stop()
        rows.append((gen_threads, batch_threads, idle, loaded))
    base = rows[0][2]
    print(f"{n} CPUs; ~720-token prompts, 10 tokens out, median of {calls} calls\n")
    print(
        "| n_threads | n_threads_batch | idle s/call | beside a busy process s/call | idle vs 1 thread |"
    )
    print("|---|---|---|---|---|")
    for g, b, idle, loaded in rows:
        print(f"| {g} | {b} | {idle:.2f} | {loaded:.2f} | {base / idle:.2f}x |")


if __name__ == "__main__":
    main()
