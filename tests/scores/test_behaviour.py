"""Behavioural check: batched per-layer ablation equals ablating one head at a time."""

import numpy as np
import pytest
import torch

from successor_heads.core.adapters import get_adapter
from successor_heads.core.hooks import mean_z
from successor_heads.scores.behaviour import (_group_by_length, _target_logprobs, behavioural_drops, patch_each_head,
                                              patch_head_z, prompts_carry_bos)
from tests.support.tiny import CORE_FAMILIES, FAMILIES, make_model

PROMPTS = [
    {"prompt": "Monday, Tuesday, Wednesday,", "target": " Thursday"},
    {"prompt": "March, April,", "target": " May"},
    {"prompt": "one, two, three, four,", "target": " five"},
    {"prompt": "A, B, C,", "target": " D"},
]


def _prompts(tok):
    out = []
    for p in PROMPTS:
        (tid,) = tok(p["target"], add_special_tokens=False)["input_ids"]
        out.append({**p, "target_id": tid})
    return out


@pytest.mark.parametrize(("family", "bos"), [(f, False) for f in FAMILIES] + [(f, True) for f in CORE_FAMILIES])
def test_batched_drops_equal_one_head_at_a_time(family, bos, tokenizer):
    model, tok = make_model(family, _with_bos(tokenizer) if bos else tokenizer)
    a = get_adapter(model)
    prompts = _prompts(tok)
    drops, base = behavioural_drops(a, tok, prompts, "mean")
    groups = _group_by_length(tok, prompts)
    start = int(prompts_carry_bos(tok, prompts))
    means = mean_z(a, (ids for ids, _ in groups.values()), start, torch.float32)
    base_ref = _target_logprobs(a, groups)[0]
    assert base == pytest.approx(float(base_ref.mean()), abs=1e-6)
    for layer in range(a.dims.n_layers):
        for head in range(a.dims.n_heads):
            with patch_head_z(a, layer, head, means[layer, head], start):
                lp = _target_logprobs(a, groups)[0]
            assert drops[layer, head] == pytest.approx(float((base_ref - lp).mean()), abs=1e-4)
    assert np.abs(drops).max() > 0, "ablations must change something on a random model"


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_subset_of_heads_equals_the_full_check(family, tokenizer):
    model, tok = make_model(family, tokenizer)
    a = get_adapter(model)
    prompts = _prompts(tok)
    full, base = behavioural_drops(a, tok, prompts, "mean")
    heads = [(0, 1), (1, 0), (1, a.dims.n_heads - 1)]
    sub, base_sub = behavioural_drops(a, tok, prompts, "mean", heads=heads)
    assert base_sub == pytest.approx(base, abs=1e-6)
    mask = np.zeros_like(full, dtype=bool)
    for layer, head in heads:
        mask[layer, head] = True
    np.testing.assert_allclose(sub[mask], full[mask], atol=1e-4)
    assert np.isnan(sub[~mask]).all()


def test_zero_output_head_has_no_effect(tokenizer):
    model, tok = make_model("gpt2", tokenizer)
    with torch.no_grad():
        model.transformer.h[1].attn.c_proj.weight[8:16] = 0  # head 1 of layer 1 writes nothing
    drops, _ = behavioural_drops(get_adapter(model), tok, _prompts(tok), "zero")
    assert drops[1, 1] == pytest.approx(0.0, abs=1e-6)


def test_hook_removed_when_forward_raises(tokenizer):
    model, tok = make_model("llama", tokenizer)
    a = get_adapter(model)
    with pytest.raises(IndexError):
        with patch_head_z(a, 0, 0, torch.zeros(a.dims.d_head)):
            model(input_ids=torch.tensor([[10**6]]))  # out-of-range id raises inside forward
    assert not a.o_proj(0)._forward_pre_hooks


def test_errors(tokenizer):
    model, tok = make_model("gpt2", tokenizer)
    a = get_adapter(model)
    with pytest.raises(ValueError, match="no ordinal-list prompts"):
        behavioural_drops(a, tok, [])
    with pytest.raises(ValueError, match="ablation="):
        behavioural_drops(a, tok, _prompts(tok), "resample")
    with pytest.raises(ValueError, match="outside this model"):
        behavioural_drops(a, tok, _prompts(tok), heads=[(a.dims.n_layers, 0)])
    with pytest.raises(ValueError, match="heads=\\[\\]"):
        behavioural_drops(a, tok, _prompts(tok), heads=[])


def _with_bos(tokenizer):
    """A copy of the tiny tokenizer that puts its BOS first, as Llama-family tokenizers do."""
    import copy

    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(tokenizer)
    bos = tok.bos_token
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.bos_token_id)])
    return tok


def test_bos_is_neither_ablated_nor_in_the_mean(tokenizer):
    """With a BOS first, the ablated run leaves every activation at position 0 as it was, and
    the mean z is taken over the other positions only."""
    model, tok = make_model("llama", _with_bos(tokenizer))
    a = get_adapter(model)
    prompts = _prompts(tok)
    assert prompts_carry_bos(tok, prompts) and not prompts_carry_bos(tokenizer, prompts)
    groups = _group_by_length(tok, prompts)
    ids = next(iter(groups.values()))[0]
    zs = []
    hook = a.o_proj(1).register_forward_pre_hook(lambda _m, args: zs.append(args[0].detach().clone()))
    try:
        model(input_ids=ids)
    finally:
        hook.remove()
    dh = a.dims.d_head
    means = mean_z(a, [ids], start=1, accumulate=torch.float32)
    torch.testing.assert_close(means[1, 0], zs[0][:, 1:, :dh].reshape(-1, dh).mean(0))
    value = torch.full((1, dh), 100.0)
    clean = model(input_ids=ids, output_hidden_states=True).hidden_states
    with patch_each_head(a, 0, value, heads=[0], start=1):
        ablated = model(input_ids=ids, output_hidden_states=True).hidden_states
    for h_clean, h_abl in zip(clean, ablated):
        torch.testing.assert_close(h_abl[:, 0], h_clean[:, 0])
    assert not torch.allclose(ablated[-1][:, 1:], clean[-1][:, 1:])
    with patch_each_head(a, 0, value, heads=[0], start=0):
        everywhere = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert not torch.allclose(everywhere[-1][:, 0], clean[-1][:, 0])


@pytest.mark.parametrize(("family", "bos"), [(f, False) for f in FAMILIES] + [(f, True) for f in CORE_FAMILIES])
def test_cached_prefix_equals_full_forward(family, bos, tokenizer):
    """Starting each layer's ablated batch from the cached clean residual gives the drops of the
    whole-model path (every family's layer arguments: rotary embeddings, masks, Gemma3's
    sliding/full layers and soft-cap, GPT-2's learned positions), with and without BOS, for
    every head, a subset, and zero ablation."""
    model, tok = make_model(family, _with_bos(tokenizer) if bos else tokenizer, n_layers=3)
    a = get_adapter(model)
    prompts = _prompts(tok)
    sizes = sorted(len(ids) for ids, _ in _group_by_length(tok, prompts).values())
    assert sizes[0] == 1 and sizes[-1] > 1  # batch-of-one groups (all repeated) and shared tensors (broadcast)
    for kw in ({}, {"heads": [(0, 1), (2, 0), (2, a.dims.n_heads - 1)]}, {"ablation": "zero"}):
        ablation = kw.pop("ablation", "mean")
        new, base_new = behavioural_drops(a, tok, prompts, ablation, cached_prefix=True, **kw)
        old, base_old = behavioural_drops(a, tok, prompts, ablation, cached_prefix=False, **kw)
        assert base_new == pytest.approx(base_old, abs=1e-6)
        np.testing.assert_array_equal(np.isnan(new), np.isnan(old))
        np.testing.assert_allclose(new, old, rtol=0, atol=1e-5, equal_nan=True)
        assert np.nanmax(np.abs(new)) > 1e-3  # the ablations did something


def test_cached_prefix_leaves_no_hooks_and_a_single_prompt_works(tokenizer):
    model, tok = make_model("gemma3", tokenizer)
    a = get_adapter(model)
    prompts = _prompts(tok)[:1]  # batch of one: every tensor of batch size 1 is repeated
    new, _ = behavioural_drops(a, tok, prompts, cached_prefix=True)
    old, _ = behavioural_drops(a, tok, prompts, cached_prefix=False)
    np.testing.assert_allclose(new, old, rtol=0, atol=1e-5)
    for layer in a.layers():
        assert not layer._forward_pre_hooks
    for i in range(a.dims.n_layers):
        assert not a.o_proj(i)._forward_pre_hooks


def test_cached_prefix_refuses_a_replay_that_differs(tokenizer, monkeypatch):
    """The replay is checked against the model's own clean pass: a head it does not reproduce
    (here a soft-cap the Llama head does not apply) raises instead of giving wrong drops."""
    model, tok = make_model("llama", tokenizer)
    a = get_adapter(model)
    monkeypatch.setattr(type(a), "logit_softcap", property(lambda self: 0.5))
    with pytest.raises(RuntimeError, match="cached_prefix=False"):
        behavioural_drops(a, tok, _prompts(tok), cached_prefix=True)
    behavioural_drops(a, tok, _prompts(tok), cached_prefix=False)  # the full-forward path still works
