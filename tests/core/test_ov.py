"""The OV read-out (core/ov.py): every way the stages read a head's OV output through the
unembedding agrees with ``W_U W_V W_O x`` computed by hand, and the value-bias option adds the
same logit vector to every row."""

import pytest
import torch

from successor_heads.core.adapters import get_adapter
from successor_heads.core.effective_embedding import mlp0_embeddings
from successor_heads.core.ov import head_task_logits, ov_output, ov_readout, task_logits
from tests.support.tiny import make_model, randomize_biases


@pytest.mark.parametrize("family,norms", [("llama", "raw"), ("gemma3", "applied"), ("gpt_neox", "applied")])
def test_readouts_equal_the_circuit_by_hand(family, norms, tokenizer):
    model, _ = make_model(family, tokenizer)
    a = get_adapter(model)
    ids = torch.arange(3, 40)
    x = mlp0_embeddings(a, ids)
    layer, head = 1, 2
    W_V, W_O = a.W_V_layer(layer)[0][head].float(), a.W_O_layer(layer)[0][head].float()
    h = a.run_f32(a.attn_in_norm(layer), x) if norms == "applied" else x
    out = h @ W_V @ W_O
    post = a.attn_out_norm(layer)
    if norms == "applied" and post is not None:
        out = a.run_f32(post, out)
    torch.testing.assert_close(ov_output(a, layer, x, norms, [head])[0], out)
    read = a.run_f32(a.final_norm(), out) if norms == "applied" else out
    torch.testing.assert_close(ov_readout(a, layer, x, norms)[head], read, atol=1e-5, rtol=1e-5)
    W_U, b_U = a.W_U[:, ids].float(), a.b_U
    expected = read @ W_U + (0 if b_U is None else b_U[ids].float())
    logits = head_task_logits(a, layer, head, x, ids, norms)
    assert logits.shape == (len(ids), len(ids)) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    # the same numbers as reading the head's output straight through the unembedding
    torch.testing.assert_close(task_logits(a, ov_output(a, layer, x, norms, [head])[0], ids, norms), logits)


def test_value_bias_option_changes_head_logits(tokenizer):
    """Tiny GPT-2 with a nonzero value bias: ``value_bias=True`` adds unembed(b_V W_O), the same
    logit vector for every input row; the default (False) is the paper's circuit without it."""
    model, tok = make_model("gpt2", tokenizer)
    randomize_biases(model, 1.0, ("c_attn.bias",))
    a = get_adapter(model)
    assert a.W_V_layer(1)[1][2].abs().sum() > 0
    ids = torch.arange(5, 25)
    x = mlp0_embeddings(a, ids)
    plain = head_task_logits(a, 1, 2, x, ids)
    off = head_task_logits(a, 1, 2, x, ids, value_bias=False)
    on = head_task_logits(a, 1, 2, x, ids, value_bias=True)
    torch.testing.assert_close(plain, off)
    assert not torch.allclose(on, off)
    shift = on - off
    torch.testing.assert_close(shift, shift[:1].expand_as(shift), atol=1e-4, rtol=1e-4)
    _, b_V = a.W_V_layer(1)
    W_O, _ = a.W_O_layer(1)
    expected = a.unembed(b_V[2].float() @ W_O[2].float(), token_ids=ids).float()
    torch.testing.assert_close(shift[0], expected, atol=1e-4, rtol=1e-4)


def test_value_bias_is_a_typed_key_off_by_default():
    """The stages read ``scores.value_bias`` from the typed config (no fallback for configs
    without it): off by default (the paper's circuit), a bool when given."""
    from successor_heads.config import ConfigError, build

    base = {"model": {"name": "m", "family": "llama", "source": {"kind": "local", "path": "/m"}}}
    assert build(base).scores.value_bias is False
    assert build({**base, "scores": {"value_bias": True}}).scores.value_bias is True
    with pytest.raises(ConfigError, match="scores.value_bias='yes': must be of type bool"):
        build({**base, "scores": {"value_bias": "yes"}})


def test_bad_norms_and_empty_embedding(tokenizer):
    model, _ = make_model("llama", tokenizer)
    a = get_adapter(model)
    x = mlp0_embeddings(a, torch.arange(3, 8))
    with pytest.raises(ValueError, match="norms"):
        head_task_logits(a, 0, 0, x, torch.arange(3, 8), norms="final")
    with pytest.raises(ValueError, match="empty"):
        mlp0_embeddings(a, [])


@pytest.mark.parametrize("family,norms", [("llama", "raw"), ("gemma3", "applied"), ("gpt2", "raw"),
                                          ("qwen2", "applied")])
def test_readout_into_a_reused_buffer_is_the_same_tensor_and_bits(family, norms, tokenizer):
    """``out=`` (the batched scores' buffer kept across layers) returns the buffer, holding exactly
    the read-out computed without it, for all heads and for a batch of heads; stale contents from
    the layer before do not leak in."""
    model, _ = make_model(family, tokenizer)
    randomize_biases(model)
    a = get_adapter(model)
    x = mlp0_embeddings(a, torch.arange(3, 40))
    n_heads = a.dims.n_heads
    buf = torch.full((n_heads, x.shape[0], a.dims.d_model), float("nan"))
    for layer in range(a.dims.n_layers):
        want = ov_readout(a, layer, x, norms, None, True)
        got = ov_readout(a, layer, x, norms, None, True, out=buf)
        assert got is buf and torch.equal(got, want)
        part = ov_readout(a, layer, x, norms, torch.arange(1, n_heads), True, out=buf[1:])
        assert part.data_ptr() == buf[1:].data_ptr() and torch.equal(part, want[1:])
