"""The cycles stage on tiny models with planted heads."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from successor_heads.core.adapters import get_adapter
from successor_heads.core.effective_embedding import effective_embeddings
from successor_heads.core.tasks import build_tasks
from successor_heads.cycles.maps import causal_check, head_inputs, layer_task_logits, number_spectrum
from successor_heads.cycles.measure import CIRCLE_COLUMNS, ROTATION_COLUMNS, measure_cycles
from successor_heads.cycles.metrics import circle_fit
from tests.support.tiny import make_model, plant_readout

TASK = "days_spaced_title"


def _days(tok):
    t = {t.name: t for t in build_tasks(tok)}[TASK]
    assert len(t.token_ids) == 7, "the tiny tokenizer keeps the seven days as single tokens"
    return t


def _planted(tokenizer):
    """A tiny Llama with, on the days (``mlp0``, raw norms): L1H0 a one-step successor, L1H2 a
    copier, L0H0 a shift-by-two head and L0H2 an anti-copier (own logit strongly negative)."""
    model, tok = make_model("llama", tokenizer)
    a = get_adapter(model)
    t = _days(tok)
    ids = torch.tensor(t.token_ids)
    x = effective_embeddings(a, ids, "mlp0", "raw")[0]
    ar = torch.arange(7)
    one_hot = lambda shift: torch.zeros(7, 7).index_put_((ar, (ar + shift) % 7), torch.tensor(10.0))  # noqa: E731
    plant_readout(a, 1, 0, x, ids, one_hot(1))
    plant_readout(a, 1, 2, x, ids, one_hot(0))
    plant_readout(a, 0, 0, x, ids, one_hot(2))
    plant_readout(a, 0, 2, x, ids, -one_hot(0))
    return a, tok


def _row(df, head):
    return df[(df["head"] == head)].iloc[0]


def test_planted_heads_are_told_apart(tokenizer):
    a, tok = _planted(tokenizer)
    res = measure_cycles(a, tok, build_tasks(tok), periods={TASK: 7, "no_such_task": 5}, modes=["mlp0"], norms="raw",
                         n_permutations=50, seed=0, prefix_ids=[], successor_head=(1, 0), successor_scores={},
                         model_name="tiny")
    assert list(res.circles.columns) == list(CIRCLE_COLUMNS) and list(res.rotation.columns) == list(ROTATION_COLUMNS)
    assert "no_such_task" in res.skipped
    rot = res.rotation
    succ, copy, two, anti = (_row(rot, h) for h in ("L1H0", "L1H2", "L0H0", "L0H2"))
    assert succ.rotation_score > 0.9 and abs(succ.shift_steps - 1) < 0.25 and succ.in_plane_accuracy == 1
    assert succ["rank"] == 1 and succ.best_offset == 1
    assert copy.rotation_score < 0.5 and anti.rotation_score < 0.5
    assert two.rotation_score < 0.8 and abs(two.shift_steps - 2) < 0.3 and two.best_offset == 2
    # mlp0 raw: the head input is the same at every layer, so one input circle row (+ the W_U one)
    assert sorted(res.circles["mode"]) == ["W_U", "mlp0"]
    info = res.successor["mlp0", TASK]
    assert info["profile"][1] == max(info["profile"][1:])
    assert info["causal_check"]["score"] == 1.0 and info["causal_check"]["chance"] == pytest.approx(1 / 7)
    assert res.rotation_grid["mlp0", TASK].shape == (2, 4)


def test_causal_check_on_a_circle_is_exact(tokenizer):
    """Inputs on a circle and a head that rotates it by one step: the circle alone keeps the
    score, and turning the inputs by one step moves every prediction by one item."""
    model, tok = make_model("llama", tokenizer)
    a = get_adapter(model)
    t = _days(tok)
    k = np.arange(7)
    theta = 2 * np.pi * k / 7
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(2, a.dims.d_model, generator=g)
    X = (1.0 + torch.randn(a.dims.d_model, generator=g)) + torch.tensor(np.stack([np.cos(theta), np.sin(theta)], 1),
                                                                         dtype=torch.float32) @ basis
    target = 10 * torch.tensor(np.cos(theta[None, :] - theta[:, None] - 2 * np.pi / 7), dtype=torch.float32)
    plant_readout(a, 1, 0, X, torch.tensor(t.token_ids), target)
    fit = circle_fit(X.double().numpy(), k, 7, n_permutations=0)
    assert fit.r2 == pytest.approx(1.0)
    cc = causal_check(a, 1, 0, head_inputs(a, 1, X, False), fit, k, 7, t.token_ids, np.array(t.successor), norms="raw")
    assert cc["score"] == 1.0 and cc["circle_only_score"] == 1.0 and cc["move_rate"] == 1.0
    logits = layer_task_logits(a, 1, X, t.token_ids, norms="raw", heads=[0])[0]
    np.testing.assert_allclose(logits, target.numpy(), atol=1e-3)


def test_number_spectrum_with_its_baseline_or_not_applicable(tokenizer):
    """The tiny tokenizer (trained on 1..200) has 0..99 as single tokens but not 0..999."""
    model, tok = make_model("llama", tokenizer)
    a = get_adapter(model)
    out = number_spectrum(a, tok, norms="raw")
    assert out["applicable"] is True and out["baseline"].startswith("token id rank")
    assert len(out["periods"]) == 50 and out["periods"][9] == 10.0
    for key in ("share_mlp0", "share_W_U", "share_token_rank"):
        assert sum(out[key]) == pytest.approx(1.0)
    none = number_spectrum(a, tok, norms="raw", n=1000)
    assert none["applicable"] is False and "0..999" in none["reason"]


def test_stage_writes_its_outputs_with_provenance(tmp_path):
    from successor_heads.config import build
    from successor_heads.core.handoff import StageInputError
    from successor_heads.core.h5io import write_h5
    from successor_heads.cycles import stage
    from successor_heads.models.fetch import fetch_model
    from tests.support.tiny import save_tiny_model

    src = save_tiny_model("llama", tmp_path / "src")
    # 50 permutations per circle fit's null (the default 1000 only tightens the p-values): the
    # summary records the count the run used
    cfg = build({"model": {"name": "tiny", "family": "llama", "source": {"kind": "local", "path": str(src)}},
                 "cycles": {"n_permutations": 50}})
    root = tmp_path / "results" / "tiny"
    ins = {"manifest": str(root / "model" / "manifest.json"), "scores": str(root / "successor_scores.h5")}
    names = {"circles": "circles.csv", "rotation": "rotation.csv", "summary": "cycles_summary.json",
             "circles_fig": "circles.png", "heatmap": "rotation_heatmap.png"}
    outs = {k: str(root / "cycles" / v) for k, v in names.items()}
    with pytest.raises(StageInputError, match="successor-heads scores model=tiny"):
        stage.run(cfg, ins, outs, progress=False)
    fetch_model(Path(ins["manifest"]).parent, **cfg.model.fetch_args())
    overall = np.zeros((2, 4), dtype=np.float32)
    overall[1, 2] = 0.9
    per_task = np.random.default_rng(0).random((2, 4, 1)).astype(np.float32)
    write_h5(ins["scores"], {"overall_resid": overall, "scores_resid": per_task, "task_names": [TASK]},
             {"default_mode": "resid"})
    summary = stage.run(cfg, ins, outs, progress=False)
    for name, path in outs.items():
        assert Path(path).is_file(), name
    assert summary["successor_head"] == "L1H2"
    rot = pd.read_csv(outs["rotation"])
    assert list(rot.columns) == list(ROTATION_COLUMNS)
    days = rot[(rot["mode"] == "resid") & (rot["task"] == TASK)].set_index("head")
    assert days.loc["L0H3", "successor_score"] == pytest.approx(per_task[0, 3, 0], abs=1e-4)
    assert rot[rot["task"] != TASK]["successor_score"].isna().all()  # tasks the scores file lacks
    assert sorted(days["rank"]) == list(range(1, 9))
    circles = pd.read_csv(outs["circles"])
    assert list(circles.columns) == list(CIRCLE_COLUMNS)
    assert (circles[circles["mode"] == "resid"].groupby("task").size() == 2).all()  # one row per layer
    js = json.loads(Path(outs["summary"]).read_text())
    assert js["provenance"]["model"] == "tiny" and js["value_bias"] is False and js["n_permutations"] == 50
    assert f"resid/{TASK}" in js["successor"] and "causal_check" in js["successor"][f"resid/{TASK}"]
