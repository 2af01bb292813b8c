"""``sia web``: a live page over every run of a runs folder, served on loopback.

``/`` lists the runs (status, generations, levers, best dev score, sealed test of the incumbent,
cost, tokens, time); ``/run/ID`` is that run's report (scores, lever timeline, lineage, training
curves, cost, improvement.md and diffs), rendered from the run folder at each request. Both pages
reload themselves every ``--refresh`` seconds, so a run in progress moves on screen.

What the server trusts: nothing from the run folder (all run text is escaped, as in the report)
and nothing from the request. It binds loopback only; a request whose ``Host`` is not this
server's loopback address is refused (a web page elsewhere cannot reach it through DNS
rebinding); a run is looked up among the folder's runs, never by joining the URL to a path. Every
answer carries a Content-Security-Policy that allows no fetch at all, so the pages cannot make
the browser contact anything, this server included, except by reloading themselves.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click

from sia_core.contracts.errors import SiaError
from sia_core.machinery.runstore import list_runs

from .data import RunInfo, read_run
from .html import CSS, render
from .markup import fmt_duration, fmt_float, fmt_int, fmt_usd, fmt_utc, lever_badge, status_badge

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; "
    "frame-ancestors 'none'"
)
RUN_PATH = re.compile(r"^/run/([A-Za-z0-9_.-]{1,100})/?$")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def index_page(runs_dir: Path, refresh_s: int) -> str:
    """Every run of ``runs_dir``, newest first, each linking to its page."""
    rows = []
    for run_id in reversed(list_runs(runs_dir)):
        try:
            rows.append(_run_row(run_id, read_run(runs_dir / f"run_{run_id}")))
        except Exception as exc:  # an unreadable run is a row, never a broken page
            rows.append(
                f"<tr data-run='{escape(run_id)}'><td>{escape(run_id)}</td>"
                f"<td colspan='8'>unreadable: {escape(type(exc).__name__)}: {escape(str(exc))}</td></tr>"
            )
    body = (
        "<table class='runs'><thead><tr><th>run</th><th>task</th><th>status</th>"
        "<th>generations</th><th>levers</th><th>best dev</th><th>sealed test</th>"
        "<th>cost</th><th>tokens</th><th>time</th><th>last event</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else f"<p class='empty'>no runs in {escape(str(runs_dir))} yet; this page reloads every "
        f"{refresh_s} s</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh_s}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sia runs — {escape(str(runs_dir))}</title><style>
{CSS}</style></head>
<body data-runs="{len(rows)}">
<h1>sia runs</h1>
<p class="small">{escape(str(runs_dir.resolve()))} · {fmt_utc(time.time())} · reloads every
{refresh_s} s. Sealed test scores are shown, never read by a decision.</p>
{body}
</body></html>
"""


def _run_row(run_id: str, run: RunInfo) -> str:
    """One run's row; ``run_id`` is the folder's id (the page's URL), whatever run.json says."""
    done = [g for g in run.gens if g.dev is not None]
    best = next((g for g in run.gens if g.gen == run.incumbent), None)
    levers = "".join(lever_badge(g.lever) for g in run.gens)
    cost = run.cost or {}
    seconds = sum(g.seconds for g in run.gens)
    href = f"/run/{escape(run_id)}"
    return (
        f"<tr data-run='{escape(run_id)}' data-status='{escape(run.status)}' "
        f"data-generations='{len(done)}'>"
        f"<td><a href='{href}'>{escape(run_id)}</a></td>"
        f"<td>{escape(str(run.task or '?'))}</td><td>{status_badge(run.status)}</td>"
        f"<td class='num'>{len(done)}/{escape(str(run.config.get('max_gen', '?')))}</td>"
        f"<td>{levers}</td>"
        f"<td class='num'>{fmt_float(best.dev) if best else '–'}"
        f"{f' (gen {best.gen})' if best else ''}</td>"
        f"<td class='num'>{fmt_float(best.test) if best else '–'}</td>"
        f"<td class='num'>{fmt_usd(cost.get('cost_usd'))}</td>"
        f"<td class='num'>{fmt_int(cost.get('tokens'))}</td>"
        f"<td class='num'>{fmt_duration(seconds)}</td>"
        f"<td>{fmt_utc(run.last_event or run.updated)}</td></tr>"
    )


class WebServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, runs_dir: Path, host: str, port: int, refresh_s: int) -> None:
        self.runs_dir = runs_dir
        self.refresh_s = refresh_s
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: WebServer
    server_version = "sia-web"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the terminal shows the URL, not every reload."""

    def do_GET(self) -> None:
        host, port = str(self.server.server_address[0]), self.server.server_address[1]
        allowed = {f"{host}:{port}", f"localhost:{port}", f"[{host}]:{port}"}
        if self.headers.get("Host", "") not in allowed:
            self._send(403, "<p>sia web answers only to its own loopback address</p>")
            return
        path = self.path.split("?", 1)[0]
        runs_dir, refresh = self.server.runs_dir, self.server.refresh_s
        try:
            if path == "/":
                self._send(200, index_page(runs_dir, refresh))
                return
            match = RUN_PATH.match(path)
            if match and match.group(1) in list_runs(runs_dir):
                run = read_run(runs_dir / f"run_{match.group(1)}")
                self._send(200, render(run, refresh_s=refresh, index_href="/"))
                return
        except Exception as exc:  # run files are untrusted: a bad one is a page, not a hang-up
            page = (
                f'<meta http-equiv="refresh" content="{refresh}"><p>could not show {escape(path)}:'
                f" {escape(type(exc).__name__)}: {escape(str(exc))}</p><p><a href='/'>every run</a></p>"
            )
            self._send(500, page)
            return
        self._send(404, f"<p>no such page; <a href='/'>every run</a></p><p>{escape(path)}</p>")

    def _send(self, status: int, page: str) -> None:
        data = page.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


def serve(
    runs_dir: Path, *, host: str = "127.0.0.1", port: int = 0, refresh_s: int = 3
) -> WebServer:
    """Start serving ``runs_dir`` in a background thread; ``server.shutdown()`` stops it."""
    if not is_loopback(host):
        raise SiaError(f"sia web serves on loopback only; got --host {host} (use 127.0.0.1 or ::1)")
    server = WebServer(runs_dir, host, port, max(1, int(refresh_s)))
    bound = str(server.server_address[0])
    if not is_loopback(bound):  # e.g. a "localhost" that resolves elsewhere
        server.server_close()
        raise SiaError(f"sia web: {host} resolved to {bound}, not loopback")
    threading.Thread(target=server.serve_forever, name="sia-web", daemon=True).start()
    return server


@click.command("web")
@click.option("--runs-dir", "--runs_dir", "runs_dir", default="runs", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="A loopback address.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="0: any free port.",
)
@click.option(
    "--refresh",
    "refresh_s",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Seconds between reloads.",
)
def web_cmd(runs_dir: str, host: str, port: int, refresh_s: int) -> None:
    """A live page over every run of the runs folder, on loopback (Ctrl-C stops it)."""
    try:
        server = serve(Path(runs_dir), host=host, port=port, refresh_s=refresh_s)
    except OSError as exc:
        raise SiaError(
            f"sia web could not listen on {host}:{port}: {exc.strerror or exc}; try --port 0"
        ) from None
    click.echo(
        f"sia web: {server.url} (runs in {Path(runs_dir).resolve()}; Ctrl-C stops)", err=True
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
