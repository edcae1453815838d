"""Which declared family a transformers ``model_type`` is, or why it is refused (docs/DESIGN.md,
"Architecture facts"): models without attention heads, hybrids whose attention has no per-head OV
circuit, multi-head latent attention, undeclared mixtures of experts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .families import FAMILIES, MODEL_TYPES
from .spec import FamilySpec

#: Config attributes that give a mixture-of-experts model's expert count.
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
#: Mixture-of-experts model types whose name does not say "moe".
_MOE_TYPES = ("mixtral", "deepseek_v2", "deepseek_v3", "dbrx", "jamba", "arctic", "jetmoe", "phimoe")


#: Model types with no attention heads at all (state-space and recurrent models).
NO_ATTENTION = ("mamba", "mamba2", "falcon_mamba", "rwkv", "rwkv7", "xlstm")
#: Hybrids: attention layers mixed with state-space, linear-attention or recurrent layers.
HYBRIDS = ("jamba", "zamba", "zamba2", "bamba", "falcon_h1", "nemotron_h", "granitemoehybrid", "qwen3_next",
           "qwen3_5", "qwen3_5_moe", "lfm2", "lfm2_moe", "olmo_hybrid", "recurrent_gemma", "kimi_linear",
           "bailing_hybrid")


#: Families transformers ships that are refused for a reason of their own.
_REFUSED = {
    mt: f"model_type={mt!r} uses multi-head latent attention: each head's values come from a shared "
        "compressed latent through an RMSNorm (kv_a_proj, kv_a_layernorm, kv_b_proj), so a head's OV "
        "circuit is not one matrix W_V W_O of the residual stream and its successor score is not defined"
    for mt in ("deepseek_v2", "deepseek_v3", "deepseek_v32", "kimi_k25", "glm4_moe_lite", "minicpm3", "sarvam_mla")
}
_REFUSED["jetmoe"] = ("model_type='jetmoe' has a mixture of attention experts (MoA): which query and "
                      "output projections (W_O) a head uses is picked by a router per token, so a head has "
                      "no fixed OV circuit")


#: Hybrids whose attention layers themselves have no per-head OV circuit, and why (the other
#: hybrids' attention layers are ordinary softmax attention: those declared in :data:`FAMILIES`
#: (LFM2, Jamba) are scored on their attention layers only; the rest are not declared yet).
_HYBRID_ATTENTION = {
    **{mt: "its full-attention layers multiply each head's output by sigmoid(x W_gate) (the second half of "
           "q_proj), so a head's output is not linear in its values and it has no OV circuit"
       for mt in ("qwen3_next", "qwen3_5", "qwen3_5_moe")},
    **{mt: "its attention is one transformer block shared by several depths, reading the residual stream "
           "concatenated with the token embeddings and added back through a linear layer, so no head has "
           "the W_V, W_O of one layer"
       for mt in ("zamba", "zamba2")},
}


def _no_heads(model_type: str | None) -> str | None:
    """Why a model without (only) attention heads is refused, or None."""
    if model_type in NO_ATTENTION:
        return (f"model_type={model_type!r} has no attention heads (a state-space or recurrent model): "
                "a successor head is an attention head, so there is nothing to score")
    if model_type in HYBRIDS and model_type not in MODEL_TYPES:
        why = _HYBRID_ATTENTION.get(model_type, "its attention layers are ordinary attention, but this family is not "
                                                "declared yet (declared hybrids: lfm2, jamba)")
        return (f"model_type={model_type!r} is a hybrid whose layers are not all attention layers "
                f"(state-space, linear-attention or recurrent layers): {why}")
    return None


def is_moe(model_type: str | None, config: Any = None) -> bool:
    """Whether a model is a mixture of experts: its ``model_type`` names one (``mixtral``,
    ``qwen2_moe``, ``olmoe``, ``deepseek_v3``, ...) or its config sets an expert count."""
    mt = (model_type or "").lower()
    if "moe" in mt or mt.startswith(_MOE_TYPES):
        return True
    return any((getattr(config, k, None) or 0) > 1 for k in _EXPERT_KEYS) if config is not None else False


def family_of(model_type: str | None, config: Any = None) -> FamilySpec:
    """The :class:`FamilySpec` covering a transformers ``config.model_type``.

    Args:
        model_type: ``model.config.model_type`` (None when the config has none).
        config: the transformers config, when at hand: an expert count in it marks a
            mixture-of-experts model, and the family's ``refuse`` check reads it.

    Returns:
        The family's spec from :data:`FAMILIES`.

    Raises:
        ValueError: a model without attention heads (Mamba, RWKV) or a hybrid whose layers are
            not all attention (the message says which); a
            mixture-of-experts model (not supported: the message says so); a
            ``model_type`` no family covers (the message lists the supported ones); a checkpoint
            its family's ``refuse`` check turns down (the message says why).
    """
    why = _no_heads(model_type) or _REFUSED.get(model_type or "")
    if why:
        raise ValueError(why)
    declared = MODEL_TYPES.get(model_type)
    if (declared is None or declared.moe_router is None) and is_moe(model_type, config):
        raise ValueError(
            f"model_type={model_type!r} is a mixture-of-experts model this project does not declare: "
            f"MoE models of this family are not supported. Supported mixture-of-experts families: "
            f"{', '.join(sorted(s.name for s in FAMILIES.values() if s.moe_router))}; supported model types: "
            f"{', '.join(sorted(MODEL_TYPES))}"
        )
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"no adapter for model_type={model_type!r}; supported: {', '.join(sorted(MODEL_TYPES))}. "
            "Declare its family in successor_heads/core/adapters/families.py (a FamilySpec)."
        )
    spec = MODEL_TYPES[model_type]
    why = spec.refuse(config) if (spec.refuse is not None and config is not None) else None
    if why:
        raise ValueError(f"{spec.name} checkpoint not supported: {why}")
    changes = spec.variant(config) if (spec.variant is not None and config is not None) else None
    return replace(spec, **changes) if changes else spec
