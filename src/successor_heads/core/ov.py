"""The OV read-out: a head's OV output read through the unembedding (the paper's effective OV
circuit ``W_U W_OV x``, Section 2), shared by the scores, features and editing stages."""

from __future__ import annotations

import torch

from successor_heads.core.adapters import Adapter


def value_bias_of(cfg) -> bool:
    """``scores.value_bias`` of a resolved config (full or stage view); False when the section
    or key is absent (configs written before the option existed: the paper's circuit)."""
    scores = cfg.get("scores") if hasattr(cfg, "get") else None
    return bool(scores.get("value_bias", False)) if scores is not None else False



@torch.no_grad()
def head_task_logits(adapter: Adapter, layer: int, head: int, x: torch.Tensor, token_ids,
                     norms: str = "raw", value_bias: bool = False) -> torch.Tensor:
    """The head's OV output read through the unembedding, restricted to ``token_ids``
    (the paper's effective OV circuit ``W_U W_V W_O x``, Section 2).

    ``x [n, d_model]`` (residual vectors the head attends to) -> ``[n, n_tokens]`` float32
    logits (CPU): ``unembed(ov(x))`` with ``norms`` as in :meth:`Adapter.ov` /
    :meth:`Adapter.unembed`, computed in float32 whatever the model's dtype. ``value_bias``
    adds ``b_V W_O`` (config ``scores.value_bias``; default False, the paper's circuit).
    Raises: ValueError for an unknown ``norms``; IndexError for a token id outside the vocabulary.
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long)
    # float32 in: Adapter.ov computes in float32, so a bf16 round trip would only lose precision
    out = adapter.ov(layer, x.to(adapter.device, torch.float32), norms, heads=torch.tensor([head]),
                     value_bias=value_bias)[0]
    return adapter.unembed(out, norms, token_ids=ids).float().cpu()
