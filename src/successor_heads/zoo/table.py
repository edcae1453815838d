"""Across the zoo: the successor-head table and the maximum successor score against
parameter count (the paper's Figure 2, left)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from successor_heads.core import plots
from successor_heads.core.h5io import read_h5
from successor_heads.core.heads import head_label
from successor_heads.core.paper import paper_number
from successor_heads.core.writers import FIXED4, write_csv

# The paper's reported heads (by zoo model name), printed beside ours where a model is in both.
_HEADS = paper_number("scores", "successor_heads")
PAPER = {_HEADS.setting["zoo_names"][model]: head for model, head in _HEADS.value.items()}
PAPER_THRESHOLD = float(paper_number("scores", "heads_above_threshold").setting["threshold"])


def heads_above(scores_h5: str | Path, mode: str, threshold: float) -> int:
    """How many heads of a ``successor_scores.h5`` score above ``threshold`` in ``mode``
    (the paper's count of successor heads, Section 2, at a threshold of our choosing).

    Raises: :class:`successor_heads.core.h5io.IncompleteOutputError` for a missing or unfinished file.
    """
    data, _ = read_h5(scores_h5)
    return int((data[f"overall_{mode}"] > threshold).sum())


def table(summaries: list[str | Path], scores_h5: list[str | Path] | None = None,
          threshold: float | None = None) -> pd.DataFrame:
    """One row per ``scores_summary.json``: model, parameters, top head and score per mode,
    the chance level (a head that always picks one task token), heads above threshold, top
    behavioural head, whether they agree, the paper's head.

    Args:
        summaries: each model's ``scores_summary.json``.
        scores_h5: each model's ``successor_scores.h5`` (same order), with ``threshold``
            (config ``scores.threshold``): heads above it are counted from the scores; without
            them, the summary's count at the paper's threshold is used.
        threshold: see ``scores_h5``; recorded in the table's ``threshold`` column.

    Raises: FileNotFoundError / json.JSONDecodeError for a missing or broken summary.
    """
    rows = []
    h5s = list(scores_h5) if scores_h5 is not None and threshold is not None else [None] * len(summaries)
    for p, h5 in zip(summaries, h5s):
        s = json.loads(Path(p).read_text())
        d = s["default_mode"]
        above = heads_above(h5, d, threshold) if h5 is not None else s[f"n_above_threshold_{d}"]
        row = {"model": s["model"], "parameters": s["n_params"], "quantization": s.get("quantization"),
               "norms": s["norms"], "value_bias": s.get("value_bias"), "default_mode": d,
               "top_head": s[f"top_head_{d}"], "top_score": s[f"top_score_{d}"],
               "chance_level": s.get("chance_level"), "heads_above_threshold": above,
               "threshold": threshold if h5 is not None else PAPER_THRESHOLD,
               "top_over_runner_up": s.get(f"top_over_runner_up_{d}"),
               "top_behaviour_head": s["top_behaviour_head"], "agrees": s[f"agrees_{d}"],
               "behaviour_heads_checked": s.get("behaviour_heads_checked", "all")}
        for k in sorted(s):
            if k.startswith(("top_head_", "top_score_", "agrees_", "behaviour_head_rank_")) and not k.endswith(d) \
                    or k == f"behaviour_head_rank_{d}":
                row[k] = s[k]
        row["paper_head"] = PAPER.get(s["model"], "")
        rows.append(row)
    return pd.DataFrame(rows).sort_values("parameters", kind="stable")


def per_task_figure(score_csvs: list[str | Path], models: list[str], path) -> None:
    """Per-task successor scores of each model's top head, averaged over the spaced/unspaced
    and case variants of each task family (the paper's Figure 2, right)."""
    import numpy as np

    fams: dict[str, dict[str, float]] = {}
    for model, p in zip(models, score_csvs):
        top = pd.read_csv(p).iloc[0]
        task_cols = [c for c in top.index if c not in ("layer", "head", "successor_score", "behaviour_logprob_drop")
                     and not c.startswith("successor_score_")]
        by_fam: dict[str, list[float]] = {}
        for c in task_cols:
            fam = c.split("_spaced")[0].split("_unspaced")[0]
            if pd.notna(top[c]):
                by_fam.setdefault(fam, []).append(float(top[c]))
        fams[f"{model} {head_label(top['layer'], top['head'])}"] = {k: float(np.mean(v)) for k, v in by_fam.items()}
    families = sorted({f for d in fams.values() for f in d})
    fig, ax = plots.plt.subplots(figsize=(max(5, 0.9 * len(families) + 2), 3.5))
    width = 0.8 / max(1, len(fams))
    for k, (label, d) in enumerate(fams.items()):
        ax.bar(np.arange(len(families)) + k * width, [d.get(f, np.nan) for f in families], width, label=label)
    ax.set_xticks(np.arange(len(families)) + 0.4 - width / 2)
    ax.set_xticklabels(families, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("successor score of the top head")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title("Figure 2 (right): per-task scores of each model's top head", fontsize=9)
    plots.save(fig, path)


def run(summaries, csv_path, fig_path, score_csvs=None, per_task_path=None, scores_h5=None,
        threshold=None) -> pd.DataFrame:
    """Write the zoo table (CSV), Figure 2 (left, with each model's chance level) and, given
    ``score_csvs`` and ``per_task_path``, Figure 2 (right), atomically; returns the table."""
    df = table(summaries, scores_h5, threshold)
    write_csv(df, csv_path, FIXED4)
    fig, ax = plots.plt.subplots(figsize=(5, 3.5))
    series = {f"{df.default_mode.iloc[0]} (default)": "top_score"}
    series.update({c[len("top_score_"):]: c for c in df.columns if c.startswith("top_score_")})
    for (label, col), marker in zip(series.items(), "os^"):
        ax.scatter(df.parameters, df[col], marker=marker, label=label)
    if df.chance_level.notna().any():  # a top score near it is noise
        ax.scatter(df.parameters, df.chance_level, marker="_", s=200, color="tab:red", label="chance level")
    for _, r in df.iterrows():
        ax.annotate(r.model, (r.parameters, r.top_score), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlim(df.parameters.min() / 2, df.parameters.max() * 2)
    ax.xaxis.set_minor_formatter(plots.plt.NullFormatter())  # minor labels collide on a short range
    ax.set_xlabel("parameters")
    ax.set_ylabel("maximum successor score")
    ax.set_ylim(0, 1.05)
    ax.legend(title="effective embedding", fontsize=7)
    ax.set_title("Figure 2 (left): max successor score vs model size", fontsize=9)
    plots.save(fig, fig_path)
    if score_csvs and per_task_path:
        models = [json.loads(Path(p).read_text())["model"] for p in summaries]
        per_task_figure(score_csvs, models, per_task_path)
    return df
