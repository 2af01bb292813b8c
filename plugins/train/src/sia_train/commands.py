"""``sia models``: the ``sia.commands`` entry point ``models`` (imported only when it runs).

Lists the base-model profiles (:mod:`sia_train.profiles`): what a LoRA update of each needs,
its LoRA targets, how it is served, and whether this machine has what it needs.
"""

from __future__ import annotations

import json

import click

from sia_core.contracts.errors import SiaError


@click.command("models")
@click.option(
    "--check", "check", metavar="NAME", help="Exit 1 with one line if NAME cannot train here."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_cmd(check: str | None, as_json: bool) -> None:
    """List the base-model profiles for GPU training and whether this machine can train each."""
    from .profiles import PROFILES, machine_problem, profile_for, visible_gpus

    gpus = visible_gpus()
    if check:
        profile = profile_for(check)
        if profile is None:
            names = ", ".join(p.name for p in PROFILES)
            raise SiaError(f"no model profile {check!r} (known: {names})")
        problem = machine_problem(profile, gpus)
        if problem:
            click.echo(f"sia: {problem}", err=True)
            raise SystemExit(1)
        click.echo(f"{profile.name}: this machine can train it")
        return
    rows = [
        {
            "name": p.name,
            "hub_id": p.hub_id,
            "params_b": p.params_b,
            "gpus": p.gpus,
            "gpu_memory_gb": p.gpu_memory_gb,
            "lora_targets": p.lora_targets,
            "parallel": p.parallel,
            "serving": p.serving,
            "train_settings": p.train_settings(),
            "here": machine_problem(p, gpus) or "ok",
        }
        for p in PROFILES
    ]
    if as_json:
        click.echo(json.dumps({"gpus": gpus, "profiles": rows}, indent=2))
        return
    seen = ", ".join(f"{n} ({gb} GB)" for n, gb in gpus) or "no CUDA GPU"
    click.echo(f"this machine: {seen}")
    for p, r in zip(PROFILES, rows, strict=True):
        targets = p.lora_targets if isinstance(p.lora_targets, str) else ",".join(p.lora_targets)
        click.echo(
            f"{p.name:<14} {p.hub_id:<22} {p.params_b:>6.1f}B  "
            f"{p.gpus} x {p.gpu_memory_gb} GB  LoRA {targets}  "
            f"{'ok here' if r['here'] == 'ok' else 'not here'}"
        )
        click.echo(f"{'':14} serve: {p.serving}")
