"""Over-training table and figure: checkpoints in step order, the head top at the last checkpoint
tracked at every step, behavioural agreement carried over (docs/DESIGN.md, "Model specs")."""

import json

import numpy as np
import pandas as pd
import pytest

from successor_heads.core.h5io import write_h5
from successor_heads.zoo import over_training


def _checkpoint(tmp, model, overall, behaviour_head, mode="resid"):
    l, h = np.unravel_index(np.argmax(overall), overall.shape)
    top = f"L{l}H{h}"
    summary = {"model": model, "default_mode": mode, f"top_head_{mode}": top, f"top_score_{mode}": float(overall[l, h]),
               "chance_level": 0.1, "top_behaviour_head": behaviour_head, f"agrees_{mode}": top == behaviour_head}
    sp, hp = tmp / f"{model}.json", tmp / f"{model}.h5"
    sp.write_text(json.dumps(summary))
    write_h5(hp, {f"overall_{mode}": overall.astype(np.float32)})
    return str(sp), str(hp)


def test_tracks_the_last_top_head_across_steps(tmp_path):
    grids = {  # step -> overall [2 layers, 2 heads]; L1H0 grows into the top head
        1000: np.array([[0.3, 0.1], [0.2, 0.0]]),
        10: np.array([[0.1, 0.2], [0.05, 0.0]]),
        143000: np.array([[0.3, 0.1], [0.9, 0.0]]),
    }
    members, summaries, h5s = [], [], []
    for step, grid in grids.items():  # given out of order: the table sorts by step
        s, h = _checkpoint(tmp_path, f"run@step{step}", grid, "L1H0" if step > 10 else "L0H1")
        members.append({"sweep": "run", "model": f"run@step{step}", "revision": f"step{step}", "step": step})
        summaries.append(s)
        h5s.append(h)
    csv, fig = tmp_path / "over_training.csv", tmp_path / "over_training.png"
    df = over_training.run(members, summaries, h5s, csv, fig)
    assert list(df.step) == [10, 1000, 143000]
    assert list(df.best_head) == ["L0H1", "L0H0", "L1H0"]
    assert set(df.tracked_head) == {"L1H0"}
    np.testing.assert_allclose(df.tracked_score, [0.05, 0.2, 0.9], rtol=1e-6)
    assert list(df.agrees) == [True, False, True]
    assert list(df.tracked_agrees) == [False, True, True]
    assert fig.stat().st_size > 0
    back = pd.read_csv(csv)
    assert list(back.columns[:4]) == ["sweep", "step", "revision", "model"] and len(back) == 3


def test_two_sweeps_two_panels_and_mismatched_inputs(tmp_path):
    members, summaries, h5s = [], [], []
    for sweep in ("a", "b"):
        for step in (0, 1):
            s, h = _checkpoint(tmp_path, f"{sweep}{step}", np.random.default_rng(step).random((2, 3)), "L0H0")
            members.append({"sweep": sweep, "model": f"{sweep}{step}", "revision": str(step), "step": step})
            summaries.append(s)
            h5s.append(h)
    df = over_training.run(members, summaries, h5s, tmp_path / "t.csv", tmp_path / "t.png")
    assert list(df.sweep) == ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match="3 members"):
        over_training.table(members[:3], summaries, h5s)
