"""Llama 3 (``model_type`` ``llama``: the Llama family's spec, with rope scaling of type
``llama3`` and four query heads per KV head) and the checkpoint variants a family reads from its
config (tests.support.tiny.CHECKPOINT_VARIANTS: Falcon-40B and Falcon-RW layouts, GPT-BigCode
without multi-query, StableLM's parallel residual, Granite-SWA and Granite-MoE-SWA) through every path the other families are tested
on (docs/DESIGN.md, "Architecture facts"): per-head outputs sum to transformers' attention output,
a planted successor head scores 1.0 and a copying head 0.0, the batched behavioural ablation and
the cached-prefix path equal their references, and both direct-effect paths equal one head at a
time. TransformerLens parity for the Llama family is in tests/scores/test_peer_transformerlens.py."""

import numpy as np
import pytest
import torch

from successor_heads.core.adapters import get_adapter
from successor_heads.core.hooks import mean_z as hooks_mean_z
from successor_heads.scores.behaviour import _group_by_length, _target_logprobs, behavioural_drops, patch_head_z
from successor_heads.wild.direct_effect import FINAL_NORMS, corpus_direct_effects, mean_z
from successor_heads.wild.direct_effect_reference import reference_per_head
from tests.core.test_adapters import _capture_attention
from tests.scores.test_behaviour import _prompts
from tests.scores.test_scores import planted_scores
from tests.support.tiny import VARIANTS, make_model

ATOL = 2e-5  # as tests/wild/test_direct_effect.py


@pytest.fixture(params=sorted(VARIANTS))
def variant(request, tokenizer):
    model, tok = make_model(request.param, tokenizer)
    return request.param, model, tok, get_adapter(model)


def test_variant_is_its_familys_spec(variant):
    name, model, _, a = variant
    assert a.family == VARIANTS[name]
    s, d = a.spec, a.dims
    if name == "llama3":
        assert model.config.rope_parameters["rope_type"] == "llama3"
        assert d.n_heads // d.n_kv_heads == 4
    elif name == "falcon_new":  # grouped KV heads, separate attention and MLP norms, parallel
        assert (s.qkv, d.n_kv_heads, s.attn_in_norm, s.mlp_in_norm) == ("fused_grouped", 2, "ln_attn", "ln_mlp")
        assert a.parallel_attn_mlp
    elif name == "falcon_rw":  # q/k/v per head, sequential block, ALiBi
        assert (s.qkv, d.n_kv_heads, s.positions, a.parallel_attn_mlp) == ("fused_per_head", 4, "alibi", False)
    elif name == "gpt_bigcode_mha":
        assert (s.qkv, d.n_kv_heads) == ("fused_per_head", 4)
    elif name == "stablelm_parallel":
        assert a.parallel_attn_mlp and s.mlp_in_norm == "input_layernorm"
    else:  # a model type of its own, read through its family's spec
        assert name in ("granite_swa", "granitemoe_swa") and model.config.model_type == name
        assert a.residual_multiplier == 1.5 and a.logit_scale == 2.0


@pytest.mark.parametrize("name", sorted(set(VARIANTS) - {"llama3"}))
def test_checkpoint_variant_planted_and_mlp_order(name, tokenizer):
    """A planted successor head scores 1.0 and a copier 0.0 in each checkpoint variant, and layer
    0's MLP input in the model's forward pass is the declared norm of the declared residual."""
    from tests.core.test_families import test_mlp_reads_what_the_declared_order_gives

    model, tok = make_model(name, tokenizer)
    per_task, _ = planted_scores(get_adapter(model), tok, 2)
    assert per_task[1, 0, 0] == 1.0 and per_task[1, 2, 0] == 0.0
    test_mlp_reads_what_the_declared_order_gives(name, tokenizer)


@pytest.mark.parametrize("layer", [0, 1])
def test_head_outputs_sum_to_attention_output(variant, layer):
    _, _, tok, a = variant
    sinks = getattr(a.attn(layer), "sinks", None)
    if sinks is not None:
        # Granite-SWA's sink scales each head's z after the pattern transformers returns (patterns
        # only, not the OV circuit); far below every score it scales by 1
        with torch.no_grad():
            sinks.fill_(-1e4)
    ids = torch.tensor([tok("Monday, Tuesday, Wednesday, 1 2 3 the lazy dog")["input_ids"]])
    x_BPM, out_BPM, pattern_BHQP = _capture_attention(a, layer, ids)
    W_V, b_V = a.W_V_layer(layer)
    W_O, b_O = a.W_O_layer(layer)
    z_BHQD = pattern_BHQP @ (torch.einsum("bpm,hmd->bhpd", x_BPM, W_V) + b_V[None, :, None])
    recon = torch.einsum("bhqd,hdm->bqm", z_BHQD, W_O) + b_O
    torch.testing.assert_close(recon, out_BPM * a.residual_multiplier, atol=1e-5, rtol=1e-4)


def test_planted_successor_scores_one_and_copier_zero(tokenizer):
    """Planting writes a head's KV head, shared by its group of 4 query heads; with 8 heads the
    successor (head 0) and the copier (head 7) read different KV heads."""
    model, tok = make_model("llama3", tokenizer, d_model=64, n_heads=8)  # d_head 8 >= rank 7
    copier = 7  # the other KV group
    per_task, _ = planted_scores(get_adapter(model), tok, copier)
    assert per_task[1, 0, 0] == 1.0 and per_task[1, copier, 0] == 0.0


def test_behavioural_drops_equal_one_head_at_a_time(variant):
    _, _, tok, a = variant
    prompts = _prompts(tok)
    drops, base = behavioural_drops(a, tok, prompts, "mean")
    old, base_old = behavioural_drops(a, tok, prompts, "mean", cached_prefix=False)
    np.testing.assert_allclose(drops, old, rtol=0, atol=1e-5)
    groups = _group_by_length(tok, prompts)
    means = hooks_mean_z(a, (ids for ids, _ in groups.values()), 0, torch.float32)
    base_ref = _target_logprobs(a, groups)[0]
    assert base == pytest.approx(float(base_ref.mean()), abs=1e-6) == base_old
    for layer in range(a.dims.n_layers):
        for head in range(a.dims.n_heads):
            with patch_head_z(a, layer, head, means[layer, head], 0):
                lp = _target_logprobs(a, groups)[0]
            assert drops[layer, head] == pytest.approx(float((base_ref - lp).mean()), abs=1e-4)


@pytest.mark.parametrize("final_norm", FINAL_NORMS)
def test_direct_effects_fast_and_exact_equal_the_reference(variant, final_norm):
    _, _, tok, a = variant
    texts = ["Monday, Tuesday, Wednesday, Thursday 1 2 3 4 the lazy dog jumps over the fox",
             "January February March April May June 7 8 9 10 11 12 one two three"]
    ids = torch.tensor([tok(t)["input_ids"][:14] for t in texts])
    mz = mean_z(a, ids, batch_size=1, skip_first=False)
    ref = reference_per_head(a, ids, mz, final_norm=final_norm)
    for fast in (None, False):
        de = corpus_direct_effects(a, ids, mz, batch_size=1, fast=fast, final_norm=final_norm)
        assert de.method == ("fast" if fast is None else "exact")
        np.testing.assert_allclose(de.loss.reshape(len(ref), -1), ref, atol=ATOL, rtol=0)
    assert np.abs(de.loss - de.base_loss).max() > 100 * ATOL
