"""Behavioural check (ours, not the paper's; DESIGN.md): how much each head matters for
continuing ordinal lists.

For prompts such as ``"Monday, Tuesday, Wednesday,"`` -> ``" Thursday"``, the drop in the
log-probability of the correct next item when one head is ablated (its ``z``, the input slice
of the attention output projection, replaced by its mean over the prompt positions, or by
zero). Positive drop = the head helps. This is a total effect (the ablation propagates).

When the tokenizer puts a BOS token first (:func:`prompts_carry_bos`), that position is neither
ablated nor part of the mean: it is the attention sink that later layers read, and ablating a
head there would move it too.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm

from .adapters import Adapter


@contextlib.contextmanager
def patch_head_z(adapter: Adapter, layer: int, head: int, value: torch.Tensor, start: int = 0):
    """Within the block, head ``head`` of ``layer`` outputs ``value [d_head]`` in place of its ``z``
    at positions ``start`` onwards (``start=1`` leaves a BOS position clean).

    Implemented as a forward pre-hook on the layer's output projection; the hook is removed
    on exit even when the forward pass raises.
    """
    dh = adapter.dims.d_head
    sl = slice(head * dh, (head + 1) * dh)

    def hook(_mod, args):
        z = args[0].clone()
        z[:, start:, sl] = value.to(z.dtype)
        return (z, *args[1:])

    handle = adapter.o_proj(layer).register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def prompts_carry_bos(tokenizer, prompts: list[dict]) -> bool:
    """True when the tokenizer puts its BOS token first in every prompt (then position 0 is
    left out of the ablation and the mean); False when it adds none (e.g. GPT-2's tokenizer).
    ``prompts`` as for :func:`behavioural_drops`."""
    bos = tokenizer.bos_token_id
    return bos is not None and all(tokenizer(p["prompt"])["input_ids"][:1] == [bos] for p in prompts)


def _group_by_length(tokenizer, prompts: list[dict]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    groups: dict[int, list] = defaultdict(list)
    for p in prompts:
        ids = tokenizer(p["prompt"])["input_ids"]
        groups[len(ids)].append((ids, p["target_id"]))
    return {n: (torch.tensor([g[0] for g in gs]), torch.tensor([g[1] for g in gs])) for n, gs in groups.items()}


@torch.no_grad()
def _target_logprobs(adapter: Adapter, groups, repeat: int = 1) -> torch.Tensor:
    """Log-prob of each prompt's target, ``[repeat, n_prompts]``; every group is run ``repeat``
    times in one batch (copy k is what a hook patches for head k)."""
    out = []
    for ids, tgt in groups.values():
        ids_rep = ids.repeat(repeat, 1).to(adapter.device)
        logits = adapter.model(input_ids=ids_rep, logits_to_keep=1).logits[:, -1].float()
        lp = logits.log_softmax(-1).gather(1, tgt.repeat(repeat).to(logits.device)[:, None])[:, 0]
        out.append(lp.reshape(repeat, -1).cpu())
    return torch.cat(out, 1)


@contextlib.contextmanager
def patch_each_head(adapter: Adapter, layer: int, values: torch.Tensor, heads=None, start: int = 0):
    """For a batch made of ``K`` stacked copies of the same prompts, copy k has head
    ``heads[k]`` of ``layer`` replaced by ``values[k] [d_head]`` (``values [K, d_head]``;
    ``heads`` default: every head, ``K = n_heads``) at positions ``start`` onwards
    (``start=1`` leaves a BOS position clean).

    One forward pass then ablates all those heads of the layer; the hook is removed on exit
    even when the forward pass raises. The batch must be ``K x n_prompts`` rows and ``values``
    must have ``K`` rows, or the forward pass raises RuntimeError (shape mismatch in the hook).
    Ours, not the paper's (DESIGN.md, Behavioural check).
    """
    n_heads, dh = adapter.dims.n_heads, adapter.dims.d_head
    heads = list(range(n_heads)) if heads is None else [int(h) for h in heads]
    k = len(heads)

    def hook(_mod, args):
        z = args[0].clone()
        z_KBPHD = z.view(k, -1, z.shape[-2], n_heads, dh)
        z_KBPHD[torch.arange(k, device=z.device), :, start:, torch.tensor(heads, device=z.device)] = \
            values.to(z.dtype)[:, None, None, :]
        return (z, *args[1:])

    handle = adapter.o_proj(layer).register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def mean_z(adapter: Adapter, groups, start: int = 0) -> torch.Tensor:
    """Mean ``z`` of every head over the prompt positions from ``start`` on (1: BOS left out):
    ``[n_layers, n_heads, d_head]`` float32. ``groups``: prompts grouped by length, as
    ``{length: (input_ids [n, length], target_ids [n])}``."""
    d = adapter.dims
    sums = torch.zeros(d.n_layers, d.n_heads * d.d_head)
    count = 0
    handles = []

    def make(layer):
        def hook(_mod, args):
            sums[layer] += args[0].detach()[:, start:].float().reshape(-1, args[0].shape[-1]).sum(0).cpu()
        return hook

    try:
        for layer in range(d.n_layers):
            handles.append(adapter.o_proj(layer).register_forward_pre_hook(make(layer)))
        for ids, _ in groups.values():
            adapter.model(input_ids=ids.to(adapter.device), logits_to_keep=1)
            count += ids[:, start:].numel()
    finally:
        for h in handles:
            h.remove()
    return (sums / count).reshape(d.n_layers, d.n_heads, d.d_head)


@torch.no_grad()
def behavioural_drops(
    adapter: Adapter, tokenizer, prompts: list[dict], ablation: str = "mean", progress: bool = False,
    heads=None,
) -> tuple[np.ndarray, float]:
    """Mean log-prob drop of the correct successor when each head is ablated.

    Args:
        prompts: dicts with ``prompt`` (str) and ``target_id`` (int), e.g. from
            :func:`successor_heads.tasks.ordinal_list_prompts`.
        ablation: ``"mean"`` (mean ``z`` over prompt positions, BOS left out) or ``"zero"``.
        heads: ``(layer, head)`` pairs to ablate; ``None`` ablates every head. The cost is one
            forward pass of ``K x n_prompts`` rows per layer holding K of them.

    Returns:
        ``(drops [n_layers, n_heads]`` in nats (NaN for heads not in ``heads``), ``baseline``
        mean log-prob of the target in nats).

    Raises:
        ValueError: no prompts, an unknown ablation, an empty ``heads`` or one out of range.
    """
    if not prompts:
        raise ValueError("no ordinal-list prompts: the tokenizer kept no list task with consecutive single tokens")
    if ablation not in ("mean", "zero"):
        raise ValueError(f"ablation={ablation!r}: must be mean or zero")
    groups = _group_by_length(tokenizer, prompts)
    start = int(prompts_carry_bos(tokenizer, prompts))
    base = _target_logprobs(adapter, groups)[0]
    d = adapter.dims
    means = mean_z(adapter, groups, start) if ablation == "mean" else torch.zeros(d.n_layers, d.n_heads, d.d_head)
    by_layer = _heads_by_layer(heads, d.n_layers, d.n_heads)
    drops = np.full((d.n_layers, d.n_heads), np.nan)
    for layer, hs in tqdm(by_layer.items(), desc="behavioural check (ablating each head)", disable=not progress):
        with patch_each_head(adapter, layer, means[layer, hs].to(adapter.device), hs, start):
            lp_KN = _target_logprobs(adapter, groups, repeat=len(hs))
        drops[layer, hs] = (base[None] - lp_KN).mean(1).numpy()
    return drops, float(base.mean())


def _heads_by_layer(heads, n_layers: int, n_heads: int) -> dict[int, list[int]]:
    if heads is None:
        return {layer: list(range(n_heads)) for layer in range(n_layers)}
    out: dict[int, set] = defaultdict(set)
    for layer, head in heads:
        if not (0 <= int(layer) < n_layers and 0 <= int(head) < n_heads):
            raise ValueError(f"head L{layer}H{head} is outside this model ({n_layers} layers x {n_heads} heads)")
        out[int(layer)].add(int(head))
    if not out:
        raise ValueError("heads=[]: give at least one (layer, head) or None for every head")
    return {layer: sorted(out[layer]) for layer in sorted(out)}
