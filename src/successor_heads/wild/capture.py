"""The clean activations the direct-effect mean ablation starts from: each head's ``z`` (input of
the attention output projection), the residual stream entering the final norm and, for models
with a post-attention norm, the attention output, captured with hooks in one forward pass (paper
Section 4.3; the fast, exact and reference paths of :mod:`successor_heads.wild` all read them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from successor_heads.core import hooks
from successor_heads.core.adapters import Adapter
from successor_heads.core.streaming import streamed_of


@dataclass
class Capture:
    """Clean activations at the scored positions (``N`` of them), float32.

    ``z [N, n_layers, n_heads, d_head]``, ``resid [N, d_model]`` (input of the final norm),
    ``attn_out [N, n_layers, d_model]`` (output of the attention projection; only for models
    with a post-attention norm, else None).
    """

    z: torch.Tensor
    resid: torch.Tensor
    attn_out: torch.Tensor | None


def compute_device(adapter: Adapter) -> torch.device:
    """Where the direct-effect arithmetic runs: the unembedding's device (a streamed model's:
    where its weights are loaded)."""
    stream = streamed_of(adapter.model)
    return stream.device if stream is not None else adapter.model.get_output_embeddings().weight.device


@torch.no_grad()
def capture(adapter: Adapter, input_ids: torch.Tensor, select: torch.Tensor | None = None) -> Capture:
    """One forward pass of ``input_ids [batch, pos]`` (through the base model: no unembedding),
    keeping the activations of :class:`Capture` at positions ``select [batch, pos]`` (bool;
    None = all), flattened batch-major to ``N`` rows. Source: module docstring.
    """
    d, dev = adapter.dims, compute_device(adapter)
    post = adapter.attn_out_norm(0) is not None
    got: dict[str, list] = {"z": [None] * d.n_layers, "a": [None] * d.n_layers, "resid": []}

    def pick(x):
        x = x.detach()
        x = x[select.to(x.device)] if select is not None else x.reshape(-1, x.shape[-1])
        return x.to(dev, torch.float32)

    def z_hook(layer):
        return lambda _m, args, kwargs: got["z"].__setitem__(layer, pick(hooks.first_input(args, kwargs)))

    def a_hook(layer):
        return lambda _m, args, kwargs, out: got["a"].__setitem__(layer, pick(out[0] if isinstance(out, tuple) else out))

    pairs = [(adapter.o_proj(i), "pre", z_hook(i)) for i in range(d.n_layers)]
    if post:
        pairs += [(adapter.o_proj(i), "forward", a_hook(i)) for i in range(d.n_layers)]
    pairs.append((adapter.final_norm(), "pre",
                  lambda _m, args, kwargs: got["resid"].append(pick(hooks.first_input(args, kwargs)))))
    base = adapter.model.base_model
    with hooks.hooks(*pairs, with_kwargs=True):
        base(input_ids=input_ids.to(adapter.device), use_cache=False)
    z = torch.stack(got["z"], 1).reshape(-1, d.n_layers, d.n_heads, d.d_head)
    return Capture(z, got["resid"][-1], torch.stack(got["a"], 1) if post else None)


def concat_captures(caps: list[Capture], order: torch.Tensor | None = None) -> Capture:
    """One :class:`Capture` of the positions of ``caps`` in turn, rows permuted by ``order`` [N]
    (None: as they come)."""
    def cat(ts):
        t = torch.cat(ts) if len(ts) > 1 else ts[0]
        return t if order is None else t[order]

    return Capture(cat([c.z for c in caps]), cat([c.resid for c in caps]),
                   None if caps[0].attn_out is None else cat([c.attn_out for c in caps]))
