"""Across the zoo: the successor-head table and the maximum successor score against
parameter count (the paper's Figure 2, left)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import plots
from .atomic import atomic_path

# The paper's reported heads, printed beside ours where a model is in both.
PAPER = {"pythia-1.4b": "L12H0", "gpt2-small": "L9H1"}


def table(summaries: list[str | Path]) -> pd.DataFrame:
    """One row per ``scores_summary.json``: model, parameters, top head and score per mode,
    heads above threshold, top behavioural head, whether they agree, the paper's head.

    Raises: FileNotFoundError / json.JSONDecodeError for a missing or broken summary.
    """
    rows = []
    for p in summaries:
        s = json.loads(Path(p).read_text())
        d = s["default_mode"]
        row = {"model": s["model"], "parameters": s["n_params"], "quantization": s.get("quantization"),
               "norms": s["norms"], "default_mode": d, "top_head": s[f"top_head_{d}"],
               "top_score": s[f"top_score_{d}"], "heads_above_threshold": s[f"n_above_threshold_{d}"],
               "top_behaviour_head": s["top_behaviour_head"], "agrees": s[f"agrees_{d}"]}
        for k in sorted(s):
            if k.startswith(("top_head_", "top_score_", "agrees_", "behaviour_head_rank_")) and not k.endswith(d):
                row[k] = s[k]
        row["paper_head"] = PAPER.get(s["model"], "")
        rows.append(row)
    return pd.DataFrame(rows).sort_values("parameters", kind="stable")


def run(summaries, csv_path, fig_path) -> pd.DataFrame:
    """Write the zoo table (CSV) and Figure 2 (left) atomically; returns the table."""
    df = table(summaries)
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    fig, ax = plots.plt.subplots(figsize=(5, 3.5))
    series = {f"{df.default_mode.iloc[0]} (default)": "top_score"}
    series.update({c[len("top_score_"):]: c for c in df.columns if c.startswith("top_score_")})
    for (label, col), marker in zip(series.items(), "os^"):
        ax.scatter(df.parameters, df[col], marker=marker, label=label)
    for _, r in df.iterrows():
        ax.annotate(r.model, (r.parameters, r.top_score), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("maximum successor score")
    ax.set_ylim(0, 1.05)
    ax.legend(title="effective embedding", fontsize=7)
    ax.set_title("Figure 2 (left): max successor score vs model size", fontsize=9)
    plots.save(fig, fig_path)
    return df
