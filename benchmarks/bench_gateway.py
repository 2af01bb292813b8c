"""What the model gateway adds to each call: direct-to-upstream vs through the gateway.

Starts the OpenAI stub (instant replies) and a gateway in front of it, then times N sequential
chat calls each way from the same kind of keep-alive ``http.client`` client with the same body,
in alternating blocks so drift hits both sides alike. Prints a markdown table; asserts nothing.

    .venv/bin/python benchmarks/bench_gateway.py [--calls 500]
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import time
import urllib.parse

from sia_core.services.gateway import Gateway, HTTPTaskModel
from sia_core.testing.openai_stub import OpenAIStub

BODY = json.dumps(
    {
        "model": "bench",
        "messages": [
            {"role": "system", "content": "You answer tersely."},
            {"role": "user", "content": "Reply with the word ok. " * 8},
        ],
        "temperature": 0.0,
    }
).encode()


class Caller:
    """One keep-alive client timing POST {base_url}/chat/completions."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        assert parts.hostname is not None
        self.path = parts.path.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.samples: list[float] = []

    def call(self, record: bool = True) -> None:
        """Make one call; keep its wall time in ``samples`` when ``record``."""
        t0 = time.perf_counter()
        self.conn.request("POST", self.path, body=BODY, headers=self.headers)
        resp = self.conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            raise SystemExit(f"call failed with {resp.status}: {data[:300]!r}")
        if record:
            self.samples.append(elapsed)


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="timed calls per side")
    parser.add_argument("--block", type=int, default=50, help="calls per alternating block")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls per side first")
    args = parser.parse_args()

    t_start = time.perf_counter()
    with OpenAIStub() as stub:
        model = HTTPTaskModel(stub.url, "stub-model")
        with Gateway(model) as gateway:
            gateway.begin(1)
            direct = Caller(stub.url, "sk-none")
            through = Caller(gateway.url, gateway.new_token())
            for _ in range(args.warmup):
                direct.call(record=False)
                through.call(record=False)
            done = 0
            while done < args.calls:
                n = min(args.block, args.calls - done)
                # alternate which side goes first, so neither always runs on a "cooler" machine
                order = (direct, through) if (done // args.block) % 2 == 0 else (through, direct)
                for caller in order:
                    for _ in range(n):
                        caller.call()
                done += n
            recorded = gateway.usage()["calls"]
            direct.conn.close()
            through.conn.close()
        model.close()
    total_s = time.perf_counter() - t_start

    d_med, g_med = (
        statistics.median(direct.samples) * 1000,
        statistics.median(through.samples) * 1000,
    )
    d_p90, g_p90 = _ms(direct.samples, 0.9), _ms(through.samples, 0.9)
    print(
        f"gateway overhead: {args.calls} sequential chat calls per side, keep-alive, "
        f"instant stub upstream (Python {platform.python_version()}, {platform.machine()})\n"
    )
    print("| path | median ms | p90 ms |")
    print("|---|---:|---:|")
    print(f"| direct to stub | {d_med:.3f} | {d_p90:.3f} |")
    print(f"| through gateway | {g_med:.3f} | {g_p90:.3f} |")
    print(f"| added by gateway | {g_med - d_med:+.3f} | {g_p90 - d_p90:+.3f} |")
    print(f"| ratio gateway / direct | {g_med / d_med:.2f}x | {g_p90 / d_p90:.2f}x |")
    print(f"\n{recorded} calls recorded by the gateway (incl. warm-up); total {total_s:.1f} s")


if __name__ == "__main__":
    main()
