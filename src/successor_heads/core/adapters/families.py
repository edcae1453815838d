"""The supported model families, one :class:`FamilySpec` each (docs/DESIGN.md, Architecture facts).

A family that shares another's layout is declared as the differences from it
(:func:`dataclasses.replace`): Qwen2 is Llama with a value bias; Gemma3 is Llama with sandwich
norms in Gemma's ``(1 + w)`` convention, an embedding scaled by sqrt(d_model) and soft-caps.
"""

from __future__ import annotations

from dataclasses import replace

from .spec import FamilySpec

GPT2 = FamilySpec(
    "gpt2", ("gpt2",), layers="transformer.h", final_norm="transformer.ln_f",
    # Conv1D weights [d_in, d_out]; c_attn's output columns are [q | k | v], n_heads * d_head each.
    attn="attn", v_proj="c_attn", o_proj="c_proj", qkv="fused", weights_in_out=True,
    attn_in_norm="ln_1", mlp_in_norm="ln_2", mlp="mlp", mlp_kind="dense",
    norm="layernorm", value_bias=True, output_bias=True,
)

GPT_NEOX = FamilySpec(
    "gpt_neox", ("gpt_neox",), layers="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm",
    attn="attention", v_proj="query_key_value", o_proj="dense", qkv="fused_per_head",
    # Pythia: attention and MLP both read the layer's input (unless the checkpoint says otherwise).
    parallel_attn_mlp=True, parallel_flag="use_parallel_residual",
    attn_in_norm="input_layernorm", mlp_in_norm="post_attention_layernorm", mlp="mlp",
    mlp_kind="dense", norm="layernorm", value_bias=True, output_bias=True,
)

LLAMA = FamilySpec(
    "llama", ("llama",), layers="model.layers", final_norm="model.norm",
    # Grouped-query attention: v_proj holds n_kv_heads heads; the adapter maps query head h
    # to KV head h // (n_heads // n_kv_heads).
    attn="self_attn", v_proj="v_proj", o_proj="o_proj",
    attn_in_norm="input_layernorm", mlp_in_norm="post_attention_layernorm", mlp="mlp",
)

QWEN2 = replace(LLAMA, name="qwen2", model_types=("qwen2",), value_bias=True)

GEMMA3 = replace(
    LLAMA, name="gemma3", model_types=("gemma3_text", "gemma3"),
    mlp_in_norm="pre_feedforward_layernorm", attn_out_norm="post_attention_layernorm",
    mlp_out_norm="post_feedforward_layernorm", norm="rmsnorm_1p", embed_scale="sqrt_d_model",
    logit_softcap="final_logit_softcapping", attn_softcap="attn_logit_softcapping",
)

#: Every supported family by its config name (``model.family``).
FAMILIES: dict[str, FamilySpec] = {s.name: s for s in (GPT2, GPT_NEOX, LLAMA, QWEN2, GEMMA3)}

#: The family of each transformers ``config.model_type``.
MODEL_TYPES: dict[str, FamilySpec] = {mt: s for s in FAMILIES.values() for mt in s.model_types}


def family_of(model_type: str | None) -> FamilySpec:
    """The :class:`FamilySpec` covering a transformers ``config.model_type``.

    Args:
        model_type: ``model.config.model_type`` (None when the config has none).

    Returns:
        The family's spec from :data:`FAMILIES`.

    Raises:
        ValueError: no family covers ``model_type`` (the message lists the supported ones).
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"no adapter for model_type={model_type!r}; supported: {', '.join(sorted(MODEL_TYPES))}. "
            "Declare its family in successor_heads/core/adapters/families.py (a FamilySpec)."
        )
    return MODEL_TYPES[model_type]
