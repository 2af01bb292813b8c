"""Local generation throughput: the llama.cpp server directly vs through the model gateway.

Starts SmolLM2-135M-Instruct under ``llama_cpp.server`` (sia-backend-local) and a gateway in front
of it, then sends the same prompts (greedy, ``max_tokens`` 64) each way from the same kind of
keep-alive ``http.client`` client, one call at a time. Calls alternate direct/gateway one by one,
so stalls from other work on the machine hit both sides alike; the two calls next to each other
always carry different prompts, so neither side gets the server's prompt-prefix cache for free.
Both sides run in this one process against the same server. Prints a markdown table of
completion tokens/s and the gateway's overhead; asserts nothing.

    .venv/bin/python benchmarks/bench_local_throughput.py [--prompts 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import time
import urllib.parse

from sia_backend_local.server import LocalTaskModel
from sia_core.services.gateway import Gateway

TOPICS = (
    "the sea", "mountains", "cats", "coffee", "trains", "winter", "music", "rivers", "bread",
    "the moon", "forests", "rain", "bicycles", "libraries", "volcanoes", "gardens", "bees",
    "deserts", "lighthouses", "chess",
)  # fmt: skip


def body(topic: str, max_tokens: int) -> bytes:
    """One chat request: a short paragraph about ``topic``, greedy."""
    return json.dumps(
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": f"Write a short paragraph about {topic}."}],
            "temperature": 0.0,
            "max_tokens": max_tokens,
        }
    ).encode()


class Caller:
    """One keep-alive client timing POST {base_url}/chat/completions."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        assert parts.hostname is not None
        self.path = parts.path.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
        self.seconds: list[float] = []
        self.tokens = 0
        self.texts: list[str] = []

    def call(self, data: bytes, record: bool = True) -> None:
        """Make one call; keep its wall time and completion tokens when ``record``."""
        t0 = time.perf_counter()
        self.conn.request("POST", self.path, body=data, headers=self.headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            raise SystemExit(f"call failed with {resp.status}: {raw[:300]!r}")
        if record:
            out = json.loads(raw)
            self.seconds.append(elapsed)
            self.tokens += int(out["usage"]["completion_tokens"])
            self.texts.append(out["choices"][0]["message"]["content"])

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / sum(self.seconds)


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20, help=f"at most {len(TOPICS)}")
    parser.add_argument("--rounds", type=int, default=2, help="passes over all prompts per side")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--n-threads", type=int, default=None, help="default: the server's")
    args = parser.parse_args()
    bodies = [body(t, args.max_tokens) for t in TOPICS[: args.prompts]]

    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    with LocalTaskModel.launch(n_threads=args.n_threads) as model, Gateway(model) as gateway:
        gateway.begin(1)
        direct = Caller(model.server.base_url, "sk-none")
        through = Caller(gateway.url, gateway.new_token())
        for data in bodies[:2]:
            direct.call(data, record=False)
            through.call(data, record=False)
        half = len(bodies) // 2
        for r in range(2 * args.rounds):
            # pass r: direct takes one half of the prompts while the gateway takes the other
            first, second = (
                (bodies[:half], bodies[half:]) if r % 2 == 0 else (bodies[half:], bodies[:half])
            )
            for i, (a, b) in enumerate(zip(first, second, strict=False)):
                pair = ((direct, a), (through, b)) if i % 2 == 0 else ((through, b), (direct, a))
                for caller, data in pair:
                    caller.call(data)
        recorded = gateway.usage()
        direct.conn.close()
        through.conn.close()
        server = model.server
        threads = (server.n_threads, server.n_threads_batch)
    total_s = time.perf_counter() - t_start

    same = sorted(direct.texts) == sorted(through.texts)
    overhead = (direct.tokens_per_s / through.tokens_per_s - 1) * 100
    n = len(direct.seconds)
    print(
        f"local throughput: {n} sequential calls per side ({2 * half} prompts x "
        f"{args.rounds}), interleaved, max_tokens {args.max_tokens}, temperature 0; SmolLM2-135M-"
        f"Instruct Q4_1, llama_cpp.server n_threads={threads[0]} n_threads_batch={threads[1]} "
        f"(Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs)\n"
    )
    print("| path | completion tok/s | median s/call | completion tokens |")
    print("|---|---:|---:|---:|")
    for label, c in (("direct to llama server", direct), ("through gateway", through)):
        print(
            f"| {label} | {c.tokens_per_s:.1f} | {statistics.median(c.seconds):.3f} | {c.tokens} |"
        )
    print(f"| gateway overhead | {overhead:+.1f} % | | |")
    print(
        f"\nsame completions both ways: {same}; gateway recorded {recorded['calls']} calls, "
        f"{recorded['completion_tokens']} completion tokens (incl. warm-up); load average "
        f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}; total {total_s:.1f} s"
    )


if __name__ == "__main__":
    main()
