"""The zoo's cycles table from the models' cycles summaries."""

import json

import pandas as pd

from successor_heads.zoo.cycles_table import COLUMNS, run


def _summary(model: str, rotation: float) -> dict:
    row = {"rotation_score": rotation, "rank": 1, "n_heads_ranked": 8, "shift_steps": 1.0, "consistency": 0.9,
           "purity": 0.95, "best_offset": 1, "successor_score": 1.0,
           "causal_check": {"score": 1.0, "circle_only_score": 0.5, "chance": 1 / 7, "move_rate": 0.4,
                            "move_rate_chance": 1 / 7}}
    return {"model": model, "successor_head": "L1H0",
            "successor": {"resid/days_spaced_title": row, "mlp0/days_spaced_title": dict(row, rank=3)}}


def test_one_row_per_model_mode_and_task(tmp_path):
    paths = []
    for m, r in (("a", 0.9), ("b", -0.2)):
        p = tmp_path / m / "cycles_summary.json"
        p.parent.mkdir()
        p.write_text(json.dumps(_summary(m, r)))
        paths.append(p)
    run(paths, tmp_path / "zoo" / "cycles_rotation.csv")
    df = pd.read_csv(tmp_path / "zoo" / "cycles_rotation.csv")
    assert list(df.columns) == list(COLUMNS) and len(df) == 4
    assert df.model.tolist() == ["a", "a", "b", "b"]
    assert df.set_index(["model", "mode"]).loc[("b", "resid"), "rotation_score"] == -0.2
    assert df.set_index(["model", "mode"]).loc[("a", "mlp0"), "rank"] == 3
    assert (df.circle_only_score == 0.5).all()
