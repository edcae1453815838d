"""Forward hooks that are always removed, and the mean ``z`` of every head that mean ablation
replaces a head's output with (the behavioural check of the scores stage and the paper's
direct-effect mean ablation, Section 4.3).

Every stage that patches or reads activations inside the model's forward pass goes through
:func:`hooks`: the handles are removed on exit, even when the forward pass (or registering a
later hook) raises, so a failed measurement never leaves a patched model behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from successor_heads.core.adapters import Adapter

#: Hook kinds of :func:`hooks`: before the module runs (sees its inputs) or after (sees its output).
KINDS = ("pre", "forward")


@contextlib.contextmanager
def hooks(*specs: tuple[nn.Module, str, Callable], with_kwargs: bool = False) -> Iterator[None]:
    """Within the block, each ``(module, kind, fn)`` of ``specs`` is a forward hook of ``module``.

    ``kind`` ``"pre"`` registers ``fn`` with ``register_forward_pre_hook`` (``fn(module, args)``,
    or ``fn(module, args, kwargs)`` with ``with_kwargs``), ``"forward"`` with
    ``register_forward_hook`` (``fn(module, args, output)``, or ``fn(module, args, kwargs,
    output)``). What ``fn`` returns replaces the inputs or output as torch defines it.

    Raises:
        ValueError: an unknown ``kind`` (nothing stays registered).
    """
    handles = []
    try:
        for module, kind, fn in specs:
            if kind not in KINDS:
                raise ValueError(f"hook kind {kind!r}: must be one of {KINDS}")
            register = module.register_forward_pre_hook if kind == "pre" else module.register_forward_hook
            handles.append(register(fn, with_kwargs=with_kwargs))
        yield
    finally:
        for handle in handles:
            handle.remove()


def first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The first input a module was called with: its first positional argument, else its first
    keyword argument (for pre-hooks registered ``with_kwargs``)."""
    return args[0] if args else next(iter(kwargs.values()))


@torch.no_grad()
def mean_z(adapter: Adapter, batches: Iterable[torch.Tensor], start: int = 0,
           accumulate: torch.dtype = torch.float64, progress: bool = False) -> torch.Tensor:
    """Mean ``z`` of every head over every position from ``start`` on of every batch: the value
    mean ablation puts in place of a head's ``z`` (the input slice of the attention output
    projection that belongs to the head). ``start=1`` leaves out a BOS position (the attention
    sink later layers read).

    Args:
        adapter: the model's :class:`~successor_heads.core.adapters.Adapter`.
        batches: ``input_ids [batch, pos]`` tensors, one forward pass each (through the base
            model: no unembedding).
        start: first position that counts.
        accumulate: dtype of the running sums (float64 for long corpora; the behavioural check
            sums in float32).
        progress: show a progress bar.

    Returns:
        ``[n_layers, n_heads, d_head]`` float32 on the CPU.
    """
    d = adapter.dims
    sums = torch.zeros(d.n_layers, d.n_heads * d.d_head, dtype=accumulate)
    count = 0

    def make(layer):
        def hook(_module, args, kwargs):
            z = first_input(args, kwargs).detach()[:, start:]
            sums[layer] += z.to(accumulate).reshape(-1, z.shape[-1]).sum(0).cpu()
        return hook

    with hooks(*[(adapter.o_proj(i), "pre", make(i)) for i in range(d.n_layers)], with_kwargs=True):
        for ids in tqdm(batches, desc="mean head outputs", disable=not progress):
            adapter.model.base_model(input_ids=ids.to(adapter.device), use_cache=False)
            count += ids[:, start:].numel()
    return (sums / max(count, 1)).reshape(d.n_layers, d.n_heads, d.d_head).float()


@contextlib.contextmanager
def contiguous_readout(adapter: Adapter) -> Iterator[None]:
    """Within the block, the unembedding receives a contiguous input when its weights are not
    float32 (ours). ``logits_to_keep`` hands it a slice of the residual stream (``[n, k,
    d_model]`` out of ``[n, pos, d_model]``), and torch's CPU linear map takes a slow path on a
    non-contiguous half-precision input: 6.8 s and 2.4 GB more for 5 rows through a bf16
    ``W_U [49152, 5120]``, against 0.04 s contiguous (torch 2.13; 7 GB in the behavioural check
    of a 13B model). Float32 is left as it is: its two paths round differently, and the default
    outputs are float32.
    """
    head = adapter.model.get_output_embeddings()
    if head is None or next(head.parameters()).dtype == torch.float32:
        yield
        return
    with hooks((head, "pre", lambda _mod, args: (args[0].contiguous(), *args[1:]))):
        yield
