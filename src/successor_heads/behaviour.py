"""Behavioural check (ours, not the paper's; DESIGN.md): how much each head matters for
continuing ordinal lists.

For prompts such as ``"Monday, Tuesday, Wednesday,"`` -> ``" Thursday"``, the drop in the
log-probability of the correct next item when one head is ablated (its ``z``, the input slice
of the attention output projection, replaced by its mean over all prompt positions, or by
zero). Positive drop = the head helps. This is a total effect (the ablation propagates).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm

from .adapters import Adapter


@contextlib.contextmanager
def patch_head_z(adapter: Adapter, layer: int, head: int, value: torch.Tensor):
    """Within the block, head ``head`` of ``layer`` outputs ``value [d_head]`` in place of its ``z``.

    Implemented as a forward pre-hook on the layer's output projection; the hook is removed
    on exit even when the forward pass raises.
    """
    dh = adapter.dims.d_head
    sl = slice(head * dh, (head + 1) * dh)

    def hook(_mod, args):
        z = args[0].clone()
        z[..., sl] = value.to(z.dtype)
        return (z, *args[1:])

    handle = adapter.o_proj(layer).register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


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
def patch_each_head(adapter: Adapter, layer: int, values: torch.Tensor):
    """For a batch made of ``n_heads`` stacked copies of the same prompts, copy k has head k
    of ``layer`` replaced by ``values[k] [d_head]`` (``values [n_heads, d_head]``).

    One forward pass then ablates every head of the layer; the hook is removed on exit even
    when the forward pass raises.
    """
    n_heads, dh = adapter.dims.n_heads, adapter.dims.d_head

    def hook(_mod, args):
        z = args[0].clone()
        z_KBPHD = z.view(n_heads, -1, z.shape[-2], n_heads, dh)
        idx = torch.arange(n_heads, device=z.device)
        z_KBPHD[idx, :, :, idx] = values.to(z.dtype)[:, None, None, :]
        return (z, *args[1:])

    handle = adapter.o_proj(layer).register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def mean_z(adapter: Adapter, groups) -> torch.Tensor:
    """Mean ``z`` of every head over all prompt positions: ``[n_layers, n_heads, d_head]``."""
    d = adapter.dims
    sums = torch.zeros(d.n_layers, d.n_heads * d.d_head)
    count = 0
    handles = []

    def make(layer):
        def hook(_mod, args):
            sums[layer] += args[0].detach().float().reshape(-1, args[0].shape[-1]).sum(0).cpu()
        return hook

    try:
        for layer in range(d.n_layers):
            handles.append(adapter.o_proj(layer).register_forward_pre_hook(make(layer)))
        for ids, _ in groups.values():
            adapter.model(input_ids=ids.to(adapter.device), logits_to_keep=1)
            count += ids.numel()
    finally:
        for h in handles:
            h.remove()
    return (sums / count).reshape(d.n_layers, d.n_heads, d.d_head)


@torch.no_grad()
def behavioural_drops(
    adapter: Adapter, tokenizer, prompts: list[dict], ablation: str = "mean", progress: bool = False
) -> tuple[np.ndarray, float]:
    """Mean log-prob drop of the correct successor when each head is ablated.

    Args:
        prompts: dicts with ``prompt`` (str) and ``target_id`` (int), e.g. from
            :func:`successor_heads.tasks.ordinal_list_prompts`.
        ablation: ``"mean"`` (mean ``z`` over prompt positions) or ``"zero"``.

    Returns:
        ``(drops [n_layers, n_heads]`` in nats, ``baseline`` mean log-prob of the target in nats).

    Raises:
        ValueError: no prompts, or an unknown ablation.
    """
    if not prompts:
        raise ValueError("no ordinal-list prompts: the tokenizer kept no list task with consecutive single tokens")
    if ablation not in ("mean", "zero"):
        raise ValueError(f"ablation={ablation!r}: must be mean or zero")
    groups = _group_by_length(tokenizer, prompts)
    base = _target_logprobs(adapter, groups)[0]
    d = adapter.dims
    means = mean_z(adapter, groups) if ablation == "mean" else torch.zeros(d.n_layers, d.n_heads, d.d_head)
    drops = np.zeros((d.n_layers, d.n_heads))
    for layer in tqdm(range(d.n_layers), desc="behavioural check (ablating each head)", disable=not progress):
        with patch_each_head(adapter, layer, means[layer].to(adapter.device)):
            lp_HN = _target_logprobs(adapter, groups, repeat=d.n_heads)
        drops[layer] = (base[None] - lp_HN).mean(1).numpy()
    return drops, float(base.mean())
