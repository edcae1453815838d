"""Successor scores: a head planted as a perfect successor scores 1.0, a copying head 0.0,
and the batched scorer equals the per-head reference loop."""

import numpy as np
import pytest
import torch

from successor_heads.adapters import get_adapter
from successor_heads.effective_embedding import effective_embeddings, neutral_prefix
from successor_heads.scores import TaskIndex, successor_scores, successor_scores_loop
from successor_heads.tiny import FAMILIES, make_model, plant_head

DAYS = [" Monday", " Tuesday", " Wednesday", " Thursday", " Friday", " Saturday", " Sunday"]


def _days_task(tok):
    ids = [tok(s, add_special_tokens=False)["input_ids"] for s in DAYS]
    assert all(len(i) == 1 for i in ids), "tiny tokenizer must keep days as single tokens"
    ids = [i[0] for i in ids]
    return TaskIndex("days_spaced", ids, [(k + 1) % 7 for k in range(7)])


def _plant(adapter, layer, head, x_TM, token_ids, target_TT):
    """Plant W_V W_O so that x_t W_V W_O W_U[:, tokens] = target (exactly; rank <= 7 <= d_head)."""
    U = adapter.W_U[:, token_ids].detach()
    M = torch.linalg.pinv(x_TM) @ target_TT @ torch.linalg.pinv(U)
    Uu, S, Vh = torch.linalg.svd(M)
    dh = adapter.dims.d_head
    plant_head(adapter.model, layer, head, Uu[:, :dh] * S[:dh], Vh[:dh])


@pytest.mark.parametrize("family", FAMILIES)
def test_planted_successor_scores_one_and_copier_zero(family, tokenizer):
    model, tok = make_model(family, tokenizer)
    a = get_adapter(model)
    task = _days_task(tok)
    ids = torch.tensor(task.token_ids)
    x = effective_embeddings(a, ids, "mlp0", "raw")
    succ = torch.zeros(7, 7)
    succ[torch.arange(7), torch.tensor(task.successor)] = 10.0
    _plant(a, 1, 0, x[1], ids, succ)
    copy_head = 2  # a different KV group from head 0 in GQA models (n_heads=4, n_kv=2)
    _plant(a, 1, copy_head, x[1], ids, 10.0 * torch.eye(7))
    res = successor_scores(a, x, ids, [task], "raw")
    assert res.per_task[1, 0, 0] == 1.0
    assert res.per_task[1, copy_head, 0] == 0.0
    assert res.overall[1, 0] == 1.0


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
    fast = successor_scores(a, x, ids, tasks, norms, batch_heads=3)
    ref = successor_scores_loop(a, x, ids, tasks, norms)
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

    from successor_heads.stages.scores import candidate_heads

    a = np.zeros((3, 4))
    a[2, 1], a[0, 3], a[1, 1] = 0.9, 0.8, 0.1
    b = np.zeros((3, 4))
    b[1, 2], b[2, 1] = 0.7, 0.6
    results = {"mlp0": SimpleNamespace(overall=a), "resid": SimpleNamespace(overall=b)}
    assert candidate_heads(results, 2) == [(0, 3), (1, 2), (2, 1)]
    assert candidate_heads(results, 1) == [(1, 2), (2, 1)]
