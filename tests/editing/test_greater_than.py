"""Greater-than bias from weights: 1.0 on a head planted to send each number to larger numbers,
0.0 on one planted to send it to smaller numbers, 0.5 for a uniform head."""

import numpy as np
import pytest
import torch

from successor_heads.core.adapters import get_adapter
from successor_heads.core.effective_embedding import mlp0_embeddings
from successor_heads.core.tasks import build_tasks
from successor_heads.editing import greater_than as gt
from tests.support.tiny import make_model, plant_head, randomize_biases

LAYER, HEAD = 1, 0


def _numbers(tok, n=6):
    tasks = build_tasks(tok, numbers_max=n, include_roman=False)
    task = next(t for t in tasks if t.name == "numbers_spaced")
    assert task.index == list(range(1, n + 1))
    return task


def _planted(tokenizer, favour):
    """Tiny Llama with L1H0 planted so x_n's logits are 20 on every token larger (or smaller)
    than n among numbers 1..6 (rank 5 <= d_head = 8), via M = pinv(X) P pinv(U), SVD to d_head."""
    model, tok = make_model("llama", tokenizer)
    a = get_adapter(model)
    task = _numbers(tok)
    ids = torch.tensor(task.token_ids)
    X = mlp0_embeddings(a, ids)  # [6, d_model]
    v = torch.tensor(task.index, dtype=torch.float)
    P = 20.0 * ((v[None, :] > v[:, None]) if favour == "larger" else (v[None, :] < v[:, None])).float()
    M = torch.linalg.pinv(X) @ P @ torch.linalg.pinv(a.W_U[:, ids].detach())
    Uu, S, Vh = torch.linalg.svd(M)
    dh = a.dims.d_head
    plant_head(model, LAYER, HEAD, Uu[:, :dh] * S[:dh], Vh[:dh])
    return a, task


@pytest.mark.parametrize("favour, expected", [("larger", 1.0), ("smaller", 0.0)])
def test_planted_head_greater_share(tokenizer, favour, expected):
    a, task = _planted(tokenizer, favour)
    df = gt.greater_than(a, LAYER, HEAD, [task], "raw", ("numbers",))
    s = gt.summarise(df)
    assert s["head"]["greater_share"] == pytest.approx(expected, abs=1e-6)
    assert s["head"]["n_tokens"] == 4  # 1 and 6 have an empty side
    assert s["head"]["chance"] == pytest.approx(0.5)
    head = df[(df.path == "head") & df.both_sides]
    sign = 1 if expected == 1.0 else -1
    assert (sign * (head.share_greater - head.share_smaller) > 0.99).all()
    assert set(df.path) == {"head", "mlp0"}


def test_shares_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, np.log(3.0)], [5.0, 5.0, 5.0]])
    s = gt.shares(logits, [1, 2, 3])
    np.testing.assert_allclose(s["share_greater"], [2 / 3, 3 / 5, 0.0])
    np.testing.assert_allclose(s["share_smaller"], [0.0, 1 / 5, 2 / 3])
    np.testing.assert_allclose(s["greater_share"], [1.0, 0.75, 0.0])
    np.testing.assert_array_equal(s["n_greater"], [2, 1, 0])
    with pytest.raises(ValueError, match="n_tokens"):
        gt.shares(torch.zeros(3, 2), [1, 2, 3])


def test_number_words_by_value_and_errors(tokenizer, tmp_path):
    model, tok = make_model("gpt2", tokenizer)
    a = get_adapter(model)
    tasks = build_tasks(tok, numbers_max=30, include_roman=False)
    df = gt.greater_than(a, 1, 1, tasks)
    words = df[df.task == "number_words_spaced_lower"]
    assert words.set_index("token").value[" seven"].iloc[0] == 7
    assert set(df.family) == {"numbers", "number_words"}
    gt.plot(df, "tiny", tmp_path / "gt.png")
    assert (tmp_path / "gt.png").stat().st_size > 0
    with pytest.raises(ValueError, match="numeric tokens"):
        gt.greater_than(a, 1, 1, [t for t in tasks if t.family == "days"])


def test_value_bias_moves_only_the_head_path(tokenizer):
    """With a nonzero value bias, ``value_bias=True`` changes the head path's shares (one logit
    vector added to every row); the MLP0 path, which has no head, is unchanged."""
    model, tok = make_model("gpt2", tokenizer)
    randomize_biases(model, 3.0, ("c_attn.bias",))
    a = get_adapter(model)
    tasks = build_tasks(tok, numbers_max=30, include_roman=False)
    off, on = gt.greater_than(a, 1, 1, tasks), gt.greater_than(a, 1, 1, tasks, value_bias=True)
    mlp_off, mlp_on = off[off.path == "mlp0"], on[on.path == "mlp0"]
    np.testing.assert_allclose(mlp_off.share_greater, mlp_on.share_greater)
    head_off, head_on = off[off.path == "head"], on[on.path == "head"]
    assert np.abs(head_off.share_greater.to_numpy() - head_on.share_greater.to_numpy()).max() > 1e-3
