"""Batched sampling from the policy, keeping every sampled token's log-probability.

:func:`generate_records` runs one ``generate`` over a batch of prompts (left-padded) and returns
a :class:`~sia_train.rollout_records.CallRecord` per prompt: its completion ids (up to and
including the end-of-turn token, cut at a stop string) and their log-probabilities under exactly
softmax(logits / T), the policy that sampled them. Prompts that occur more than once in a batch
(the G rollouts of one item) are prefilled once (:func:`shared_prefill`).

torch is imported inside the functions; importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .model import cache_kwarg
from .rollout_records import CallRecord, call_key


@dataclass
class GenerationRequest:
    """One completion to generate: its prompt tokens, the messages it is keyed by, how to sample."""

    prompt_ids: list[int]
    key_messages: Any
    max_tokens: int
    temperature: float
    stop: list[str]


def generate_records(
    model: Any, tokenizer: Any, requests: Sequence[GenerationRequest], temperature: float
) -> list[CallRecord]:
    """One batched ``generate`` at ``temperature`` (0: greedy); a record per request, in order."""
    import torch

    tok = tokenizer
    pad = int(tok.pad_token_id)
    eos = tok.eos_token_id
    eos_ids = {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
    device = next(model.parameters()).device
    width = max(len(r.prompt_ids) for r in requests)
    input_ids = torch.tensor(
        [[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in requests], device=device
    )
    attention = torch.tensor(
        [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in requests],
        device=device,
    )
    sample = temperature > 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": max(r.max_tokens for r in requests),
        "do_sample": sample,
        "pad_token_id": pad,
        "eos_token_id": sorted(eos_ids) or None,
        "output_logits": True,
        "return_dict_in_generate": True,
    }
    if sample:  # exactly softmax(logits / T): the log-probabilities below are the policy's
        kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)
    model.eval()
    with torch.no_grad():
        cache = shared_prefill(model, input_ids, attention)
        if cache is not None:
            kwargs[cache_kwarg(model)] = cache
        out = model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        tokens = out.sequences[:, width:]
        logits = torch.stack(out.logits, dim=1).float()
        if sample:
            logits = logits / temperature
        logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    tokens_l, logp_l = tokens.tolist(), logp.tolist()
    records = []
    for i, request in enumerate(requests):
        ids, lps = tokens_l[i][: request.max_tokens], logp_l[i][: request.max_tokens]
        finish = "length"
        for j, t in enumerate(ids):
            if t in eos_ids:  # the end-of-turn token is the policy's choice too: trained
                ids, lps, finish = ids[: j + 1], lps[: j + 1], "stop"
                break
        text = tok.decode(ids, skip_special_tokens=True)
        if request.stop:
            ids, lps, text, stopped = apply_stop(tok, ids, lps, text, request.stop)
            finish = "stop" if stopped else finish
        records.append(
            CallRecord(
                key=call_key(request.key_messages, text),
                prompt_ids=request.prompt_ids,
                completion_ids=ids,
                old_logp=lps,
                text=text,
                finish_reason=finish,
            )
        )
    return records


def shared_prefill(model: Any, input_ids: Any, attention: Any) -> Any:
    """A KV cache of the prompts but their last token, each distinct prompt run once.

    The G rollouts of an item send the same prompt: its prefill is done once and the cache rows
    repeated (``generate`` then runs only the last prompt token and the new ones). ``None`` when
    no two prompts are the same (``generate`` prefills as usual).
    """
    import torch

    rows = [tuple(r) for r in input_ids.tolist()]
    owner: dict[tuple[int, ...], int] = {}
    for row in rows:
        owner.setdefault(row, len(owner))
    if len(owner) == len(rows) or input_ids.shape[1] < 2:
        return None
    first = [rows.index(row) for row in owner]
    ids, mask = input_ids[first, :-1], attention[first, :-1]
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
    )
    cache = getattr(out, "cache", None)
    cache = out.past_key_values if cache is None else cache
    cache.reorder_cache(torch.tensor([owner[row] for row in rows], device=input_ids.device))
    return cache


def apply_stop(
    tok: Any, ids: list[int], lps: list[float], text: str, stops: list[str]
) -> tuple[list[int], list[float], str, bool]:
    """Cut a completion at its first stop string: the text before it, the tokens up to it."""
    hits = [text.find(s) for s in stops if s and s in text]
    if not hits:
        return ids, lps, text, False
    cut = min(hits)
    for n in range(1, len(ids) + 1):
        if len(tok.decode(ids[:n], skip_special_tokens=True)) > cut:
            return ids[:n], lps[:n], text[:cut], True
    return ids, lps, text[:cut], True
