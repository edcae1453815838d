"""Slow reference for the direct-effect mean ablation (paper Section 4.3): one full forward
pass per head, the head's direct path patched by a hook at the final norm, then the model's own
unembedding and soft-cap. Tests compare :mod:`successor_heads.wild.direct_effect` with it;
benchmarks/bench_wild.py times it.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from successor_heads.core.adapters import Adapter
from successor_heads.core.hooks import first_input, hooks
from successor_heads.wild.capture import capture
from successor_heads.wild.direct_effect_norms import check_final_norm, norm_spec, run_norm, unsupported_final_norm


@torch.no_grad()
def reference_per_head(adapter: Adapter, input_ids: torch.Tensor, mean_z_LHD: torch.Tensor,
                       heads: list[tuple[int, int]] | None = None, progress: bool = False,
                       final_norm: str = "frozen") -> np.ndarray:
    """Slow reference: one full forward pass per head, the head's direct path patched by a hook.

    For each head, its ``delta`` (module docstring; from a clean pass) enters at the final norm
    and the model's own unembedding and soft-cap give the logits. ``final_norm="recomputed"``:
    a pre-hook adds ``delta`` to the final norm's input (the model's norm recomputes its scale);
    ``"frozen"``: a forward hook adds ``P(delta) * inv_sigma(clean input) * w`` to the norm's
    clean output (scale of the clean run). ``input_ids [batch, pos]``; returns the per-token
    loss ``[len(heads), batch * (pos - 1)]`` in nats (batch-major, as
    :func:`corpus_direct_effects`). ``heads`` default: all.
    Raises: ValueError for an unknown ``final_norm`` or a frozen unrecognised final norm.
    """
    check_final_norm(final_norm)
    fnorm = adapter.final_norm()
    spec = norm_spec(fnorm, adapter.device) if final_norm == "frozen" else None
    if final_norm == "frozen" and spec is None:
        raise ValueError(unsupported_final_norm(fnorm))
    d = adapter.dims
    heads = heads or [(i, h) for i in range(d.n_layers) for h in range(d.n_heads)]
    cap = capture(adapter, input_ids)
    B, P = input_ids.shape
    z = cap.z.reshape(B, P, d.n_layers, d.n_heads, d.d_head)
    tgt = input_ids[:, 1:].to(adapter.device)
    out = np.zeros((len(heads), B * (P - 1)), dtype=np.float32)
    for i, (layer, h) in enumerate(tqdm(heads, desc="reference: one forward per head", disable=not progress)):
        W_O = adapter.W_O_layer(layer)[0][h].float()
        delta = (mean_z_LHD[layer, h].to(W_O.device) - z[:, :, layer, h].to(W_O.device)) @ W_O
        if cap.attn_out is not None:
            a = cap.attn_out.reshape(B, P, d.n_layers, -1)[:, :, layer].to(W_O.device)
            norm = adapter.attn_out_norm(layer)
            delta = run_norm(norm, a + delta) - run_norm(norm, a)

        def hook(_m, args, kwargs, delta=delta):
            if args:
                return (args[0] + delta.to(args[0].device, args[0].dtype), *args[1:]), kwargs
            key = next(iter(kwargs))
            return args, {**kwargs, key: kwargs[key] + delta.to(kwargs[key].device, kwargs[key].dtype)}

        def frozen_hook(_m, args, kwargs, out, delta=delta):
            x = first_input(args, kwargs).to(spec.w.device, torch.float32)
            add = spec.P(delta.to(x.device)) * spec.inv_sigma(x) * spec.w
            return out + add.to(out.device, out.dtype)

        with hooks((fnorm, "forward", frozen_hook) if spec is not None else (fnorm, "pre", hook), with_kwargs=True):
            logits = adapter.model(input_ids=input_ids.to(adapter.device), use_cache=False).logits.float()
        lp = logits[:, :-1].log_softmax(-1).gather(-1, tgt[..., None])[..., 0]
        out[i] = (-lp).reshape(-1).cpu().numpy()
    return out
