"""What a model family is, declared once: :class:`FamilySpec` (docs/DESIGN.md, Architecture facts).

A family is a table, not a subclass: where its modules live (dotted attribute paths), how its
value and output projections store their weights, and the conventions that change how a head's
output reaches the logits (norms, embedding scale, soft-caps, biases, attention/MLP order). The
one generic :class:`~successor_heads.core.adapters.adapter.Adapter` reads it; the table itself is
:data:`~successor_heads.core.adapters.families.FAMILIES`.

Facts the adapter reads: the module paths, ``qkv``, ``weights_in_out``, ``parallel_attn_mlp``
(with ``parallel_flag``), ``logit_softcap``, ``logit_scale``, ``embed_multiplier``,
``residual_multiplier``, ``residual_in_modules``, ``moe_router``, ``shared_mlp``, ``attention_layers`` and ``refuse``. The others (``norm``, ``embed_scale``,
``attn_softcap``, ``value_bias``, ``output_bias``, ``unembed_bias``, ``mlp_kind``, ``qk_norm``,
``positions``) describe what the family's own modules already do (Gemma's embedding module
multiplies by sqrt(d_model), its RMSNorm scales by ``1 + w``); the adapter runs those modules,
and the adapter tests check each declaration against a tiny model of the family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

#: Where q, k and v live. ``separate``: ``q_proj``/``k_proj``/``v_proj`` (``v_proj`` has
#: ``n_kv_heads * d_head`` output rows); ``fused``: one projection whose output rows are the
#: blocks ``[q (n_heads * d_head) | k (n_kv_heads * d_head) | v (n_kv_heads * d_head)]`` (GPT-2's
#: ``c_attn``); ``fused_per_head``: one projection whose rows are ``[n_heads, 3, d_head]``, i.e.
#: q, k, v interleaved head by head (GPT-NeoX's ``query_key_value``); ``fused_grouped``: rows
#: ``[n_kv_heads, n_heads / n_kv_heads + 2, d_head]``, each KV group's queries then its key and
#: value (Falcon's new decoder architecture); ``fused_codegen``: rows ``[4, 3, n_heads * d_head / 4]``,
#: four blocks of ``[q | v | k]`` (CodeGen's ``qkv_proj``, heads in block order).
QKVLayout = Literal["separate", "fused", "fused_per_head", "fused_grouped", "fused_codegen"]
#: ``layernorm``: ``(x - mean) / sigma * w + b``; ``rmsnorm``: ``x / rms(x) * w``;
#: ``rmsnorm_1p``: ``x / rms(x) * (1 + w)`` (Gemma); ``layernorm_1p``: ``(x - mean) / sigma * (1 + w) + b``
#: (Nemotron). A layernorm without weight or bias (OLMo's non-parametric one) is ``layernorm``
#: with ``w = 1``, ``b = 0``.
NormKind = Literal["layernorm", "rmsnorm", "rmsnorm_1p", "layernorm_1p"]
#: ``none``: the first layer sees ``W_E[t]``; ``sqrt_d_model``: it sees ``W_E[t] * sqrt(d_model)`` (Gemma).
EmbedScale = Literal["none", "sqrt_d_model"]
#: ``dense``: ``W_out act(W_in x)``; ``gated``: ``W_down (act(W_gate x) * W_up x)`` (Phi-3 holds
#: ``W_gate`` and ``W_up`` in one fused ``gate_up_proj``).
MLPKind = Literal["dense", "gated"]
#: ``learned``: absolute position embeddings added to the token embedding (GPT-2, GPT-Neo, OPT);
#: ``sinusoidal``: fixed sinusoidal embeddings added to the token embedding (XGLM); ``rotary``:
#: q and k rotated, nothing added to the residual stream; ``alibi``: a per-head linear bias on
#: the attention scores (BLOOM, MPT), nothing added to the residual stream; ``none``: no
#: position signal in the attention layers (Jamba: its state-space layers carry the order).
PositionKind = Literal["learned", "sinusoidal", "rotary", "alibi", "none"]

_CHOICES = {"qkv": QKVLayout, "norm": NormKind, "embed_scale": EmbedScale, "mlp_kind": MLPKind,
            "positions": PositionKind}


@dataclass(frozen=True)
class FamilySpec:
    """One model family's architecture facts (module docstring).

    Paths are dotted attribute paths: ``layers`` and ``final_norm`` from the transformers causal
    LM, ``attn``/``attn_in_norm``/``mlp_in_norm``/``mlp``/``attn_out_norm``/``mlp_out_norm`` from
    one decoder layer, ``v_proj``/``o_proj`` from the attention module. A norm path is None where
    the family has no such norm (OLMo-2 has no input norms: the adapter reads it as the identity).
    ``mlp`` is a tuple of paths where the MLP is not one module (OPT: ``fc1``, the activation,
    ``fc2`` directly on the decoder layer); the adapter runs them in order.

    Attributes:
        name: the family's name in the model config (``model.family``).
        model_types: the transformers ``config.model_type`` values it covers.
        layers: the ``nn.ModuleList`` of decoder layers.
        final_norm: the norm before the unembedding.
        attn: the attention module, whose output is the sum of head outputs plus ``b_O``.
        v_proj: the module holding ``W_V`` (the fused q/k/v projection when ``qkv`` is fused).
        o_proj: the output projection, whose input ``[batch, pos, n_heads * d_head]`` holds each
            head's ``z``.
        attn_in_norm: the norm before attention, or None (OLMo-2).
        mlp_in_norm: the norm before the MLP, or None (OLMo-2); GPT-J's parallel block has one
            norm for both, so both paths name it.
        mlp: the MLP module, or the tuple of modules run in order (OPT).
        attn_out_norm: the norm on the attention output before the residual add (Gemma), or None.
        mlp_out_norm: the norm on the MLP output before the residual add (Gemma), or None.
        qkv: the q/k/v layout (:data:`QKVLayout`).
        weights_in_out: weights are stored ``[d_in, d_out]`` (GPT-2's Conv1D, ``y = x @ W + b``)
            instead of ``nn.Linear``'s ``[d_out, d_in]``.
        parallel_attn_mlp: attention and MLP read the same residual (GPT-NeoX/Pythia), so MLP0's
            input is the embedding alone.
        parallel_flag: config attribute that overrides ``parallel_attn_mlp`` when the checkpoint
            sets it (GPT-NeoX's ``use_parallel_residual``), or None.
        norm: the norm convention of every norm in the family (:data:`NormKind`).
        embed_scale: what the embedding module multiplies ``W_E[t]`` by (:data:`EmbedScale`).
        logit_softcap: config attribute of the final logit soft-cap ``c * tanh(logits / c)``, or None.
        attn_softcap: config attribute of the attention-score soft-cap, or None.
        value_bias: the family's value projection has a bias (``b_V``; zeros are used when absent).
        output_bias: the family's output projection has a bias (``b_O``; zeros when absent).
        unembed_bias: the unembedding has a bias ``b_U`` (GPT-J); read from the model either way.
        mlp_kind: the MLP's form (:data:`MLPKind`).
        qk_norm: the attention normalises q and k (Qwen3, OLMo-2, Gemma3); it changes attention
            patterns only, never the OV circuit.
        positions: how positions enter (:data:`PositionKind`).
        refuse: None, or a function of the transformers config returning why a checkpoint of
            this family cannot be read with these paths (e.g. OPT-350m's post-norms), else None.
        embed_norm: path (from the causal LM) of a norm applied to the token embedding before
            the first layer (BLOOM's ``word_embeddings_layernorm``), or None; :meth:`Adapter.embed`
            applies it.
        logit_scale: config attribute of a constant the logits are multiplied by (Cohere's
            ``logit_scale``), or ``"1/"`` and the attribute of one they are divided by (Granite's
            ``"1/logits_scaling"``), or None; folded into ``Adapter.W_U``.
        residual_in_modules: the attention and MLP modules take the residual stream and return
            their output plus it (BLOOM): :meth:`Adapter.attn_out` is then ``o_proj`` (whose
            output is the sum of head outputs plus ``b_O``) and ``mlp`` names the MLP's parts.
        embed_multiplier: config attribute of a constant the model multiplies the embedding
            module's output by before the first layer (Granite's ``embedding_multiplier``), or
            None; :meth:`Adapter.embed` applies it.
        residual_multiplier: config attribute of a constant each attention and MLP output is
            multiplied by before the residual add (Granite's ``residual_multiplier``), or None;
            folded into ``Adapter.W_O`` and ``b_O`` (a head's output as it reaches the residual
            stream). ``Adapter.mlp0`` stays the MLP module's own output.
        multi_query: one key/value head shared by all query heads (GPT-BigCode, Falcon-7B).
        kv_heads_attr: config attribute holding the number of key/value heads (absent or None:
            ``n_heads``), unless ``multi_query``.
        moe_router: path, inside a mixture-of-experts MLP module, of its router (whose forward
            on ``[n_tokens, d_model]`` returns ``(logits, weights, expert indices)``), or None
            for a dense MLP. The MLP module itself (router, experts, shared experts) is run for
            ``mlp0``; a layer whose MLP has no router (Qwen2-MoE's ``mlp_only_layers``) is dense.
        shared_mlp: path, on the decoder layer, of a dense MLP that reads the MoE block's input
            and whose output is added to the block's (Granite-MoE-Shared's ``shared_mlp``), or
            None; ``Adapter.mlp0`` runs both.
        attention_layers: None for a model whose decoder layers are all attention layers; for a
            hybrid (LFM2, Jamba), a function of the transformers config returning the decoder-layer
            indices of its attention layers. The adapter's layers are then those layers only
            (``Adapter.attention_layers``); the other layers still run in every forward pass.
        variant: None, or a function of the transformers config returning the fields that differ
            for that checkpoint (Falcon's decoder architectures, StableLM's parallel residual);
            :func:`~successor_heads.core.adapters.resolve.family_of` applies them.

    Raises:
        ValueError: on construction, a choice outside its allowed values or no ``model_types``.
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    final_norm: str
    attn: str
    v_proj: str
    o_proj: str
    attn_in_norm: str | None
    mlp_in_norm: str | None
    mlp: str | tuple[str, ...]
    attn_out_norm: str | None = None
    mlp_out_norm: str | None = None
    qkv: QKVLayout = "separate"
    weights_in_out: bool = False
    parallel_attn_mlp: bool = False
    parallel_flag: str | None = None
    norm: NormKind = "rmsnorm"
    embed_scale: EmbedScale = "none"
    logit_softcap: str | None = None
    attn_softcap: str | None = None
    value_bias: bool = False
    output_bias: bool = False
    unembed_bias: bool = False
    mlp_kind: MLPKind = "gated"
    qk_norm: bool = False
    positions: PositionKind = "rotary"
    refuse: Callable[[Any], str | None] | None = None
    embed_norm: str | None = None
    logit_scale: str | None = None
    residual_in_modules: bool = False
    embed_multiplier: str | None = None
    residual_multiplier: str | None = None
    multi_query: bool = False
    kv_heads_attr: str = "num_key_value_heads"
    variant: Callable[[Any], dict[str, Any]] | None = None
    moe_router: str | None = None
    shared_mlp: str | None = None
    attention_layers: Callable[[Any], list[int]] | None = None

    def __post_init__(self) -> None:
        if not self.model_types:
            raise ValueError(f"family {self.name!r} covers no model_type")
        for key, kind in _CHOICES.items():
            allowed = get_args(kind)
            if getattr(self, key) not in allowed:
                raise ValueError(f"family {self.name!r}: {key}={getattr(self, key)!r} must be one of {allowed}")

