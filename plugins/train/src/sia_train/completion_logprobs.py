"""Forward passes giving the log-probabilities of model calls' completion tokens.

:func:`completion_forward` runs each call (a :class:`~sia_train.rollout_records.CallRecord`:
prompt ids + completion ids) through the model under training and returns the log-probability
of every completion token at the sampling temperature, with the hidden states that predicted it
(the value head's input). Calls that share a prompt run it once.

torch is imported inside the functions; importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .model import cache_kwarg


def completion_forward(
    model: Any, calls: Sequence[Any], temperature: float, pad: int, device: Any
) -> tuple[Any, Any]:
    """``(logp [calls, C], hidden [calls, C, H])`` of each call's completion tokens.

    Prompts are left-padded to one width P and completions right-padded to C, so the states
    that predict completion token j sit at position P - 1 + j in every row; only those go
    through the LM head. Calls that share a prompt (the G rollouts of one item) run it once:
    see :func:`_shared_prompt_forward`.
    """
    owner: dict[tuple[int, ...], int] = {}
    for c in calls:
        owner.setdefault(tuple(c.prompt_ids), len(owner))
    if len(owner) < len(calls):
        return _shared_prompt_forward(model, calls, owner, temperature, pad, device)
    return _plain_forward(model, calls, temperature, pad, device)


def _plain_forward(
    model: Any, calls: Sequence[Any], temperature: float, pad: int, device: Any
) -> tuple[Any, Any]:
    """:func:`completion_forward` with one full prompt + completion sequence per call."""
    import torch

    width = max(len(c.prompt_ids) for c in calls)
    span = max(len(c.completion_ids) for c in calls)
    ids, attention = [], []
    for c in calls:
        left, right = width - len(c.prompt_ids), span - len(c.completion_ids)
        ids.append([pad] * left + c.prompt_ids + c.completion_ids + [pad] * right)
        attention.append(
            [0] * left + [1] * (len(c.prompt_ids) + len(c.completion_ids)) + [0] * right
        )
    input_ids = torch.tensor(ids, device=device)
    mask = torch.tensor(attention, device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = base.get_decoder()(input_ids=input_ids, attention_mask=mask, position_ids=positions)
    hidden = out.last_hidden_state[:, width - 1 : width - 1 + span]
    logits = base.get_output_embeddings()(hidden).float() / temperature
    targets = input_ids[:, width : width + span]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp, hidden


def _shared_prompt_forward(
    model: Any,
    calls: Sequence[Any],
    owner: dict[tuple[int, ...], int],
    temperature: float,
    pad: int,
    device: Any,
) -> tuple[Any, Any]:
    """:func:`completion_forward` running each distinct prompt once.

    The distinct prompts (left-padded to P) go through the decoder with a KV cache; the cache
    rows are repeated for the calls that share them (``index_select``: gradients flow back into
    the one prompt pass) and the completions (right-padded, minus their last token, which
    predicts nothing) run on top of it at positions ``len(prompt) + j``. Same log-probabilities
    as the plain pass, for about 1/G of the prompt compute when completions are short.
    """
    import torch

    prompts = list(owner)
    width = max(len(p) for p in prompts)
    span = max(len(c.completion_ids) for c in calls)
    p_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
    p_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    first = decoder(
        input_ids=p_ids,
        attention_mask=p_mask,
        position_ids=(p_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
    )
    index = torch.tensor([owner[tuple(c.prompt_ids)] for c in calls], device=device)
    targets = torch.tensor(
        [list(c.completion_ids) + [pad] * (span - len(c.completion_ids)) for c in calls],
        device=device,
    )
    hidden = first.last_hidden_state[index, -1:]
    if span > 1:
        cache = getattr(first, "cache", None)
        cache = first.past_key_values if cache is None else cache
        cache.reorder_cache(index)
        c_mask = (
            torch.arange(span - 1, device=device)[None, :]
            < torch.tensor([len(c.completion_ids) for c in calls], device=device)[:, None]
        ).long()
        lengths = p_mask.sum(-1)[index]
        rest = decoder(
            input_ids=targets[:, : span - 1],
            attention_mask=torch.cat([p_mask[index], c_mask], dim=1),
            position_ids=lengths[:, None] + torch.arange(span - 1, device=device)[None, :],
            **{cache_kwarg(decoder): cache},
            cache_position=torch.arange(width, width + span - 1, device=device),
            use_cache=True,
        )
        hidden = torch.cat([hidden, rest.last_hidden_state], dim=1)
    logits = base.get_output_embeddings()(hidden).float() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp, hidden
