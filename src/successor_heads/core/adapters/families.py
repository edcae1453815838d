"""The supported model families, one :class:`FamilySpec` each (docs/DESIGN.md, Architecture facts).

A family that shares another's layout is declared as the differences from it
(:func:`dataclasses.replace`): Qwen2 is Llama with a value bias; Mistral is Llama; Qwen3 is Llama
with q/k norms; Phi-3 is Llama with one fused ``qkv_proj`` (and a fused ``gate_up_proj`` inside
its MLP module); OLMo-2 is Llama with its norms after attention and after the MLP instead of
before them; Gemma3 is Llama with sandwich norms in Gemma's ``(1 + w)`` convention, an embedding
scaled by sqrt(d_model) and soft-caps, and Gemma 2 is Gemma3 without q/k norms. Llama 3 is
``model_type`` ``llama``. Granite is Llama with scalar multipliers; BLOOM's attention and MLP
modules add the residual themselves. Mixture-of-experts families (Mixtral, OLMoE, Qwen2/3-MoE,
PhiMoE, gpt-oss, Granite-MoE(-Shared), Jamba) declare their router (``moe_router``). Two hybrids (LFM2,
Jamba) declare which decoder layers are attention layers (``attention_layers``) and are scored on
those only. Other MoE models, models without attention heads, other hybrids and multi-head latent
attention (DeepSeek-V2/V3) are refused with the reason (:func:`~successor_heads.core.adapters.resolve.family_of`).
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

# --- dense families added with the second wave (docs/DESIGN.md, Architecture facts) -----------
# Llama's layout under another name (their differences act on attention patterns only: NoPE
# layers, sliding windows, rope variants) or with a different MLP form.
SMOLLM3 = replace(LLAMA, name="smollm3", model_types=("smollm3",))
MINISTRAL = replace(LLAMA, name="ministral", model_types=("ministral", "ministral3"))
EXAONE = replace(LLAMA, name="exaone", model_types=("exaone",))
SEED_OSS = replace(LLAMA, name="seed_oss", model_types=("seed_oss",), value_bias=True)
ERNIE4_5 = replace(LLAMA, name="ernie4_5", model_types=("ernie4_5",))
HUNYUAN_DENSE = replace(LLAMA, name="hunyuan_v1_dense", model_types=("hunyuan_v1_dense",), qk_norm=True)
# ReLU^2 up/down MLP, no gate.
ARCEE = replace(LLAMA, name="arcee", model_types=("arcee",), mlp_kind="dense")
# Gemma 1: Llama's layout in Gemma's (1 + w) norms, its embedding module scales by sqrt(d_model).
GEMMA = replace(LLAMA, name="gemma", model_types=("gemma",), norm="rmsnorm_1p", embed_scale="sqrt_d_model")
# OLMo 1: non-parametric LayerNorms (no weight, no bias).
def _olmo_refuse(cfg: Any) -> str | None:
    """OLMo checkpoints whose q/k/v are clipped (``clip_qkv``): the OV circuit is not linear."""
    clip = getattr(cfg, "clip_qkv", None)
    return f"its q/k/v projections are clipped (clip_qkv={clip}), so a head's OV circuit is not linear" if clip else None


OLMO = replace(LLAMA, name="olmo", model_types=("olmo",), norm="layernorm", refuse=_olmo_refuse)
# OLMo 3: OLMo-2's post-norm layout (sliding-window layers change attention patterns only).
OLMO3 = replace(OLMO2, name="olmo3", model_types=("olmo3",))
# EXAONE 4: OLMo-2's post-norm layout with q/k norms.
EXAONE4 = replace(OLMO2, name="exaone4", model_types=("exaone4",))
# GLM-4: input norms plus norms after attention and after the MLP (before the residual add);
# gate and up fused in one gate_up_proj; q/k/v biases.
GLM4 = replace(
    LLAMA, name="glm4", model_types=("glm4",), attn_out_norm="post_self_attn_layernorm",
    mlp_out_norm="post_mlp_layernorm", value_bias=True,
)
GLM = replace(LLAMA, name="glm", model_types=("glm",), value_bias=True)
# StarCoder2: LayerNorm, biases everywhere, a c_fc/c_proj MLP.
STARCODER2 = replace(
    LLAMA, name="starcoder2", model_types=("starcoder2",), norm="layernorm", mlp_kind="dense",
    value_bias=True, output_bias=True,
)


def _stablelm_variant(cfg: Any) -> dict[str, Any]:
    """StableLM-2-12B's parallel residual: one input norm feeds attention and MLP."""
    if getattr(cfg, "use_parallel_residual", False):
        return dict(mlp_in_norm="input_layernorm", parallel_attn_mlp=True)
    return {}


STABLELM = replace(LLAMA, name="stablelm", model_types=("stablelm",), norm="layernorm", variant=_stablelm_variant)
# Phi-1/2: one input_layernorm feeds attention and MLP (parallel block); fc1/fc2 MLP; biases,
# also on the unembedding.
PHI = replace(
    LLAMA, name="phi", model_types=("phi",), final_norm="model.final_layernorm", o_proj="dense",
    mlp_in_norm="input_layernorm", parallel_attn_mlp=True, norm="layernorm", mlp_kind="dense",
    value_bias=True, output_bias=True, unembed_bias=True,
)
# Cohere (Command-R): parallel block with one (bias-free) LayerNorm; logits times logit_scale.
COHERE = replace(
    LLAMA, name="cohere", model_types=("cohere",), mlp_in_norm="input_layernorm",
    parallel_attn_mlp=True, norm="layernorm", logit_scale="logit_scale",
)
# Nemotron: LayerNorm in the (1 + w) convention, ReLU^2 up/down MLP.
NEMOTRON = replace(LLAMA, name="nemotron", model_types=("nemotron",), norm="layernorm_1p", mlp_kind="dense")
# GPT-BigCode (StarCoder 1, SantaCoder): GPT-2's layout in nn.Linear, one shared KV head.
def _bigcode_variant(cfg: Any) -> dict[str, Any]:
    """Without multi-query, c_attn's rows are q, k, v interleaved head by head."""
    if getattr(cfg, "multi_query", True):
        return {}
    return dict(multi_query=False, qkv="fused_per_head", kv_heads_attr="num_attention_heads")


GPT_BIGCODE = replace(
    GPT2, name="gpt_bigcode", model_types=("gpt_bigcode",), weights_in_out=False, multi_query=True,
    variant=_bigcode_variant,
)
# MPT: ALiBi, one fused Wqkv [q | k | v], bias-free LayerNorms, an up/down MLP whose module
# also adds the residual (so its parts are run, as OPT's).
def _mpt_refuse(cfg: Any) -> str | None:
    clip = getattr(getattr(cfg, "attn_config", None), "clip_qkv", None)
    return f"its q/k/v projections are clipped (clip_qkv={clip}), so a head's OV circuit is not linear" if clip else None


MPT = FamilySpec(
    "mpt", ("mpt",), layers="transformer.blocks", final_norm="transformer.norm_f", attn="attn",
    v_proj="Wqkv", o_proj="out_proj", qkv="fused", attn_in_norm="norm_1", mlp_in_norm="norm_2",
    mlp=("ffn.up_proj", "ffn.act", "ffn.down_proj"), mlp_kind="dense", norm="layernorm",
    positions="alibi", refuse=_mpt_refuse,
    kv_heads_attr="num_attention_heads",
)
# CodeGen: one ln_1 feeds attention and MLP (parallel block); q/v/k fused in four blocks.
CODEGEN = replace(
    GPTJ, name="codegen", model_types=("codegen",), v_proj="qkv_proj", qkv="fused_codegen",
    kv_heads_attr="num_attention_heads",
)
# XGLM: OPT's layout (fc1, activation, fc2 on the layer) with sinusoidal positions and an
# embedding scaled by sqrt(d_model).
XGLM = replace(
    OPT, name="xglm", model_types=("xglm",), layers="model.layers", final_norm="model.layer_norm",
    positions="sinusoidal", embed_scale="sqrt_d_model", refuse=None, kv_heads_attr="num_attention_heads",
)


def _falcon_variant(cfg: Any) -> dict[str, Any]:
    """Falcon's three decoder layouts (FALCON below is Falcon-7B's: one shared KV head, one
    input norm feeding a parallel block)."""
    if getattr(cfg, "new_decoder_architecture", False):  # Falcon-40B/180B: grouped KV heads
        two = getattr(cfg, "num_ln_in_parallel_attn", None) in (None, 2)
        return dict(qkv="fused_grouped", multi_query=False, kv_heads_attr="num_kv_heads",
                    attn_in_norm="ln_attn" if two else "input_layernorm",
                    mlp_in_norm="ln_mlp" if two else "input_layernorm", parallel_attn_mlp=True)
    changes: dict[str, Any] = {}
    if not getattr(cfg, "multi_query", True):  # Falcon-RW: q/k/v interleaved per head
        changes.update(qkv="fused_per_head", multi_query=False, kv_heads_attr="num_attention_heads")
    if not getattr(cfg, "parallel_attn", True):
        changes.update(mlp_in_norm="post_attention_layernorm", parallel_attn_mlp=False)
    if getattr(cfg, "alibi", False):
        changes.update(positions="alibi")
    return changes


FALCON = FamilySpec(
    "falcon", ("falcon",), layers="transformer.h", final_norm="transformer.ln_f",
    attn="self_attention", v_proj="query_key_value", o_proj="dense", qkv="fused", multi_query=True,
    attn_in_norm="input_layernorm", mlp_in_norm="input_layernorm", parallel_attn_mlp=True,
    mlp="mlp", mlp_kind="dense", norm="layernorm", variant=_falcon_variant,
)

# Granite (and Granite-SWA, its sliding-window layers acting on attention patterns only): Llama's
# layout with four scalar multipliers: the token embeddings times
# embedding_multiplier, each attention and MLP output times residual_multiplier before the
# residual add (folded into W_O, b_O), logits divided by logits_scaling (folded into W_U, b_U);
# attention_multiplier replaces 1/sqrt(d_head) in QK (attention patterns only).
GRANITE = replace(
    LLAMA, name="granite", model_types=("granite", "granite_swa"), embed_multiplier="embedding_multiplier",
    residual_multiplier="residual_multiplier", logit_scale="1/logits_scaling",
)

def _bloom_refuse(cfg: Any) -> str | None:
    """BLOOM checkpoints whose residual or output projection the paths cannot read."""
    if getattr(cfg, "apply_residual_connection_post_layernorm", False):
        return ("its residual stream is the normed input (apply_residual_connection_post_layernorm=True), "
                "so a head's output is not added to the layer's input")
    if getattr(cfg, "pretraining_tp", 1) > 1 and getattr(cfg, "slow_but_exact", False):
        return ("its output projections run in slices (pretraining_tp > 1 with slow_but_exact=True), "
                "so the hooks on the output projection never run; set slow_but_exact=False")
    return None


# BLOOM: ALiBi, q/k/v interleaved head by head (as GPT-NeoX), a LayerNorm on the embeddings;
# its attention and MLP modules add the residual themselves, so the heads' sum is dense's output
# and the MLP is run as its parts (as MPT's).
BLOOM = FamilySpec(
    "bloom", ("bloom",), layers="transformer.h", final_norm="transformer.ln_f", attn="self_attention",
    v_proj="query_key_value", o_proj="dense", qkv="fused_per_head", residual_in_modules=True,
    attn_in_norm="input_layernorm", mlp_in_norm="post_attention_layernorm",
    mlp=("mlp.dense_h_to_4h", "mlp.gelu_impl", "mlp.dense_4h_to_h"), mlp_kind="dense", norm="layernorm",
    value_bias=True, output_bias=True, positions="alibi", embed_norm="transformer.word_embeddings_layernorm",
    kv_heads_attr="num_attention_heads", refuse=_bloom_refuse,
)

# --- mixture-of-experts families: MLP0 is the first layer's MoE block (router, top-k experts,
# shared experts), run as the family's own module; attention is dense as in Llama.
MIXTRAL = replace(LLAMA, name="mixtral", model_types=("mixtral",), moe_router="gate")
OLMOE = replace(LLAMA, name="olmoe", model_types=("olmoe",), moe_router="gate", qk_norm=True)
QWEN2_MOE = replace(QWEN2, name="qwen2_moe", model_types=("qwen2_moe",), moe_router="gate")
QWEN3_MOE = replace(QWEN3, name="qwen3_moe", model_types=("qwen3_moe",), moe_router="gate")
PHIMOE = replace(LLAMA, name="phimoe", model_types=("phimoe",), moe_router="router", norm="layernorm",
                 value_bias=True, output_bias=True)
# gpt-oss: attention sinks and alternating sliding-window layers act on attention patterns only;
# biases on q/k/v/o; its MLP returns (output, router scores).
GPT_OSS = replace(LLAMA, name="gpt_oss", model_types=("gpt_oss",), moe_router="router", value_bias=True,
                  output_bias=True)

# Granite-MoE: Granite's multipliers, its MoE block on the layer as block_sparse_moe.
GRANITEMOE = replace(GRANITE, name="granitemoe", model_types=("granitemoe",), mlp="block_sparse_moe",
                     moe_router="router")

# Granite-MoE-Shared: Granite-MoE with a dense shared_mlp beside the experts (on the same input);
# Granite-MoE-SWA is its layout with sliding-window layers.
GRANITEMOESHARED = replace(GRANITEMOE, name="granitemoeshared", model_types=("granitemoeshared", "granitemoe_swa"),
                           shared_mlp="shared_mlp")

# Hybrids whose attention layers are ordinary softmax attention (per-head W_V, W_O): the adapter
# sees those layers only (FamilySpec.attention_layers); the other layers still run in every forward
# pass, and mlp0 is the first decoder layer's feed-forward whatever its kind.
def _lfm2_attention(cfg: Any) -> list[int]:
    return [i for i, kind in enumerate(cfg.layer_types) if kind != "conv"]


def _jamba_attention(cfg: Any) -> list[int]:
    return [i for i, kind in enumerate(cfg.layers_block_type) if kind == "attention"]


# LFM2: short-convolution layers between grouped-query attention layers with q/k norms; one
# pre-norm (operator_norm) before either operator; the final norm is named embedding_norm.
LFM2 = replace(LLAMA, name="lfm2", model_types=("lfm2",), final_norm="model.embedding_norm", o_proj="out_proj",
               attn_in_norm="operator_norm", mlp_in_norm="ffn_norm", mlp="feed_forward", qk_norm=True,
               attention_layers=_lfm2_attention)
# Jamba: Mamba layers with one attention layer every attn_layer_period (no position signal in
# attention); every expert_layer_period-th layer's feed-forward is a mixture of experts.
JAMBA = replace(LLAMA, name="jamba", model_types=("jamba",), final_norm="model.final_layernorm",
                mlp_in_norm="pre_ff_layernorm", mlp="feed_forward", moe_router="router", positions="none",
                attention_layers=_jamba_attention)

#: Every supported family by its config name (``model.family``).
FAMILIES: dict[str, FamilySpec] = {s.name: s for s in (
    GPT2, GPT_NEOX, LLAMA, QWEN2, GEMMA3, MISTRAL, QWEN3, PHI3, OLMO2, GEMMA2, GPTJ, GPT_NEO, OPT,
    SMOLLM3, MINISTRAL, EXAONE, SEED_OSS, ERNIE4_5, HUNYUAN_DENSE, ARCEE, GEMMA, OLMO, OLMO3, EXAONE4,
    GLM4, GLM, STARCODER2, STABLELM, PHI, COHERE, NEMOTRON, GPT_BIGCODE, MPT, CODEGEN, XGLM,
    FALCON, GRANITE, BLOOM, MIXTRAL, OLMOE, QWEN2_MOE, QWEN3_MOE, PHIMOE, GPT_OSS, GRANITEMOE, GRANITEMOESHARED,
    LFM2, JAMBA)}

#: The family of each transformers ``config.model_type``.
MODEL_TYPES: dict[str, FamilySpec] = {mt: s for s in FAMILIES.values() for mt in s.model_types}
