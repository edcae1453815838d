"""The editing stage's summary, in one place: the vector-arithmetic success table at the headline
scale (``vector_arithmetic_summary.csv``) and the ``editing_summary.json`` dict beside the
paper's Figure 5 numbers (paper Section 3.2), with the greater-than and edit-loss summaries.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from successor_heads.core.heads import head_label
from successor_heads.editing import edit_loss as el
from successor_heads.editing import greater_than as gt
from successor_heads.editing import vector_arithmetic as va


def vector_arithmetic_table(df: pd.DataFrame, scale: float) -> pd.DataFrame:
    """Success per (source, group, modulus) at ``scale``: groups are each task, each family (all
    its spacing/case variants pooled) and ``numbers_20_29``; a family edited with two moduli
    (e.g. months with mod 10, the paper's, and mod 12, ours) gets one row per modulus.

    Input: the output of :func:`~successor_heads.editing.vector_arithmetic.vector_arithmetic`. Output columns ``source, group, kind,
    modulus, n_pairs, n_success, success_rate, paper`` (``paper``: :func:`~successor_heads.editing.vector_arithmetic.paper_value`, the
    paper's Figure 5 number only on rows with the paper's modulus 10). Raises nothing.
    """
    d = df[np.isclose(df.scale.astype(float), scale)]
    rows = []
    for (source, n2029, m), g in d.groupby(["source", "numbers_20_29", "modulus"]):
        keys = [("numbers_20_29", "group", g)] if n2029 else (
            [(t, "task", gt) for t, gt in g.groupby("task")] + [(f, "family", gf) for f, gf in g.groupby("family")])
        for name, kind, gg in keys:
            n, k = int(gg.n_pairs.sum()), int(gg.n_success.sum())
            rows.append({"source": source, "group": name, "kind": kind, "modulus": int(m), "n_pairs": n,
                         "n_success": k, "success_rate": k / n if n else float("nan"),
                         "paper": va.paper_value(name, m)})
    return pd.DataFrame(rows, columns=["source", "group", "kind", "modulus", "n_pairs", "n_success",
                                       "success_rate", "paper"])


def editing_summary(*, model: str, norms: str, head_mode: str | None, scale: float, scale_ref: str, moduli: Mapping,
                    paper_modulus: int, layer: int, head: int, feat_head: str, tasks, va_df, va_sum, gt_df, pr_df,
                    co_df, directions) -> dict:
    """The ``editing_summary.json`` dict: head, success rates at ``editing.scale`` per source and
    ``{family}_mod{m}`` (and ``numbers_20_29_mod10``), best scale per group, greater-than
    numbers, loss changes, and the paper's Figure 5 numbers: ``beside_paper`` holds, per paper
    group, ours with the paper's modulus (mod 10, like for like) next to the paper's value;
    ``ours_past_paper`` holds the families edited with another modulus (days mod 7, months mod
    12), which the paper did not study. Inputs: the ``editing`` keys, the successor head, the
    tables of :func:`successor_heads.editing.stage.run`. Raises nothing."""
    pm = paper_modulus  # extra runs; 0: off
    nums = sorted({v for t in tasks if t.family == "numbers" for v in t.index})
    fam = va_sum[va_sum.kind != "task"]
    best = {}
    if len(va_df):
        sw = va.sweep_table(va_df)
        for (src, grp, m), g in sw.groupby(["source", "group", "modulus"]):
            r = g.loc[g.success_rate.idxmax()]
            best.setdefault(src, {})[va.group_key(grp, m)] = {"scale": float(r.scale),
                                                             "success_rate": float(r.success_rate)}
    moduli = dict(moduli)
    missing = sorted(va.group_key(f, m) for f in moduli for m in va.task_moduli(f, moduli, pm)
                     if not any(k[1] == m for k in directions))
    sources = sorted(set(fam.source))
    # the paper's numbers are for mod 10 whatever editing.paper_modulus adds: compare only those
    past = sorted({(r.group, int(r.modulus)) for r in fam.itertuples() if int(r.modulus) != va.PAPER_MODULUS})
    return {
        "model": model, "successor_head": head_label(layer, head), "features_successor_head": feat_head,
        "head_mode": head_mode, "norms": norms, "scale": float(scale), "scale_ref": scale_ref,
        "moduli": moduli, "paper_modulus": pm,
        "number_tokens": (f"{nums[0]}-{nums[-1]} ({len(nums)} single tokens)" if nums else "none")
        + ("" if any(20 <= v <= 29 for v in nums) else "; no 20-29: numbers_20_29 cannot be measured"),
        "vector_arithmetic": {src: {va.group_key(r.group, r.modulus): {
            "success_rate": r.success_rate, "n_pairs": r.n_pairs, "modulus": int(r.modulus)}
            for r in g.itertuples()} for src, g in fam.groupby("source")},
        "vector_arithmetic_best_scale": best,
        "vector_arithmetic_control_scale0": _rates(va_df, 0.0),
        "paper": va.PAPER,
        "beside_paper": {grp: {**{src: _get_rate(fam, src, grp, va.PAPER_MODULUS) for src in sources},
                               "paper": paper, "modulus": va.PAPER_MODULUS} for grp, paper in va.PAPER.items()},
        "ours_past_paper": {va.group_key(grp, m): {**{src: _get_rate(fam, src, grp, m) for src in sources},
                                                   "modulus": m, "paper": va.PAST_PAPER} for grp, m in past},
        "families_without_directions": missing,
        "greater_than": gt.summarise(gt_df),
        "edit_loss_prompts": el.summarise_prompts(pr_df),
        "edit_loss_corpus": el.summarise_corpus(co_df),
    }


def _get_rate(fam: pd.DataFrame, source: str, group: str, modulus: int):
    """Success rate of ``group`` edited with ``modulus`` features from ``source``, else why not."""
    r = fam[(fam.source == source) & (fam.group == group)]
    if not len(r):
        return "not measurable (no such tokens)"
    r = r[r.modulus.astype(int) == int(modulus)]
    return float(r.success_rate.iloc[0]) if len(r) else f"not edited with mod-{modulus} features"


def _rates(va_df: pd.DataFrame, scale: float) -> dict:
    if not len(va_df) or not np.isclose(va_df.scale.astype(float), scale).any():
        return {}
    t = va.sweep_table(va_df)
    t = t[np.isclose(t.scale, scale)]
    return {src: {va.group_key(r.group, r.modulus): float(r.success_rate) for r in g.itertuples()}
            for src, g in t.groupby("source")}
