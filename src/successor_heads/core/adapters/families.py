"""The supported model families, one :class:`FamilySpec` each (docs/DESIGN.md, Architecture facts).

A family that shares another's layout is declared as the differences from it
(:func:`dataclasses.replace`): Qwen2 is Llama with a value bias; Mistral is Llama; Qwen3 is Llama
with q/k norms; Phi-3 is Llama with one fused ``qkv_proj`` (and a fused ``gate_up_proj`` inside
its MLP module); OLMo-2 is Llama with its norms after attention and after the MLP instead of
before them; Gemma3 is Llama with sandwich norms in Gemma's ``(1 + w)`` convention, an embedding
scaled by sqrt(d_model) and soft-caps, and Gemma 2 is Gemma3 without q/k norms. Llama 3 is
``model_type`` ``llama``. Mixture-of-experts families are refused (:func:`family_of`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .spec import FamilySpec

GPT2 = FamilySpec(
    "gpt2", ("gpt2",), layers="transformer.h", final_norm="transformer.ln_f",
    # Conv1D weights [d_in, d_out]; c_attn's output columns are [q | k | v], n_heads * d_head each.
    attn="attn", v_proj="c_attn", o_proj="c_proj", qkv="fused", weights_in_out=True,
    attn_in_norm="ln_1", mlp_in_norm="ln_2", mlp="mlp", mlp_kind="dense",
    norm="layernorm", value_bias=True, output_bias=True, positions="learned",
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

MISTRAL = replace(LLAMA, name="mistral", model_types=("mistral",))

QWEN3 = replace(LLAMA, name="qwen3", model_types=("qwen3",), qk_norm=True)

# qkv_proj rows are [q (n_heads * d_head) | k (n_kv * d_head) | v (n_kv * d_head)], as GPT-2's
# c_attn but stored [d_out, d_in].
PHI3 = replace(LLAMA, name="phi3", model_types=("phi3",), v_proj="qkv_proj", qkv="fused")

# No input norms: each sublayer reads the raw residual and its output is normed before the add.
OLMO2 = replace(
    LLAMA, name="olmo2", model_types=("olmo2",), attn_in_norm=None, mlp_in_norm=None,
    attn_out_norm="post_attention_layernorm", mlp_out_norm="post_feedforward_layernorm", qk_norm=True,
)

GEMMA3 = replace(
    LLAMA, name="gemma3", model_types=("gemma3_text", "gemma3"),
    mlp_in_norm="pre_feedforward_layernorm", attn_out_norm="post_attention_layernorm",
    mlp_out_norm="post_feedforward_layernorm", norm="rmsnorm_1p", embed_scale="sqrt_d_model",
    logit_softcap="final_logit_softcapping", attn_softcap="attn_logit_softcapping", qk_norm=True,
)

GEMMA2 = replace(GEMMA3, name="gemma2", model_types=("gemma2",), qk_norm=False)

# One ln_1 feeds both attention and MLP (parallel block); the unembedding has a bias.
GPTJ = FamilySpec(
    "gptj", ("gptj",), layers="transformer.h", final_norm="transformer.ln_f",
    attn="attn", v_proj="v_proj", o_proj="out_proj", attn_in_norm="ln_1", mlp_in_norm="ln_1",
    mlp="mlp", mlp_kind="dense", norm="layernorm", parallel_attn_mlp=True, unembed_bias=True,
)

# The heads live one level down (attn.attention: the global or local self-attention).
GPT_NEO = FamilySpec(
    "gpt_neo", ("gpt_neo",), layers="transformer.h", final_norm="transformer.ln_f",
    attn="attn.attention", v_proj="v_proj", o_proj="out_proj", attn_in_norm="ln_1",
    mlp_in_norm="ln_2", mlp="mlp", mlp_kind="dense", norm="layernorm", output_bias=True,
    positions="learned",
)


def _opt_refuse(cfg: Any) -> str | None:
    """Why an OPT checkpoint cannot be read with :data:`OPT`'s paths, or None."""
    if not getattr(cfg, "do_layer_norm_before", True):
        return "its norms come after the residual add (do_layer_norm_before=False, e.g. facebook/opt-350m)"
    proj = getattr(cfg, "word_embed_proj_dim", None)
    if proj is not None and proj != cfg.hidden_size:
        return f"its embedding is projected (word_embed_proj_dim={proj} != hidden_size={cfg.hidden_size})"
    if getattr(cfg, "_remove_final_layer_norm", False):
        return "it has no final layer norm (_remove_final_layer_norm=True)"
    return None


# The MLP is no module of its own: fc1, the activation and fc2 sit on the decoder layer.
OPT = FamilySpec(
    "opt", ("opt",), layers="model.decoder.layers", final_norm="model.decoder.final_layer_norm",
    attn="self_attn", v_proj="v_proj", o_proj="out_proj", attn_in_norm="self_attn_layer_norm",
    mlp_in_norm="final_layer_norm", mlp=("fc1", "activation_fn", "fc2"), mlp_kind="dense",
    norm="layernorm", value_bias=True, output_bias=True, positions="learned", refuse=_opt_refuse,
)

#: Every supported family by its config name (``model.family``).
FAMILIES: dict[str, FamilySpec] = {s.name: s for s in (
    GPT2, GPT_NEOX, LLAMA, QWEN2, GEMMA3, MISTRAL, QWEN3, PHI3, OLMO2, GEMMA2, GPTJ, GPT_NEO, OPT)}

#: The family of each transformers ``config.model_type``.
MODEL_TYPES: dict[str, FamilySpec] = {mt: s for s in FAMILIES.values() for mt in s.model_types}


#: Config attributes that give a mixture-of-experts model's expert count.
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
#: Mixture-of-experts model types whose name does not say "moe".
_MOE_TYPES = ("mixtral", "deepseek_v2", "deepseek_v3", "dbrx", "jamba", "arctic", "jetmoe", "phimoe")


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
        ValueError: a mixture-of-experts model (not supported: the message says so); a
            ``model_type`` no family covers (the message lists the supported ones); a checkpoint
            its family's ``refuse`` check turns down (the message says why).
    """
    if is_moe(model_type, config):
        raise ValueError(
            f"model_type={model_type!r} is a mixture-of-experts model: MoE models are not "
            f"supported. Supported model types: {', '.join(sorted(MODEL_TYPES))}"
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
    return spec
