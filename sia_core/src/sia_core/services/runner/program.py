"""Program-style scaffolds: one sandboxed ``python target_agent.py`` run over the whole task."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sia_core.contracts.sandbox import Sandbox
from sia_core.machinery.fs import describe_exit
from sia_core.services.runner.environment import _revoke, _scaffold_env
from sia_core.services.runner.spec import Gateway, ProgramResult, RunSpec
from sia_core.services.runner.watchdog import _WorkDirWatch
from sia_core.services.untrusted import OutputPump

__all__ = ["run_program"]


def run_program(spec: RunSpec, *, sandbox: Sandbox, gateway: Gateway | None) -> ProgramResult:
    """Run a program-style scaffold once, bounded by ``spec.limits.wall_s``.

    ``python target_agent.py --dataset_dir <public_dir> --working_dir <work_dir>`` with the
    work dir as cwd and HOME; stdout and stderr go through a pipe sia holds into
    ``<log dir>/program.log`` (head and tail kept, see :class:`RunSpec`), outside the work dir.
    """
    work_dir = Path(spec.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    scaffold = Path(spec.scaffold_path).resolve()
    public_dir = Path(spec.public_dir).resolve()
    log_path = spec.logs() / "program.log"
    token = gateway.new_token() if gateway is not None else ""
    argv = [
        sys.executable,
        "-u",
        str(scaffold),
        "--dataset_dir",
        str(public_dir),
        "--working_dir",
        str(work_dir),
    ]
    out_r, out_w = os.pipe()
    output = OutputPump(
        out_r, log_path, head_bytes=spec.log_head_bytes, tail_bytes=spec.log_tail_bytes
    )
    start = time.monotonic()
    try:
        proc = sandbox.spawn(
            argv,
            cwd=work_dir,
            env=_scaffold_env(spec, work_dir, gateway, token),
            limits=spec.limits,
            ro_paths=(scaffold.parent, public_dir, Path(sys.prefix), Path(sys.base_prefix)),
            rw_paths=(work_dir,),
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=subprocess.STDOUT,
        )
    except BaseException:
        os.close(out_w)
        output.close()
        raise
    os.close(out_w)
    watch = _WorkDirWatch(proc, work_dir, spec)
    try:
        rc = proc.wait(timeout=max(0.0, spec.limits.wall_s))
    finally:
        proc.kill_tree()  # leftovers too: after this nothing of the scaffold runs
        watch.stop()
        output.close()
        _revoke(gateway, token)
    seconds = time.monotonic() - start
    sizes: dict[str, Any] = {"output_bytes": output.total, "output_cut_bytes": output.cut}
    if watch.breach:
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        return ProgramResult(
            status="error",
            returncode=rc,
            seconds=seconds,
            error=watch.breach,
            log_path=log_path,
            **sizes,
        )
    if rc is None:
        return ProgramResult(
            status="timeout",
            returncode=None,
            seconds=seconds,
            error=f"timed out after {spec.limits.wall_s:g}s",
            log_path=log_path,
            **sizes,
        )
    if rc == 0:
        return ProgramResult(status="ok", returncode=0, seconds=seconds, log_path=log_path, **sizes)
    tail = output.tail()
    return ProgramResult(
        status="error",
        returncode=rc,
        seconds=seconds,
        error=f"{describe_exit(rc)}" + (f"; last output:\n{tail}" if tail else ""),
        log_path=log_path,
        **sizes,
    )
