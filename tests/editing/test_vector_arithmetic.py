"""Vector arithmetic (paper Section 3.2, Figure 5): with known feature directions and a head
planted to map f_r to the successor of the item with residue r, the edit x - a f_i + a f_j
moves the head's top task token to the successor of the target; wrong directions do not."""

import h5py
import numpy as np
import pytest
import torch

from successor_heads.editing import vector_arithmetic as va
from successor_heads.editing.summary import vector_arithmetic_table
from successor_heads.core.adapters import get_adapter
from successor_heads.core.h5io import write_h5
from successor_heads.core.tasks import build_tasks
from tests.support.tiny import make_model, plant_head

LAYER, HEAD = 1, 0


def _task(tasks, name):
    return next(t for t in tasks if t.name == name)


def _plant(adapter, X_NM, target_NT, token_ids):
    """Plant W_V W_O so that X_NM W_V W_O W_U[:, token_ids] = target_NT (rank <= d_head)."""
    U = adapter.W_U[:, token_ids].detach()
    M = torch.linalg.pinv(X_NM) @ target_NT @ torch.linalg.pinv(U)
    Uu, S, Vh = torch.linalg.svd(M)
    dh = adapter.dims.d_head
    assert int((S > 1e-4 * S[0]).sum()) <= dh, "planted map must fit in one head"
    plant_head(adapter.model, LAYER, HEAD, Uu[:, :dh] * S[:dh], Vh[:dh])


@pytest.fixture(scope="module")
def planted(tokenizer):
    """A tiny Llama whose head L1H0 maps f_r (r = 1..8) to the successor of number r, and a
    numbers task 1..9 (mod 10, values = positions = numbers)."""
    model, tok = make_model("llama", tokenizer)
    a = get_adapter(model)
    task = _task(build_tasks(tok, numbers_max=9, include_roman=False), "numbers_spaced")
    assert task.index == list(range(1, 10))
    torch.manual_seed(0)
    F = torch.linalg.qr(torch.randn(a.dims.d_model, 10))[0].T  # [10, d_model] orthonormal rows
    P = torch.zeros(10, len(task.tokens))
    for r in range(1, 9):  # f_r -> token r+1 (position r in the task); f_0, f_9 -> nothing
        P[r, r] = 20.0
    _plant(a, F, P, torch.tensor(task.token_ids))
    return a, task, F


def test_edit_moves_head_output_to_successor_of_target(planted):
    a, task, F = planted
    x = 3.0 * F[[v % 10 for v in task.index]]  # x_v carries f_{v mod 10} only
    df = va.edit_success(a, LAYER, HEAD, task, x, F, scales=[0.0, 1.0], norms="raw")
    at1, at0 = df[df.scale == 1.0], df[df.scale == 0.0]
    # sources 1..9, targets j in 1..8 (9 has no successor, 0 is no token), j != i
    assert at1.n_pairs.sum() == 9 * 8 - 8
    assert at1.success_rate.min() == 1.0  # x - 3 f_i + 3 f_j = 3 f_j -> successor of j
    # unedited: the head predicts the successor of x itself (x = 9 maps to ~0 logits: skip it)
    at0 = at0[at0.i <= 8]
    assert at0.n_success.sum() == 0 and at0.n_source_successor.sum() == at0.n_pairs.sum()


def test_wrong_directions_fail(planted):
    a, task, F = planted
    x = 3.0 * F[[v % 10 for v in task.index]]
    wrong = F[torch.tensor([0, 2, 3, 4, 5, 6, 7, 8, 9, 1])]  # every residue mapped to another's feature
    df = va.edit_success(a, LAYER, HEAD, task, x, wrong, scales=[1.0], norms="raw")
    assert df.n_success.sum() / df.n_pairs.sum() < 0.3


def test_nan_directions_skip_pairs(planted):
    a, task, F = planted
    x = 3.0 * F[[v % 10 for v in task.index]]
    Fn = F.clone()
    Fn[5] = float("nan")
    df = va.edit_success(a, LAYER, HEAD, task, x, Fn, scales=[1.0], norms="raw")
    assert not ((df.i == 5) | (df.j == 5)).any()
    assert df.success_rate.min() == 1.0


def test_edit_pairs_definition(tokenizer):
    tasks = build_tasks(tokenizer, numbers_max=200, include_roman=False)
    nums = _task(tasks, "numbers_spaced")
    p = va.edit_pairs(nums, 10)
    k23 = nums.index.index(23)
    row = p[(p.src == k23) & (p.j == 7)].iloc[0]
    assert nums.tokens[row.tgt] == " 27" and nums.tokens[row.succ] == " 28" and row.i == 3
    assert not ((p.src == k23) & (p.j == 3)).any()  # j == i skipped
    # months, mod 12 with positions: December is residue 0; the cycle is the whole year
    months = _task(tasks, "months_spaced_title")
    p = va.edit_pairs(months, 12, "position")
    dec = months.tokens.index(" December")
    row = p[(p.src == dec) & (p.j == 1)].iloc[0]
    assert row.i == 0 and months.tokens[row.tgt] == " January" and months.tokens[row.succ] == " February"
    p = va.edit_pairs(months, 12, "index")  # January = 0
    row = p[(p.src == dec) & (p.j == 0)].iloc[0]
    assert row.i == 11 and months.tokens[row.succ] == " February"
    days = _task(tasks, "days_spaced_title")
    p = va.edit_pairs(days, 7)
    sun = days.tokens.index(" Sunday")
    row = p[(p.src == sun) & (p.j == 6)].iloc[0]  # Saturday -> Sunday
    assert days.tokens[row.succ] == " Sunday"
    with pytest.raises(ValueError, match="modulus"):
        va.edit_pairs(days, 1)
    with pytest.raises(ValueError, match="residue_of"):
        va.edit_pairs(days, 7, "value")


def test_edit_vectors_scale_refs():
    x = torch.tensor([[3.0, -2.0, 0.0]])
    fi, fj = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    torch.testing.assert_close(va.edit_vectors(x, fi, fj, 1.0, "projection"), torch.tensor([[3.0, -4.0, 2.0]]))
    n = float(x.norm())
    torch.testing.assert_close(va.edit_vectors(x, fi, fj, 0.5, "norm"), torch.tensor([[3.0, -2 - n / 2, n / 2]]))
    torch.testing.assert_close(va.edit_vectors(x, fi, fj, 0.0), x)
    with pytest.raises(ValueError, match="scale_ref"):
        va.edit_vectors(x, fi, fj, 1.0, "absolute")


def test_vector_arithmetic_on_real_embeddings_runs_every_family(tokenizer):
    model, tok = make_model("gpt2", tokenizer)
    a = get_adapter(model)
    tasks = build_tasks(tok, numbers_max=40, include_roman=False)
    torch.manual_seed(1)
    dirs = {(s, m): torch.nn.functional.normalize(torch.randn(m, a.dims.d_model), dim=-1)
            for s in ("sae", "probe") for m in (10, 7, 12)}
    df = va.vector_arithmetic(a, 1, 2, tasks, dirs, [0.0, 1.0, 2.0])
    assert set(df.family) >= {"numbers", "number_words", "days", "months", "letters"}
    assert set(df.scale) == {0.0, 1.0, 2.0} and set(df.source) == {"sae", "probe"}
    assert df.numbers_20_29.any()
    assert ((df.success_rate >= 0) & (df.success_rate <= 1)).all()
    # days and months are edited with their own modulus (ours) and the paper's mod 10
    # (before editing.paper_modulus: days {7} and months {12} only)
    assert set(df[df.family == "days"].modulus) == {7, 10}
    assert set(df[df.family == "months"].modulus) == {10, 12}
    assert set(df[df.family == "numbers"].modulus) == {10}
    s = vector_arithmetic_table(df, 1.0)
    assert s[s.group == "numbers_20_29"].paper.iloc[0] == 0.89
    months = s[(s.group == "months") & (s.source == "sae")].set_index("modulus")
    assert months.paper[10] == 0.53 and months.paper[12] == va.PAST_PAPER
    t = va.sweep_table(df)
    assert set(t.group) >= {"numbers", "numbers_20_29", "months"} and "modulus" in t.columns
    assert set(t[t.group == "months"].modulus) == {10, 12}
    for table in (va.per_task(df), va.per_residue(df, 1.0)):
        assert set(table[table.family == "days"].modulus) == {7, 10}


def test_task_moduli_and_paper_modulus_off(tokenizer):
    assert va.task_moduli("months", va.DEFAULT_MODULI) == [10, 12]
    assert va.task_moduli("numbers", va.DEFAULT_MODULI) == [10]
    assert va.task_moduli("days", va.DEFAULT_MODULI, paper_modulus=0) == [7]
    assert va.task_moduli("days", {"days": 0}) == [] and va.task_moduli("roman", va.DEFAULT_MODULI) == []
    assert va.group_key("months", 10) == "months_mod10"
    model, tok = make_model("gpt2", tokenizer)
    a = get_adapter(model)
    tasks = [t for t in build_tasks(tok, numbers_max=12, include_roman=False)
             if t.family in ("days", "months")]
    dirs = {("sae", m): torch.nn.functional.normalize(torch.randn(m, a.dims.d_model), dim=-1) for m in (7, 10, 12)}
    off = va.vector_arithmetic(a, 1, 2, tasks, dirs, [1.0], paper_modulus=0)
    assert set(zip(off.family, off.modulus)) == {("days", 7), ("months", 12)}
    on = va.vector_arithmetic(a, 1, 2, tasks, dirs, [1.0])
    assert set(zip(on.family, on.modulus)) == {("days", 7), ("days", 10), ("months", 10), ("months", 12)}
    # mod 10 on months (positions 1-12): October-December form cycle 1 with residues 0-2
    m10 = on[(on.family == "months") & (on.modulus == 10)]
    assert set(m10.i) == set(range(10)) and set(m10[m10.i == 0].j) == {1, 2}
    # days 1-7 with mod 10: residues 8, 9 and 0 hold no day
    d10 = on[(on.family == "days") & (on.modulus == 10)]
    assert set(d10.i) == set(d10.j) == set(range(1, 8))
    # without mod-10 directions the mod-10 runs are simply absent
    only = va.vector_arithmetic(a, 1, 2, tasks, {k: v for k, v in dirs.items() if k[1] != 10}, [1.0])
    assert set(only.modulus) == {7, 12}


def test_load_directions(tmp_path):
    with pytest.raises(ValueError, match="features stage"):
        va.load_directions(tmp_path / "nope.h5", 4)
    f = tmp_path / "d.h5"
    write_h5(f, {"sae_mod10": np.ones((10, 4)), "probe_mod7": np.ones((7, 4)), "other": np.ones(3)},
             {"successor_head": "L1H0", "norms": "raw"})
    dirs, attrs = va.load_directions(f, 4)
    assert set(dirs) == {("sae", 10), ("probe", 7)} and attrs["successor_head"] == "L1H0"
    with pytest.raises(ValueError, match="expected"):
        va.load_directions(f, 5)
    g = tmp_path / "half.h5"
    with h5py.File(g, "w") as h:  # no completion marker: an interrupted write
        h["sae_mod10"] = np.ones((10, 4))
    with pytest.raises(ValueError, match="features stage"):
        va.load_directions(g, 4)
