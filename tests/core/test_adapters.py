"""Adapters: per-head outputs, summed with the attention pattern, equal transformers' own
attention output (parity), on tiny random models of every family; each family's declared facts
(:class:`FamilySpec`) hold for its model."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from successor_heads.core.adapters import FAMILIES as SPECS
from successor_heads.core.adapters import MODEL_TYPES, get_adapter
from tests.support.tiny import FAMILIES, make_model


def _capture_attention(adapter, layer, ids):
    """The attention module's input, the heads' summed output (:meth:`Adapter.attn_out`: BLOOM's
    attention module also adds the residual) and the attention pattern."""
    got = {}

    def hook(_m, args, kwargs):
        got["x"] = args[0] if args else kwargs["hidden_states"]

    def out_hook(_m, _i, out):
        got["out"] = out[0] if isinstance(out, tuple) else out

    handles = [adapter.attn(layer).register_forward_pre_hook(hook, with_kwargs=True),
               adapter.attn_out(layer).register_forward_hook(out_hook)]
    try:
        res = adapter.model(input_ids=ids, output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    return got["x"], got["out"], res.attentions[layer]


@pytest.mark.parametrize("layer", [0, 1])
def test_head_outputs_sum_to_attention_output(layer, tiny_model):
    family, model, tok, a = tiny_model.family, tiny_model.model, tiny_model.tok, tiny_model.adapter
    ids = torch.tensor([tok("Monday, Tuesday, Wednesday, 1 2 3 the lazy dog")["input_ids"]])
    x_BPM, out_BPM, pattern_BHQP = _capture_attention(a, layer, ids)
    W_V, b_V = a.W_V_layer(layer)
    W_O, b_O = a.W_O_layer(layer)
    v_BHPD = torch.einsum("bpm,hmd->bhpd", x_BPM, W_V) + b_V[None, :, None]
    z_BHQD = pattern_BHQP @ v_BHPD
    heads_BHQM = torch.einsum("bhqd,hdm->bhqm", z_BHQD, W_O)
    recon = heads_BHQM.sum(1) + b_O
    # W_O, b_O give the heads' output as it reaches the residual stream (Granite scales it)
    torch.testing.assert_close(recon, out_BPM * a.residual_multiplier, atol=1e-5, rtol=1e-4)


def test_shapes_and_tied_unembedding(tiny_model):
    family, model, tok, a = tiny_model.family, tiny_model.model, tiny_model.tok, tiny_model.adapter
    d = a.dims
    assert a.W_E.shape == (d.d_vocab, d.d_model)
    assert a.W_U.shape == (d.d_model, d.d_vocab)
    assert a.W_V.shape == (d.n_layers, d.n_heads, d.d_model, d.d_head)
    assert a.W_O.shape == (d.n_layers, d.n_heads, d.d_head, d.d_model)
    if model.config.tie_word_embeddings:
        assert torch.equal(a.W_U, a.W_E.T)


@pytest.mark.parametrize("family", FAMILIES)
def test_unembed_applied_matches_model_logits(family, tokenizer):
    """Final norm + W_U on the last hidden state reproduces the model's logits (before soft-cap)."""
    model, tok = make_model(family, tokenizer)
    model.config.final_logit_softcapping = None
    a = get_adapter(model)
    ids = torch.tensor([tok("one two three")["input_ids"]])
    pre_norm = {}

    def hook(_m, inputs, _out):
        pre_norm["x"] = inputs[0]

    h = a.final_norm().register_forward_hook(hook)
    try:
        res = model(input_ids=ids)
    finally:
        h.remove()
    torch.testing.assert_close(a.unembed(pre_norm["x"], "applied"), res.logits, atol=1e-4, rtol=1e-4)


def test_gqa_mapping(tokenizer):
    model, _ = make_model("llama", tokenizer)
    a = get_adapter(model)
    W_V = a.W_V
    # n_heads=4, n_kv_heads=2: heads 0,1 read KV head 0; heads 2,3 read KV head 1.
    assert torch.equal(W_V[:, 0], W_V[:, 1]) and torch.equal(W_V[:, 2], W_V[:, 3])
    assert not torch.equal(W_V[:, 1], W_V[:, 2])


def test_unknown_family_is_refused(tokenizer):
    model, _ = make_model("gpt2", tokenizer)
    model.config.model_type = "baichuan"
    with pytest.raises(ValueError, match="no adapter for model_type='baichuan'"):
        get_adapter(model)


def test_registry_names_every_family_and_model_type(tokenizer):
    assert set(SPECS) == set(FAMILIES)
    assert all(MODEL_TYPES[mt] is spec for spec in SPECS.values() for mt in spec.model_types)
    for family in FAMILIES:
        a = get_adapter(make_model(family, tokenizer)[0])
        assert a.family == family and a.spec is SPECS[family]


#: Families whose attention and MLP read the same residual, and those with norms after attention
#: and after the MLP (before the residual add), from their transformers code.
PARALLEL = ("gpt_neox", "gptj", "phi", "cohere", "codegen", "falcon")
POST_NORMS = ("gemma3", "gemma2", "olmo2", "olmo3", "exaone4", "glm4")
NO_INPUT_NORMS = ("olmo2", "olmo3", "exaone4")


def _declared_norm(kind, module, x):
    eps = getattr(module, "eps", getattr(module, "variance_epsilon", 1e-5))
    weight = getattr(module, "weight", None)  # OLMo's LayerNorm has no parameters
    if kind in ("layernorm", "layernorm_1p"):
        if kind == "layernorm_1p":
            weight = 1 + weight
        return F.layer_norm(x, (x.shape[-1],), weight, getattr(module, "bias", None), eps)
    scale = 1 + module.weight if kind == "rmsnorm_1p" else module.weight
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * scale


@pytest.mark.parametrize("family", FAMILIES)
def test_declared_facts_hold(family, tokenizer):
    """Norm convention, embedding scale, biases, soft-cap, MLP kind and attention/MLP order as
    the family's spec declares them (the adapter runs the model's own modules for these)."""
    model, _ = make_model(family, tokenizer)
    a = get_adapter(model)
    s, d = a.spec, a.dims
    x = torch.randn(5, d.d_model) + 0.5
    norms = [a.final_norm()] + [m for i in range(d.n_layers) for m in (
        a.attn_in_norm(i), a.mlp_in_norm(i), a.attn_out_norm(i), a.mlp_out_norm(i)) if m is not None]
    with torch.no_grad():
        for norm in norms:
            torch.testing.assert_close(norm(x), _declared_norm(s.norm, norm, x), atol=1e-5, rtol=1e-5)
        ids = torch.arange(3, 9)
        scale = math.sqrt(d.d_model) if s.embed_scale == "sqrt_d_model" else 1.0
        scale *= getattr(model.config, s.embed_multiplier) if s.embed_multiplier else 1.0
        norm = a.embed_norm() or torch.nn.Identity()  # BLOOM's LayerNorm on the embeddings
        torch.testing.assert_close(a.embed(ids), norm(a.W_E[ids] * scale))
    assert (a.v_proj(0).bias is not None) == s.value_bias
    assert (a.o_proj(0).bias is not None) == s.output_bias
    assert a.logit_softcap == getattr(model.config, "final_logit_softcapping", None)
    assert s.attn_softcap is None or hasattr(model.config, s.attn_softcap)
    if s.moe_router is None:
        names = {name for name, _ in a.mlp(0).named_children()}
        gated = any("gate" in name for name in names) or {"w1", "w3"} <= names  # LFM2: w2(act(w1 x) * w3 x)
        assert gated == (s.mlp_kind == "gated")
    else:  # a mixture of experts: layer 0 has its router
        assert a.router(0) is not None and "experts" in dict(a.mlp(0).named_children())
    assert a.parallel_attn_mlp == (family in PARALLEL)
    assert (a.attn_out_norm(0) is None) == (a.mlp_out_norm(0) is None) == (family not in POST_NORMS)
    assert (a.attn_in_norm(0) is None) == (a.mlp_in_norm(0) is None) == (family in NO_INPUT_NORMS)
    assert (a.b_U is not None) == s.unembed_bias
    qk_names = ("q_norm", "k_norm", "query_layernorm", "key_layernorm", "q_layernorm", "k_layernorm")
    assert any(n in qk_names for n, _ in a.attn(0).named_children()) == s.qk_norm
    learned = any(isinstance(m, torch.nn.Embedding) and m is not model.get_input_embeddings()
                  for m in model.modules())
    assert learned == (s.positions == "learned")
    sinusoidal = any("Sinusoidal" in type(m).__name__ for m in model.modules())
    assert sinusoidal == (s.positions == "sinusoidal")
    assert a.residual_multiplier == (getattr(model.config, s.residual_multiplier) if s.residual_multiplier else 1.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_first_layer_reads_the_embedding(family, tokenizer):
    """Where no position embedding is added to the residual stream, the first decoder layer's
    input in the model's forward pass is :meth:`Adapter.embed` (embedding scale, Granite's
    embedding multiplier, BLOOM's embedding norm)."""
    model, tok = make_model(family, tokenizer)
    a = get_adapter(model)
    if a.spec.positions in ("learned", "sinusoidal"):
        pytest.skip("positions are added to the residual stream")
    ids = torch.tensor([tok("Monday Tuesday 1 2 3")["input_ids"]])
    got = {}
    h = a.layers()[0].register_forward_pre_hook(
        lambda _m, args, kwargs: got.__setitem__("x", args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        h.remove()
    torch.testing.assert_close(got["x"], a.embed(ids), atol=1e-6, rtol=1e-5)


def test_parallel_flag_of_the_checkpoint_wins(tokenizer):
    model, _ = make_model("gpt_neox", tokenizer)
    model.config.use_parallel_residual = False
    assert get_adapter(model).parallel_attn_mlp is False


def test_spec_refuses_unknown_choices():
    with pytest.raises(ValueError, match="qkv='interleaved' must be one of"):
        replace(SPECS["llama"], qkv="interleaved")
    with pytest.raises(ValueError, match="covers no model_type"):
        replace(SPECS["llama"], model_types=())
