"""The families added after the paper's zoo (issue 12; docs/DESIGN.md, "Architecture facts"):
each declared order of norms, attention and MLP reproduces what the transformers forward pass
feeds the MLP; mixture-of-experts models, unknown model types and checkpoints a family cannot
read are refused with a message that says why.

Per-head parity with transformers' attention output, declared facts, successor scores, the
behavioural ablation, the direct effects and TransformerLens parity run for every family in
tests.support.tiny.FAMILIES (the new ones included) in tests/core/test_adapters.py,
tests/scores and tests/wild; the Llama 3 variant is in tests/scores/test_families_variants.py.
"""

from types import SimpleNamespace

import pytest
import torch

from successor_heads.core.adapters import FAMILIES as SPECS
from successor_heads.core.adapters import MODEL_TYPES, family_of, get_adapter, is_moe
from successor_heads.core.adapters.parts import module_at as _module
from successor_heads.core.hooks import hooks
from tests.support.tiny import FAMILIES, HYBRID, MOE, NEW_FAMILIES, make_model

MOE_TYPES = ["hunyuan_v1_moe", "dbrx", "ernie4_5_moe", "glm4_moe"]  # mixture-of-experts families not declared


def _stub(model_type, **config):
    return SimpleNamespace(config=SimpleNamespace(model_type=model_type, **config))


def test_new_families_are_declared_and_tiny_models_exist():
    assert set(NEW_FAMILIES) <= set(SPECS) and set(FAMILIES) == set(SPECS)
    for mt in ("llama", "mistral", "qwen3", "phi3", "olmo2", "gemma2", "gptj", "gpt_neo", "opt"):
        assert mt in MODEL_TYPES
    for mt in ("falcon", "stablelm", "phi", "starcoder2", "gpt_bigcode", "codegen", "cohere", "olmo",
               "olmo3", "gemma", "mpt", "xglm", "nemotron", "exaone", "glm4", "smollm3", "ministral3"):
        assert mt in MODEL_TYPES


@pytest.mark.parametrize("model_type", MOE_TYPES)
def test_mixture_of_experts_is_refused_as_such(model_type):
    assert is_moe(model_type)
    with pytest.raises(ValueError, match="mixture-of-experts model this project does not declare"):
        get_adapter(_stub(model_type))


@pytest.mark.parametrize(("model_type", "why"), [
    ("deepseek_v2", "multi-head latent attention"), ("deepseek_v3", "multi-head latent attention"),
    ("jetmoe", "mixture of attention experts"),
])
def test_attention_without_a_fixed_ov_circuit_is_refused_with_the_reason(model_type, why):
    with pytest.raises(ValueError, match=why):
        get_adapter(_stub(model_type))


def test_expert_count_in_the_config_marks_moe():
    """A model type that is otherwise supported but whose config has experts is refused too."""
    with pytest.raises(ValueError, match="MoE models of this family are not supported"):
        get_adapter(_stub("qwen2", num_experts=8))
    assert not is_moe("qwen2", SimpleNamespace(num_experts=0))


@pytest.mark.parametrize(("model_type", "why"), [
    ("mamba", "has no attention heads"), ("rwkv", "has no attention heads"),
    ("bamba", "hybrid whose layers are not all attention layers .*ordinary attention, but this family is not declared"),
    ("qwen3_next", "hybrid whose layers are not all attention layers .*sigmoid.*no OV circuit"),
    ("zamba2", "hybrid whose layers are not all attention layers .*shared by several depths"),
])
def test_models_without_attention_heads_are_refused_with_the_reason(model_type, why):
    with pytest.raises(ValueError, match=f"model_type='{model_type}' .*{why}"):
        get_adapter(_stub(model_type))


@pytest.mark.parametrize("family", HYBRID)
def test_a_hybrid_adapter_sees_its_attention_layers_only_and_says_so(family, tokenizer):
    """LFM2 and Jamba: the adapter's layer k is decoder layer ``attention_layers[k]`` (every
    attention accessor), MLP0 is still the first decoder layer's feed-forward (a convolution or
    Mamba layer here), and the notice names the mapping."""
    model, _ = make_model(family, tokenizer)
    a = get_adapter(model)
    decoder = a.layers()
    kinds = ["conv" if hasattr(layer, "conv") or hasattr(layer, "mamba") else "attention" for layer in decoder]
    assert kinds == ["conv", "attention"] * a.dims.n_layers
    assert a.is_hybrid and a.attention_layers == tuple(range(1, len(decoder), 2))
    for k, i in enumerate(a.attention_layers):
        assert a.attn(k) is decoder[i].self_attn and a.attn_in_norm(k) is _module(decoder[i], a.spec.attn_in_norm)
    assert a.mlp(0) is decoder[0].feed_forward and a.mlp_in_norm(0) is _module(decoder[0], a.spec.mlp_in_norm)
    assert a.W_V.shape[0] == a.dims.n_layers == len(decoder) // 2
    assert f"attention_layers={list(a.attention_layers)}" in a.hybrid_notice()
    # Jamba's attention has no position signal ("none"), LFM2's is rotary
    assert any("Rotary" in type(m).__name__ for m in model.modules()) == (a.spec.positions == "rotary")
    assert get_adapter(make_model("llama", tokenizer)[0]).hybrid_notice() is None


def test_unknown_model_type_lists_the_supported_ones():
    with pytest.raises(ValueError, match="no adapter for model_type='baichuan'") as err:
        get_adapter(_stub("baichuan"))
    assert all(mt in str(err.value) for mt in MODEL_TYPES)
    assert "mixture" not in str(err.value)


@pytest.mark.parametrize(("change", "why"), [
    ({"do_layer_norm_before": False}, "do_layer_norm_before=False"),
    ({"word_embed_proj_dim": 16}, "word_embed_proj_dim=16"),
])
def test_opt_checkpoints_the_paths_do_not_fit_are_refused(change, why, tokenizer):
    model, _ = make_model("opt", tokenizer)
    get_adapter(model)  # the tiny OPT (pre-norm, no projection) is fine
    for key, value in change.items():
        setattr(model.config, key, value)
    with pytest.raises(ValueError, match=f"opt checkpoint not supported: .*{why}"):
        get_adapter(model)
    assert family_of("opt") is SPECS["opt"]  # without a config nothing is refused


@pytest.mark.parametrize(("change", "why"), [
    ({"apply_residual_connection_post_layernorm": True}, "apply_residual_connection_post_layernorm=True"),
    ({"pretraining_tp": 2, "slow_but_exact": True}, "slow_but_exact=True"),
])
def test_bloom_checkpoints_the_paths_do_not_fit_are_refused(change, why, tokenizer):
    model, _ = make_model("bloom", tokenizer)
    get_adapter(model)
    for key, value in change.items():
        setattr(model.config, key, value)
    with pytest.raises(ValueError, match=f"bloom checkpoint not supported: .*{why}"):
        get_adapter(model)


def _first_mixer(a):
    """What the first decoder layer adds before its MLP: the attention output, or in a hybrid
    whose first layer is not attention, its short convolution (LFM2) or Mamba mixer (Jamba)."""
    if not a.is_hybrid or a.attention_layers[0] == 0:
        return a.attn_out(0)
    layer = a.layers()[0]
    return layer.conv if hasattr(layer, "conv") else layer.mamba


@pytest.mark.parametrize("family", FAMILIES)
def test_mlp_reads_what_the_declared_order_gives(family, tokenizer):
    """Layer 0's MLP input in the model's own forward pass equals the declared form: its input
    norm (none for OLMo-2) on the layer's input (parallel: GPT-NeoX, GPT-J) or on the layer's
    input plus the attention output (after the post-attention norm of Gemma 2/3 and OLMo-2); and
    :meth:`Adapter.mlp` on that input gives what :meth:`Adapter.mlp_out` returned (OPT's MLP is
    fc1, activation, fc2 on the decoder layer)."""
    model, tok = make_model(family, tokenizer)
    a = get_adapter(model)
    got = {}
    first = a.mlp(0) if isinstance(a.spec.mlp, str) else a.mlp(0)[0]
    handles = [
        a.layers()[0].register_forward_pre_hook(
            lambda _m, args, kwargs: got.__setitem__("h", args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True),
        _first_mixer(a).register_forward_hook(
            lambda _m, _i, out: got.__setitem__("attn", out[0] if isinstance(out, tuple) else out)),
        first.register_forward_pre_hook(lambda _m, args: got.__setitem__("mlp_in", args[0])),
        # a copy: Falcon adds the attention output into the MLP's output tensor in place
        a.mlp_out(0).register_forward_hook(
            lambda _m, _i, out: got.__setitem__("mlp_out", (out[0] if isinstance(out, tuple) else out).clone())),
    ]
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([tok("Monday, Tuesday, 1 2 3 the lazy dog")["input_ids"]]))
    finally:
        for h in handles:
            h.remove()
    h = got["h"]
    if not a.parallel_attn_mlp:  # Granite scales the attention output before the residual add
        h = h + a.run_f32(a.attn_out_norm(0), got["attn"]) * a.residual_multiplier
    want = a.run_f32(a.mlp_in_norm(0), h)
    torch.testing.assert_close(got["mlp_in"].reshape(want.shape), want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        out = a.mlp(0)(got["mlp_in"])
        out = out[0] if isinstance(out, tuple) else out  # gpt-oss's MLP also returns its router scores
        torch.testing.assert_close(out, got["mlp_out"], atol=1e-6, rtol=1e-6)
    assert a.mlp(0) is a.mlp(0)  # made once: hooks and float32 copies find the same module


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_mlp0_applied_runs_the_declared_norms(family, tokenizer):
    """``mlp0(x, "applied")`` is the MLP input norm, the MLP (plus Granite-MoE-Shared's shared
    MLP), then the post-MLP norm where the family has one (Gemma 2, OLMo-2); "raw" is the MLP alone."""
    model, _ = make_model(family, tokenizer)
    a = get_adapter(model)
    x = torch.randn(1, 5, a.dims.d_model)  # [batch, pos, d_model], as an MoE block reads it
    first = lambda y: y[0] if isinstance(y, tuple) else y  # noqa: E731 (gpt-oss: (out, router scores))
    shared = a.shared_mlp(0) or (lambda y: 0)  # Granite-MoE-Shared's dense MLP beside the experts
    with torch.no_grad():
        raw = first(a.mlp(0)(x)) + shared(x)
        normed = a.run_f32(a.mlp_in_norm(0), x)
        applied = first(a.mlp(0)(normed)) + shared(normed)
        if a.mlp_out_norm(0) is not None:
            applied = a.mlp_out_norm(0)(applied)
    torch.testing.assert_close(a.mlp0(x, "raw"), raw)
    torch.testing.assert_close(a.mlp0(x, "applied"), applied)


@pytest.mark.parametrize("family", MOE)
def test_moe_mlp0_is_the_first_moe_block_on_each_token_alone(family, tokenizer):
    """For a mixture of experts, ``mlp0`` is the family's own first MoE block (router, top-k
    experts, shared experts) applied to each token alone: on the inputs that block saw in the
    model's forward pass it gives the block's outputs, and :meth:`Adapter.mlp0_experts` gives the
    experts its router picked (top-k as configured)."""
    model, tok = make_model(family, tokenizer)
    a = get_adapter(model)
    seen, got, picked = [], [], []
    with torch.no_grad(), hooks(
        (a.mlp(0), "pre", lambda _m, args: seen.append(args[0].reshape(-1, a.dims.d_model))),
        (a.mlp_out(0), "forward",
         lambda _m, _i, out: got.append((out[0] if isinstance(out, tuple) else out).reshape(-1, a.dims.d_model))),
        (a.router(0), "forward", lambda _m, _i, out: picked.append(out[-1])),
        *([(a.shared_mlp(0), "forward", lambda _m, _i, out: got.append(out.reshape(-1, a.dims.d_model)))]
          if a.shared_mlp(0) is not None else []),
    ):
        model(input_ids=torch.tensor([tok("Monday, Tuesday, 1 2 3 the lazy dog")["input_ids"]]))
    # Granite-MoE-Shared: the dense shared MLP's output (layer 0's) is added to the experts'
    x_in, out, experts = seen[0], got[0] + (got[1] if a.shared_mlp(0) is not None else 0), picked[0]
    torch.testing.assert_close(a.mlp0(x_in), out, atol=1e-5, rtol=1e-5)
    mine = a.mlp0_experts(x_in)
    assert mine.shape == (len(x_in), model.config.num_experts_per_tok)
    assert torch.equal(mine.sort(-1).values, experts.sort(-1).values)
    emb = a.embed(torch.arange(3, 15))  # on the embeddings themselves: the scores' effective embedding
    assert a.mlp0(emb).shape == emb.shape and a.mlp0_experts(emb).shape == (12, model.config.num_experts_per_tok)


def test_dense_families_have_no_router(tokenizer):
    model, _ = make_model("llama", tokenizer)
    a = get_adapter(model)
    assert a.router(0) is None and a.mlp0_experts(a.embed(torch.arange(3))) is None
