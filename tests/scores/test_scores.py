"""Successor scores: a head planted as a perfect successor scores 1.0, a copying head 0.0,
and the batched scorer equals the per-head reference loop."""

import numpy as np
import pytest
import torch

from successor_heads.core.adapters import get_adapter
from successor_heads.core.effective_embedding import effective_embeddings, head_input_norm, neutral_prefix
from successor_heads.scores.successor_score import TaskIndex, chance_level, successor_scores, successor_scores_loop
from tests.support.tiny import FAMILIES, make_model, plant_readout

DAYS = [" Monday", " Tuesday", " Wednesday", " Thursday", " Friday", " Saturday", " Sunday"]


def _days_task(tok):
    ids = [tok(s, add_special_tokens=False)["input_ids"] for s in DAYS]
    assert all(len(i) == 1 for i in ids), "tiny tokenizer must keep days as single tokens"
    ids = [i[0] for i in ids]
    return TaskIndex("days_spaced", ids, [(k + 1) % 7 for k in range(7)])


def planted_scores(a, tok, copy_head: int):
    """Plant L1H0 as a perfect successor and L1H``copy_head`` as a copier on the days task
    (``mlp0``/``raw``); return the scores of both as ``(per_task [n_layers, n_heads, 1], overall)``."""
    task = _days_task(tok)
    ids = torch.tensor(task.token_ids)
    x = effective_embeddings(a, ids, "mlp0", "raw")
    succ = torch.zeros(7, 7)
    succ[torch.arange(7), torch.tensor(task.successor)] = 10.0
    plant_readout(a, 1, 0, x[1], ids, succ)
    plant_readout(a, 1, copy_head, x[1], ids, 10.0 * torch.eye(7))
    res = successor_scores(a, x, ids, [task], "raw")
    return res.per_task, res.overall


def test_planted_successor_scores_one_and_copier_zero(tiny_model):
    copy_head = 2  # a different KV group from head 0 in GQA models (n_heads=4, n_kv=2)
    per_task, overall = planted_scores(tiny_model.adapter, tiny_model.tok, copy_head)
    assert per_task[1, 0, 0] == 1.0
    assert per_task[1, copy_head, 0] == 0.0
    assert overall[1, 0] == 1.0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["mlp0", "resid"])
@pytest.mark.parametrize("norms", ["raw", "applied"])
def test_batched_equals_reference_loop(family, mode, norms, tokenizer):
    model, tok = make_model(family, tokenizer, seed=1)
    a = get_adapter(model)
    days = _days_task(tok)
    letters = [tok(c, add_special_tokens=False)["input_ids"][0] for c in "ABCDEFGHIJ"]
    tasks = [days, TaskIndex("letters", letters, list(range(1, 10)) + [-1])]
    ids = torch.tensor(sorted(set(days.token_ids + letters)))
    x = effective_embeddings(a, ids, mode, norms, prefix_ids=neutral_prefix(tok))
    inorm = head_input_norm(mode, norms)
    fast = successor_scores(a, x, ids, tasks, norms, batch_heads=3, input_norm=inorm)
    ref = successor_scores_loop(a, x, ids, tasks, norms, input_norm=inorm)
    np.testing.assert_array_equal(fast.per_task, ref.per_task)
    np.testing.assert_allclose(fast.overall, ref.overall)


def test_overall_is_pair_weighted_and_skips_held_out(tokenizer):
    model, tok = make_model("gpt2", tokenizer)
    a = get_adapter(model)
    days = _days_task(tok)
    held = TaskIndex("roman", days.token_ids[:3], [1, 2, -1], held_out=True)
    ids = torch.tensor(sorted(days.token_ids))
    x = effective_embeddings(a, ids, "mlp0", "raw")
    res = successor_scores(a, x, ids, [days, held], "raw")
    np.testing.assert_allclose(res.overall, res.per_task[..., 0])


def test_resid_mode_reads_hidden_states(tokenizer):
    model, tok = make_model("llama", tokenizer)
    a = get_adapter(model)
    ids = torch.tensor(_days_task(tok).token_ids)
    x = effective_embeddings(a, ids, "resid", prefix_ids=neutral_prefix(tok))
    hs = model(input_ids=torch.tensor([[tok.bos_token_id, int(ids[3])]]), output_hidden_states=True).hidden_states
    for layer in range(a.dims.n_layers):
        torch.testing.assert_close(x[layer, 3], hs[layer][0, -1])


def test_errors(tokenizer):
    model, tok = make_model("gpt2", tokenizer)
    a = get_adapter(model)
    with pytest.raises(ValueError, match="mode="):
        effective_embeddings(a, torch.tensor([1]), "bogus")
    with pytest.raises(ValueError, match="empty"):
        effective_embeddings(a, torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="norms="):
        a.ov(0, torch.zeros(1, a.dims.d_model), norms="folded")
    ids = torch.tensor([5, 6])
    x = effective_embeddings(a, ids)
    with pytest.raises(ValueError, match="not among token_ids"):
        successor_scores(a, x, ids, [TaskIndex("t", [5, 7], [1, -1])])
    with pytest.raises(ValueError, match="no task has"):
        successor_scores(a, x, ids, [TaskIndex("t", [5, 6], [-1, -1])])


def test_candidate_heads_are_each_modes_top_k():
    from types import SimpleNamespace

    from successor_heads.scores.stage import candidate_heads

    a = np.zeros((3, 4))
    a[2, 1], a[0, 3], a[1, 1] = 0.9, 0.8, 0.1
    b = np.zeros((3, 4))
    b[1, 2], b[2, 1] = 0.7, 0.6
    results = {"mlp0": SimpleNamespace(overall=a), "resid": SimpleNamespace(overall=b)}
    assert candidate_heads(results, 2) == [(0, 3), (1, 2), (2, 1)]
    assert candidate_heads(results, 1) == [(1, 2), (2, 1)]


def test_chance_level_is_the_best_constant_head():
    days = TaskIndex("days", list(range(7)), [(k + 1) % 7 for k in range(7)])
    assert chance_level([days]) == pytest.approx(1 / 7)
    # a constant head picking token 0 gets both pairs of a task whose successors are all 0
    same = TaskIndex("same", [10, 11, 12], [0, 0, -1])
    held = TaskIndex("roman", [20, 21], [1, -1], held_out=True)
    assert chance_level([days, same, held]) == pytest.approx((1 + 2) / (7 + 2))
    with pytest.raises(ValueError, match="no task has"):
        chance_level([TaskIndex("t", [1, 2], [-1, -1])])


def _bias_towards(adapter, layer, token, scale=1e3):
    """Set layer's value bias so that b_V W_O points along W_U[:, token] for every head (qwen2)."""
    W_O = adapter.W_O_layer(layer)[0]  # [n_heads, d_head, d_model]
    u = adapter.W_U[:, token].detach()
    attn = adapter.attn(layer)
    n_kv, dh = adapter.dims.n_kv_heads, adapter.dims.d_head
    group = adapter.dims.n_heads // n_kv
    b = torch.stack([W_O[k * group] @ u for k in range(n_kv)])  # [n_kv, d_head]
    with torch.no_grad():
        attn.v_proj.bias.copy_(scale * b.reshape(-1) / b.norm())


def test_value_bias_is_left_out_by_default(tokenizer):
    """The paper's OV circuit has no value bias: a huge b_V (the same vector for every token)
    must not change the default scores, and pulls every row to one token with value_bias=True."""
    model, tok = make_model("qwen2", tokenizer, seed=2)
    a = get_adapter(model)
    task = _days_task(tok)
    ids = torch.tensor(task.token_ids)
    x = effective_embeddings(a, ids, "mlp0", "raw")
    before = successor_scores(a, x, ids, [task]).per_task
    _bias_towards(a, 1, task.token_ids[3])
    after = successor_scores(a, x, ids, [task]).per_task
    np.testing.assert_array_equal(after, before)
    biased = successor_scores(a, x, ids, [task], value_bias=True)
    np.testing.assert_allclose(biased.per_task[1, :, 0], 1 / 7)  # every head picks token 3: chance
    ref = successor_scores_loop(a, x, ids, [task], value_bias=True)
    np.testing.assert_array_equal(biased.per_task, ref.per_task)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_resid_mode_applies_the_heads_input_norm(family, tokenizer):
    """resid vectors are read through the layer's attention input norm (what the head sees),
    whatever ``norms``: scoring with raw residual vectors differs from it."""
    model, tok = make_model(family, tokenizer, seed=3)
    a = get_adapter(model)
    for layer in range(a.dims.n_layers):  # a norm weight far from 1 makes the norm matter
        with torch.no_grad():
            a.attn_in_norm(layer).weight.copy_(torch.linspace(-3, 3, a.dims.d_model))
    x = torch.randn(5, a.dims.d_model)
    expect = a.ov(1, a.run_f32(a.attn_in_norm(1), x), "raw")
    torch.testing.assert_close(a.ov(1, x, "raw", input_norm=head_input_norm("resid", "raw")), expect)
    assert not torch.allclose(a.ov(1, x, "raw"), expect, atol=1e-3)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_scores_are_float32_whatever_the_model_dtype(family, tokenizer):
    """A bf16 model scores exactly like a float32 copy of its (bf16-rounded) weights."""
    model, tok = make_model(family, tokenizer, seed=4)
    model16 = model.to(torch.bfloat16)
    a16 = get_adapter(model16)
    import copy
    a32 = get_adapter(copy.deepcopy(model16).float())
    days = _days_task(tok)
    ids = torch.tensor(days.token_ids)
    for norms in ("raw", "applied"):
        x16 = effective_embeddings(a16, ids, "mlp0", norms)
        x32 = effective_embeddings(a32, ids, "mlp0", norms)
        assert x16.dtype == torch.float32
        torch.testing.assert_close(x16, x32, rtol=1e-5, atol=1e-5)
        out16 = a16.unembed(a16.ov(1, x16[1], norms), norms)
        out32 = a32.unembed(a32.ov(1, x32[1], norms), norms)
        assert out16.dtype == torch.float32
        torch.testing.assert_close(out16, out32, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(successor_scores(a16, x16, ids, [days], norms).per_task,
                                      successor_scores(a32, x32, ids, [days], norms).per_task)
