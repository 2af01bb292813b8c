"""One litellm call made to fit the model: the output cap, retries and the cut-off line.

- **Output cap.** An agent asks for up to ``max_output_tokens`` (16,000) per call. That is cut to
  what the model can give: litellm's ``max_output_tokens`` for a known model, else the context
  an OpenAI-compatible server reports (llama.cpp's ``/props`` ``n_ctx``, or the model's
  ``/models`` entry: vLLM's ``max_model_len``, ``context_length``, llama.cpp's ``meta``), less
  the prompt; and, once a call has been timed, to what the measured speed produces within
  ``timeout_s``. A slow local server then gets short calls that finish, not one that runs
  into the timeout.
- **Retries.** Rate limits, dropped connections and 5xx answers (a quick 504/408 included) are
  retried with backoff (``num_retries``); a call that ran into ``timeout_s`` is not: repeating
  it would cost the full timeout again. It fails at once with one line saying so.
- **Cut off.** A reply that stops at the cap is logged as one line naming the cap, why it is that
  size and the setting that raises it.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import tenacity

log = logging.getLogger("sia.backend.litellm")

#: part of ``timeout_s`` an output may fill at the measured speed (the rest: prompt, latency)
TIME_SHARE = 0.8
#: the least output cap derived from a model's context or speed
MIN_CAP = 256
#: seconds between retries of a retryable error: 1, 2, 4, ... (at most 30; tenacity's backoff)
BACKOFF_S = 1.0


def _json_get(url: str, timeout: float) -> Any:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read(1_000_000))


def server_context(api_base: str, model: str = "", timeout: float = 5.0) -> int | None:
    """The context length an OpenAI-compatible server at ``api_base`` reports for ``model``
    (its ``/models`` entry with that id, else the only entry), if it reports one.

    llama.cpp's ``/props`` ``n_ctx`` (the context the server runs with) is asked first; then
    ``/models``: vLLM's ``max_model_len``, ``context_length``, llama.cpp's ``meta.n_ctx`` and,
    last, ``meta.n_ctx_train`` (what the model was trained with, maybe more than is served).
    """
    base = api_base.rstrip("/")
    root = base[: -len("/v1")] if base.endswith("/v1") else base
    try:
        props = _json_get(root + "/props", timeout)
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
        if isinstance(n_ctx, int) and n_ctx > 0:
            return n_ctx
    except Exception:
        pass
    try:
        entries = [
            e
            for e in (_json_get(base + "/models", timeout).get("data") or [])
            if isinstance(e, dict)
        ]
    except Exception:
        return None
    name = model.split("/", 1)[-1]
    named = [e for e in entries if e.get("id") in (model, name)]
    entry = named[0] if named else (entries[0] if len(entries) == 1 else None)
    if entry is None:
        return None
    meta: dict[str, Any] = entry["meta"] if isinstance(entry.get("meta"), dict) else {}
    for value in (
        entry.get("max_model_len"),
        entry.get("context_length"),
        meta.get("n_ctx"),
        meta.get("n_ctx_train"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class CallFitter:
    """Fits one model's calls: its output cap (context and measured speed) and retries."""

    def __init__(
        self,
        litellm: Callable[[], Any],
        model: str,
        *,
        api_base: str | None,
        timeout_s: float,
        num_retries: int,
    ) -> None:
        self._litellm = litellm
        self.model = model
        self.api_base = api_base
        self.timeout_s = timeout_s
        self.num_retries = num_retries
        self._limits: tuple[int | None, int | None] | None = None  # (max output, context)
        #: output tokens per second of the slowest recent timed call
        self.speed: float | None = None
        self.last_cap: int | None = None
        self.last_reason = ""

    def model_limits(self) -> tuple[int | None, int | None]:
        """(max output tokens, context tokens) from litellm's table or the server, looked up once."""
        if self._limits is None:
            out: int | None = None
            ctx: int | None = None
            try:
                info = self._litellm().get_model_info(self.model)
                out = info.get("max_output_tokens") or None
                ctx = info.get("max_input_tokens") or info.get("max_tokens") or None
            except Exception:  # not in litellm's table: e.g. a model on a local server
                pass
            if ctx is None and self.api_base:
                ctx = server_context(self.api_base, self.model)
            if out is None and ctx is None:  # nothing known: ask again next call (server down?)
                return out, ctx
            self._limits = (out, ctx)
        return self._limits

    def cap(self, wanted: int, prompt_chars: int) -> int:
        """The output cap for a call whose prompt has ``prompt_chars`` characters."""
        cap, reason = wanted, "max_output_tokens"
        out, ctx = self.model_limits()
        if out is not None and out < cap:
            cap, reason = out, f"the model's max_output_tokens ({out})"
        if ctx is not None:
            room = max(ctx - prompt_chars // 3 - 16, MIN_CAP)  # ~3 characters a token, at worst
            if room < cap:
                cap, reason = room, f"the model's {ctx}-token context less the prompt"
        if self.speed is not None:
            timed = max(int(self.speed * self.timeout_s * TIME_SHARE), MIN_CAP)
            if timed < cap:
                cap = timed
                reason = f"{self.speed:.1f} tokens/s measured, within timeout_s={self.timeout_s:g}"
        self.last_cap, self.last_reason = cap, reason
        return cap

    def observe(self, output_tokens: int, seconds: float) -> None:
        """Record a finished call's speed (calls with few tokens say little about it)."""
        if output_tokens >= 32 and seconds > 0:
            speed = output_tokens / seconds
            self.speed = speed if self.speed is None else min(speed, (self.speed + speed) / 2)

    def complete(self, **kwargs: Any) -> Any:
        """``litellm.completion`` with our retries (tenacity): none after a real timeout."""
        litellm = self._litellm()
        kwargs.update(num_retries=0, timeout=self.timeout_s)
        retryable = (
            litellm.Timeout,  # only a quick one gets here: an upstream 504/408 litellm maps to it
            litellm.RateLimitError,
            litellm.APIConnectionError,
            litellm.ServiceUnavailableError,
            litellm.InternalServerError,
            litellm.BadGatewayError,
        )
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(retryable),
            wait=tenacity.wait_exponential(multiplier=BACKOFF_S, max=30.0),
            stop=tenacity.stop_after_attempt(self.num_retries + 1),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                started = time.monotonic()
                try:
                    response = litellm.completion(**kwargs)
                except litellm.Timeout as exc:
                    if time.monotonic() - started >= TIME_SHARE * self.timeout_s:
                        raise CallTimeout(
                            f"{self.model} did not answer within timeout_s={self.timeout_s:g} s "
                            "(not retried: a retry would wait as long again); raise it with "
                            "--backend-opt timeout_s=SECONDS or lower max_output_tokens"
                        ) from exc
                    raise
        usage = getattr(response, "usage", None)
        self.observe(int(getattr(usage, "completion_tokens", 0) or 0), time.monotonic() - started)
        return response

    def note_cut(self, finish_reason: str) -> None:
        """One line when a reply stopped at the cap."""
        if finish_reason == "length" and self.last_cap is not None:
            log.warning(
                "sia: litellm: a reply of %s was cut at %d output tokens (cap from %s); "
                "raise it with --backend-opt max_output_tokens=N or timeout_s=SECONDS",
                self.model,
                self.last_cap,
                self.last_reason,
            )


class CallTimeout(Exception):
    """A call that ran into ``timeout_s`` (never retried)."""
