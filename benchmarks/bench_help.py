"""How long `sia --help` takes, as a ratio to a bare `python -c "import click"` measured in the
same run (interleaved, median of N), and which sia and plugin modules it imports.

    .venv/bin/python benchmarks/bench_help.py [N]
"""

from __future__ import annotations

import ast
import statistics
import subprocess
import sys
import time


def median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    sia = [sys.executable, "-m", "sia_core.surface.cli", "--help"]
    click = [sys.executable, "-c", "import click"]
    pairs = [(median_seconds(sia, 1), median_seconds(click, 1)) for _ in range(runs)]
    a = statistics.median(p[0] for p in pairs)
    b = statistics.median(p[1] for p in pairs)
    print(
        f"sia --help {a * 1000:.0f} ms; python -c 'import click' {b * 1000:.0f} ms; ratio {a / b:.2f}"
    )
    code = (
        "import sys\nfrom sia_core.surface.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('sia')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    plugins = [m for m in modules if not m.startswith("sia_core")]
    print(f"modules imported: {len(modules)} ({len(plugins)} of plugins: {', '.join(plugins)})")


if __name__ == "__main__":
    main()
