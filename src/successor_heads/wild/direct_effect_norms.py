"""The norms of the direct-effect mean ablation (paper Section 4.3): the ``wild.final_norm``
option, and the LayerNorm/RMSNorm forms the exact and fast paths of
:mod:`successor_heads.wild.direct_effect` write a norm in (``P(x) * inv_sigma(x) * w + b``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from successor_heads.wild import FINAL_NORMS


def check_final_norm(final_norm: str) -> str:
    """Return ``final_norm`` when it is one of :data:`FINAL_NORMS`.

    Raises: ValueError naming the key ``wild.final_norm`` and the allowed values.
    """
    if final_norm not in FINAL_NORMS:
        raise ValueError(f"wild.final_norm={final_norm!r}: must be one of {', '.join(FINAL_NORMS)} "
                         "(frozen: final norm scale of the clean run, the paper's direct effect; "
                         "recomputed: final norm recomputed on the ablated residual)")
    return final_norm


def unsupported_final_norm(module: nn.Module, why: str = "is not a recognised LayerNorm/RMSNorm") -> str:
    """Why a final norm cannot be frozen, and what to set instead (the message of the ValueError)."""
    return (f"final norm {type(module).__name__} {why}: its scale cannot be frozen at the clean run "
            "(wild.final_norm=frozen); use wild.final_norm=recomputed")


def run_norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` as float32 on ``x``'s device, with ``x`` cast to the module's own dtype and
    device first (half-precision or multi-GPU models)."""
    p = next(module.parameters(), None)
    y = module(x.to(p.device, p.dtype)) if p is not None else module(x)
    return y.to(x.device, torch.float32)


@dataclass
class NormSpec:
    """A norm (the final one, or Gemma3's post-attention one) written as ``P(x) / sigma(x) * w
    + b`` (``P``: centring for LayerNorm); float32 tensors ``w``, ``b`` ``[d_model]``."""

    center: bool
    w: torch.Tensor
    b: torch.Tensor | None
    eps: float

    def P(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True) if self.center else x

    def inv_sigma(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rsqrt(self.P(x).pow(2).mean(-1, keepdim=True) + self.eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.P(x) * self.inv_sigma(x) * self.w
        return out + self.b if self.b is not None else out


#: LayerNorms that are not ``nn.LayerNorm`` (or change its weight): Cohere's (no bias), OLMo's
#: (no parameters, eps 1e-5) and Nemotron's (``1 + weight``); the direct effect checks each
#: against the module at run time.
_OTHER_LAYERNORMS = ("CohereLayerNorm", "OlmoLayerNorm", "NemotronLayerNorm1P")


def norm_spec(module: nn.Module, dev: torch.device) -> NormSpec | None:
    """Recognise ``nn.LayerNorm``-like modules (:data:`_OTHER_LAYERNORMS`: Cohere, OLMo, Nemotron's
    ``1 + weight``) and ``*RMSNorm`` modules (Gemma's ``1 + weight`` included) as a
    float32 :class:`NormSpec` on ``dev``; None for anything else (then the recomputed final norm
    takes the exact path through the module, and the frozen one is not available)."""
    name = type(module).__name__
    w = getattr(module, "weight", None)
    if isinstance(module, nn.LayerNorm) or name in _OTHER_LAYERNORMS:
        shape = getattr(module, "normalized_shape", None)
        d = w.shape[-1] if w is not None else (shape if isinstance(shape, int) else shape[-1])
        w = torch.ones(d) if w is None else (1.0 + w if name.endswith("1P") else w)
        bias = getattr(module, "bias", None)
        b = None if bias is None else bias.detach().to(dev, torch.float32)
        eps = getattr(module, "eps", getattr(module, "variance_epsilon", 1e-5))
        return NormSpec(True, w.detach().to(dev, torch.float32), b, float(eps))
    if "RMSNorm" in name and w is not None:
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        if eps is None:
            return None
        w = w.detach().to(dev, torch.float32)
        return NormSpec(False, 1.0 + w if "Gemma" in name else w, None, float(eps))
    return None
