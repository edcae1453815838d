"""Successor heads over training: the scores of a sweep's checkpoints against training step.

Implements docs/DESIGN.md, "Model specs" (checkpoint sweeps), following the question of Tigges et
al. (2024), "LLM circuit analyses are consistent across training and scale", with the paper's
full method at every checkpoint. For each sweep, one row per checkpoint: the best successor
score at that step (the top head of the scores file's default mode), the score of the *tracked*
head (the head that is top at the last checkpoint, read at every step), and whether each agrees
with the behavioural check's top head (``agrees_<mode>``, ``top_behaviour_head`` of
``scores_summary.json``; docs/DESIGN.md, "Behavioural check").
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from successor_heads.core import plots
from successor_heads.core.h5io import read_h5
from successor_heads.core.writers import FIXED4, write_csv

_HEAD = re.compile(r"^L(\d+)H(\d+)$")


def table(members: Sequence[dict], summaries: Sequence[str | Path], scores_h5: Sequence[str | Path]) -> pd.DataFrame:
    """One row per checkpoint of every sweep, in step order within each sweep.

    Args:
        members: per checkpoint ``{"sweep", "model", "revision", "step"}``
            (:func:`successor_heads.core.model_spec.sweeps`, flattened).
        summaries: each checkpoint's ``scores_summary.json``, in the order of ``members``.
        scores_h5: each checkpoint's ``successor_scores.h5`` (``overall_{mode}``
            ``[n_layers, n_heads]``), in the same order.

    Returns:
        Columns ``sweep, step, revision, model, mode, best_head, best_score, tracked_head,
        tracked_score, chance_level, top_behaviour_head, agrees, tracked_agrees``; scores are
        successor scores in [0, 1] (docs/DESIGN.md, "Successor score and chance level"),
        ``agrees``: the best head is the behavioural top head, ``tracked_agrees``: the tracked
        head is. ``tracked_score`` is NaN where a checkpoint lacks the tracked head.

    Raises:
        ValueError: the three sequences differ in length.
        FileNotFoundError, json.JSONDecodeError: a missing or broken summary;
            :class:`successor_heads.core.h5io.IncompleteOutputError`: a missing or unfinished scores file.
    """
    if not len(members) == len(summaries) == len(scores_h5):
        raise ValueError(f"{len(members)} members, {len(summaries)} summaries, {len(scores_h5)} scores files")
    rows = []
    for m, sp, hp in zip(members, summaries, scores_h5):
        s = json.loads(Path(sp).read_text())
        d = s["default_mode"]
        rows.append({"sweep": m["sweep"], "step": int(m["step"]), "revision": m["revision"], "model": m["model"],
                     "mode": d, "best_head": s[f"top_head_{d}"], "best_score": s[f"top_score_{d}"],
                     "chance_level": s.get("chance_level"), "top_behaviour_head": s["top_behaviour_head"],
                     "agrees": bool(s[f"agrees_{d}"]), "_h5": str(hp)})
    df = pd.DataFrame(rows).sort_values(["sweep", "step"], kind="stable").reset_index(drop=True)
    df["tracked_head"], df["tracked_score"] = "", np.nan
    for _, idx in df.groupby("sweep", sort=False).groups.items():
        last = df.loc[idx[-1]]
        layer, head = map(int, _HEAD.match(last.best_head).groups())
        for i in idx:
            overall = read_h5(df.at[i, "_h5"])[0][f"overall_{last['mode']}"]
            df.at[i, "tracked_head"] = last.best_head
            if layer < overall.shape[0] and head < overall.shape[1]:
                df.at[i, "tracked_score"] = float(overall[layer, head])
    df["tracked_agrees"] = df.tracked_head == df.top_behaviour_head
    cols = ["sweep", "step", "revision", "model", "mode", "best_head", "best_score", "tracked_head", "tracked_score",
            "chance_level", "top_behaviour_head", "agrees", "tracked_agrees"]
    return df[cols]


def figure(df: pd.DataFrame, path: str | Path) -> None:
    """One panel per sweep: best and tracked-head successor score against training step.

    Filled markers: the head agrees with the behavioural check's top head; open markers: it
    does not. The dotted red line is the chance level (docs/DESIGN.md, "Successor score and
    chance level"). Steps spanning two decades or more are drawn on a log (symlog with a step 0)
    axis.

    Args:
        df: :func:`table`'s output.
        path: the PNG, written atomically.
    """
    groups = list(df.groupby("sweep", sort=False))
    fig, axes = plots.plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), squeeze=False)
    for ax, (sweep, g) in zip(axes[0], groups):
        for col, agree, label, marker, color in (("best_score", "agrees", "best head", "o", "tab:blue"),
                                                 ("tracked_score", "tracked_agrees",
                                                  f"{g.tracked_head.iloc[-1]} (top at the last step)", "s",
                                                  "tab:orange")):
            ax.plot(g.step, g[col], color=color, lw=1, label=label)
            yes, no = g[g[agree]], g[~g[agree]]
            ax.scatter(yes.step, yes[col], marker=marker, color=color, zorder=3)
            ax.scatter(no.step, no[col], marker=marker, facecolors="none", edgecolors=color, zorder=3)
        if g.chance_level.notna().any():
            ax.axhline(float(g.chance_level.mean()), color="tab:red", ls=":", lw=1, label="chance level")
        steps = g.step.to_numpy()
        positive = steps[steps > 0]
        if len(positive) > 1 and steps.max() >= 100 * positive.min():
            ax.set_xscale("symlog" if (steps == 0).any() else "log")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"successor score ({g['mode'].iloc[-1]})")
        ax.set_title(f"{sweep}\nfilled: agrees with the behavioural top head", fontsize=8)
        ax.legend(fontsize=7)
    plots.save(fig, path)


def run(members: Sequence[dict], summaries: Sequence[str | Path], scores_h5: Sequence[str | Path],
        csv_path: str | Path, fig_path: str | Path) -> pd.DataFrame:
    """Write the over-training CSV (:func:`table`) and figure (:func:`figure`), atomically.

    Args:
        members: see :func:`table`.
        summaries: see :func:`table`.
        scores_h5: see :func:`table`.
        csv_path: the CSV (``results/{zoo_name}/over_training.csv``).
        fig_path: the PNG (``results/{zoo_name}/over_training.png``).

    Returns:
        The table.

    Raises:
        As :func:`table`.
    """
    df = table(members, summaries, scores_h5)
    write_csv(df, csv_path, FIXED4)
    figure(df, fig_path)
    return df
