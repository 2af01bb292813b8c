"""The run options of the CLI, made from :class:`~sia_core.contracts.config.RunConfig`'s fields.

A click option per setting (its flags, help, bounds and choices come from the field's
:class:`~sia_core.contracts.config.Flag`), plus the two that only say where a run lives
(``--run-id``, ``--runs-dir``); and the way back, from parsed options to config values.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import click

from sia_core.contracts.config import Flag, RunConfig, settings
from sia_core.contracts.errors import SiaError

DEFAULT_RUNS_DIR = "runs"


def option_for(field: attrs.Attribute[Any], flag: Flag) -> Callable[[Any], Any]:
    """The click option of one setting (its parameter is named like the field)."""
    kw: dict[str, Any] = {"help": flag.help or None, "default": flag.cli_default}
    kind = _scalar(field.name)
    if flag.pairs:
        kw.update(multiple=True, metavar=flag.metavar, default=())
    elif flag.choices:
        kw["type"] = click.Choice(list(flag.choices))
    elif kind is int:
        kw["type"] = int if flag.minimum is None else click.IntRange(int(flag.minimum))
    elif kind is float:
        kw["type"] = (
            float
            if flag.minimum is None
            else click.FloatRange(flag.minimum, min_open=flag.min_open)
        )
    elif field.name == "task_dir":
        kw["type"] = click.Path()
    kw["show_default"] = flag.cli_default is not None and not flag.pairs
    return click.option(*flag.names, field.name, **kw)


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(RunConfig)  # evaluated once, not per option


def _scalar(name: str) -> Any:
    """``int``, ``float`` or ``str`` for a field typed so (``X | None`` included)."""
    hint = _hints()[name]
    return next((t for t in (int, float, str) if t is hint or t in typing.get_args(hint)), None)


def run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command with every run setting, ``--run-id`` and ``--runs-dir``."""
    opts = [option_for(field, flag) for field, flag in settings()]
    opts += [
        click.option(
            "--run_id",
            "--run-id",
            "run_id",
            default=None,
            help="Run id; re-running with an existing id resumes it. Default: next free.",
        ),
        runs_dir_option(),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def cap_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command with the run caps (``sia resume`` may raise them)."""
    for field, flag in reversed(settings()):
        if flag.cap is not None:
            f = option_for(field, flag)(f)
    return f


def runs_dir_option() -> Callable[[Any], Any]:
    return click.option(
        "--runs-dir",
        "--runs_dir",
        "runs_dir",
        default=DEFAULT_RUNS_DIR,
        show_default=True,
        type=click.Path(file_okay=False),
    )


def given_settings(opts: Mapping[str, Any]) -> dict[str, Any]:
    """RunConfig values from parsed options: the ones given (or with a CLI default), ``KEY=VALUE``
    pairs gathered into dicts. An option left at ``None`` is absent (the field's default, or on a
    re-run the stored value, applies)."""
    out: dict[str, Any] = {}
    for field, flag in settings():
        value = opts.get(field.name)
        if flag.pairs:
            out[field.name] = parse_pairs(value or (), as_json=flag.json_values)
        elif value is not None:
            out[field.name] = value
    return out


def parse_pairs(pairs: tuple[str, ...], *, as_json: bool = False) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict; with ``as_json`` values parse as JSON where they do
    (numbers, bools), else stay strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SiaError(f"{pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
        if as_json:
            try:
                out[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                pass
    return out
