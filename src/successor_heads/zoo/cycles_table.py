"""The zoo's table of the successor head as a map of each circle: one row per model, mode and
task from each model's ``cycles/cycles_summary.json`` (ours; docs/DESIGN.md, "Circular features").
It reads the summaries only, never the cycles package."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from successor_heads.core.writers import SIGNIFICANT5, write_csv

#: Columns of ``cycles_rotation.csv``, in order.
COLUMNS = ("model", "successor_head", "mode", "task", "rotation_score", "rank", "n_heads_ranked", "shift_steps",
           "consistency", "purity", "best_offset", "successor_score", "score", "circle_only_score", "chance",
           "move_rate", "move_rate_chance")


def cycles_rows(summary: dict) -> list[dict]:
    """One row per ``mode/task`` of a ``cycles_summary.json`` dict (its ``successor`` entries).
    Raises KeyError for a summary without ``model``, ``successor_head`` or ``successor``."""
    rows = []
    for key, s in summary["successor"].items():
        mode, task = key.split("/", 1)
        cc = s.get("causal_check", {})
        rows.append({"model": summary["model"], "successor_head": summary["successor_head"], "mode": mode,
                     "task": task, **{c: s.get(c) for c in COLUMNS[4:12]},
                     **{c: cc.get(c) for c in COLUMNS[12:]}})
    return rows


def run(summaries: Iterable[str | os.PathLike], csv: str | os.PathLike) -> pd.DataFrame:
    """Write ``csv`` from the models' ``cycles_summary.json`` files (zoo order kept).

    Raises: FileNotFoundError for a missing summary; KeyError for one that lacks the keys above."""
    rows = [r for p in summaries for r in cycles_rows(json.loads(Path(p).read_text()))]
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    write_csv(df, csv, SIGNIFICANT5)
    return df
