"""Adapters: per-head outputs, summed with the attention pattern, equal transformers' own
attention output (parity), on tiny random models of every family."""

import pytest
import torch

from successor_heads.core.adapters import get_adapter
from tests.support.tiny import FAMILIES, make_model


def _capture_attention(adapter, layer, ids):
    got = {}

    def hook(_m, args, kwargs, out):
        got["x"] = args[0] if args else kwargs["hidden_states"]
        got["out"] = out[0] if isinstance(out, tuple) else out

    h = adapter.attn(layer).register_forward_hook(hook, with_kwargs=True)
    try:
        res = adapter.model(input_ids=ids, output_attentions=True)
    finally:
        h.remove()
    return got["x"], got["out"], res.attentions[layer]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer", [0, 1])
def test_head_outputs_sum_to_attention_output(family, layer, tokenizer):
    model, tok = make_model(family, tokenizer)
    a = get_adapter(model)
    ids = torch.tensor([tok("Monday, Tuesday, Wednesday, 1 2 3 the lazy dog")["input_ids"]])
    x_BPM, out_BPM, pattern_BHQK = _capture_attention(a, layer, ids)
    W_V, b_V = a.W_V_layer(layer)
    W_O, b_O = a.W_O_layer(layer)
    v_BHPD = torch.einsum("bpm,hmd->bhpd", x_BPM, W_V) + b_V[None, :, None]
    z_BHQD = pattern_BHQK @ v_BHPD
    heads_BHQM = torch.einsum("bhqd,hdm->bhqm", z_BHQD, W_O)
    recon = heads_BHQM.sum(1) + b_O
    torch.testing.assert_close(recon, out_BPM, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_and_tied_unembedding(family, tokenizer):
    model, tok = make_model(family, tokenizer)
    a = get_adapter(model)
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
    model.config.model_type = "mamba"
    with pytest.raises(ValueError, match="no adapter for model_type='mamba'"):
        get_adapter(model)
