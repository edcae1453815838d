"""Weights and modules of every supported model family under one set of names (docs/DESIGN.md,
Architecture facts): a family is a declared :class:`FamilySpec` in :data:`FAMILIES`, read by the
one generic :class:`Adapter`; :func:`get_adapter` picks the spec from ``model.config.model_type``."""

from __future__ import annotations

from .adapter import NORM_OPTIONS, Adapter, Dims
from .families import FAMILIES, MODEL_TYPES
from .resolve import family_of, is_moe
from .spec import FamilySpec


def get_adapter(model) -> Adapter:
    """Wrap a transformers causal LM in the adapter for its family.

    Args:
        model: a transformers causal LM whose ``config.model_type`` is in :data:`MODEL_TYPES`.

    Returns:
        The model's :class:`Adapter`.

    Raises:
        ValueError: a mixture-of-experts model of an undeclared family, a model without attention
            heads, a hybrid, multi-head latent attention (DeepSeek-V2/V3), a model type with no
            adapter (the message lists the supported ones), or a checkpoint its family turns
            down (e.g. OPT-350m's post-norms; the message says why). See docs/DESIGN.md,
            "Architecture facts".
    """
    return Adapter(model, family_of(getattr(model.config, "model_type", None), model.config))


__all__ = ["Adapter", "Dims", "FAMILIES", "FamilySpec", "MODEL_TYPES", "NORM_OPTIONS", "family_of", "get_adapter",
           "is_moe"]
