"""``sia web`` in a real headless browser (Debian's chromium driven by Playwright): a real run
of ``sia`` started while the page is open appears, moves on and finishes on screen; every
request stays on the server's loopback address; LLM-written run text shows as text. Plus the
server's refusals, over real HTTP."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sia_core.contracts.errors import SiaError
from sia_report.web import serve

from ..core.test_loop import write_script
from .test_report import HOSTILE, _chromium

SLOW = '''"""Adds the numbers after a pause, so a run lasts long enough to be watched."""
import re
import time


def solve(item, ctx):
    time.sleep(0.4)
    a, b = map(int, re.findall(r"\\d+", item["input"])[:2])
    return a + b
'''

SCRIPT = {
    "meta": {"scaffold": "reference"},
    "feedback": {
        "2": {"lever": "harness", "scaffold": "slow_scaffold.py", "rationale": "add, slowly"},
        "3": {"lever": "harness", "scaffold": "slow_scaffold.py", "rationale": HOSTILE},
        "4": {"lever": "stop", "rationale": "done"},
    },
    "task_model": {"name": "scripted-echo"},
}


def start_run(tmp_path: Path, runs: Path) -> subprocess.Popen[str]:
    script = write_script(tmp_path, SCRIPT)
    (script.parent / "slow_scaffold.py").write_text(SLOW)
    args = ["--task", "tiny-add", "--max_gen", "3", "--backend", "scripted", "--sandbox", "process"]
    args += ["--backend-opt", f"script={script}", "--runs-dir", str(runs), "--parallel", "1"]
    return subprocess.Popen(
        [sys.executable, "-m", "sia_core.surface.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SIA_REPORT": "0"},
    )


def test_a_run_in_progress_appears_and_updates_in_the_browser(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    runs.mkdir()
    server = serve(runs, port=0, refresh_s=1)
    requests: list[str] = []
    seen: list[tuple[str, str]] = []  # (status, generations) of run 1 at each page load
    errors: list[str] = []
    proc = None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=_chromium(), headless=True, args=["--no-sandbox"]
            )
            try:
                page = browser.new_page()
                page.on("request", lambda r: requests.append(r.url))
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(server.url, wait_until="load")
                assert "no runs in" in page.inner_text("body")

                def record() -> None:
                    row = page.query_selector("tr[data-run='1']")
                    if row is not None:
                        seen.append(
                            (
                                row.get_attribute("data-status") or "",
                                row.get_attribute("data-generations") or "",
                            )
                        )

                page.on("load", lambda _: record())
                proc = start_run(tmp_path, runs)
                # hang guard only: the run takes seconds; the page reloads every second
                page.wait_for_selector("tr[data-run='1'][data-status='finished']", timeout=600_000)
                record()
                page.click("tr[data-run='1'] a")
                page.wait_for_selector("body[data-run='1']", timeout=60_000)
                title = page.title()
                body = page.inner_text("body")
            finally:
                browser.close()
        assert proc.wait(timeout=600) == 0, proc.stdout.read() if proc.stdout else ""
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        server.shutdown()
        server.server_close()

    statuses = [s for s, _ in seen]
    assert statuses[0] == "running" and statuses[-1] == "finished", seen
    gens = [int(g) for _, g in seen]
    assert gens == sorted(gens) and gens[-1] == 3 and len(set(gens)) >= 2, seen  # it moved on
    assert all(url.startswith(server.url) for url in requests), requests
    assert errors == []
    assert title == "sia run 1 — tiny-add"  # the hostile rationale did not run
    assert '<script>document.title="owned"</script>' in body  # shown as text


def get(server_url: str, path: str, host: str | None = None) -> tuple[int, dict[str, str], str]:
    netloc = server_url.split("//")[1].rstrip("/")
    hostname, port = netloc.rsplit(":", 1)
    conn = http.client.HTTPConnection(hostname, int(port), timeout=60)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host or netloc)
    conn.endheaders()
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read().decode()
    conn.close()
    return out


def test_the_server_refuses_what_it_should(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / "run_1").mkdir(parents=True)
    (runs / "run_1" / "run.json").write_text(
        json.dumps({"status": "finished", "config": {"task": "<b>x</b>"}})
    )
    (tmp_path / "secret.html").write_text("SECRET")
    server = serve(runs, port=0)
    try:
        status, headers, page = get(server.url, "/")
        assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
        assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
        assert get(server.url, "/run/1")[0] == 200
        assert get(server.url, "/run/2")[0] == 404
        assert get(server.url, "/run/../secret.html")[0] == 404
        assert "SECRET" not in get(server.url, "/run/..%2Fsecret.html")[2]
        # a page elsewhere that rebinds its own name to 127.0.0.1 gets nothing
        assert get(server.url, "/", host="attacker.example:80")[0] == 403
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(SiaError, match="loopback only"):
        serve(runs, host="0.0.0.0")


def test_sia_web_command_is_listed_and_refuses_a_public_host(tmp_path: Path) -> None:
    sia = [sys.executable, "-m", "sia_core.surface.cli"]
    out = subprocess.run([*sia, "--help"], capture_output=True, text=True, timeout=60)
    assert "  web " in out.stdout
    out = subprocess.run(
        [*sia, "web", "--host", "0.0.0.0", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "loopback only" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_broken_run_is_a_row_and_a_page_never_a_hang_up(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / "run_2").mkdir(parents=True)
    (runs / "run_2" / "run.json").write_text(json.dumps({"run_id": "1", "status": "finished"}))
    (runs / "run_2" / "gen_1").mkdir()
    (runs / "run_2" / "gen_1" / "decision.json").write_text(json.dumps({"lever": 5, "notes": 5}))
    (runs / "run_2" / "cost.json").write_text("{not json")
    server = serve(runs, port=0)
    try:
        status, _, page = get(server.url, "/")
        assert status == 200 and "data-run='2'" in page
        assert "href='/run/1'" not in page  # the folder's id, not what run.json claims
        status, headers, page = get(server.url, "/run/2")
        assert status in (200, 500) and "Content-Security-Policy" in headers
        assert status == 200 or ('http-equiv="refresh"' in page and "could not show" in page)
    finally:
        server.shutdown()
        server.server_close()
