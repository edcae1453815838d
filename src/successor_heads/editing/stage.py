"""Stage ``editing``: vector arithmetic with the mod-m features through the successor head, its
greater-than bias, and what a feature edit does to next-token loss (paper, Section 3.2 and
Figure 5; DESIGN.md "Vector arithmetic", "Greater-than bias", "Editing and loss").

Inputs: ``out_dir/successor_scores.h5`` (scores stage: the successor head is its top head,
:func:`~successor_heads.core.handoff.load_top_heads`) and ``out_dir/features/directions.h5``
(features stage: ``sae_mod{m}``, ``probe_mod{m}``; its ``norms`` and ``residue_of`` attributes,
else ``features.norms`` / ``features.residue_of``, say which MLP0 space and residue convention
the directions use).
Vector arithmetic edits each family with its own modulus (``editing.moduli``) and, where that
differs, also with the paper's mod-10 features (``editing.paper_modulus``): months and days
with mod 10 are the paper's setting (Figure 5: months about 53%, days fail) and sit beside the
paper's numbers; days mod 7 and months mod 12 are ours, past the paper. Every vector-arithmetic
table has a ``modulus`` column; summary keys are ``{group}_mod{m}`` (e.g. ``months_mod10``,
``months_mod12``). The head's OV circuit has no value bias unless ``scores.value_bias`` is true
(recorded as ``value_bias`` in the summary and the HDF5 attributes).

Outputs in ``out_dir/editing/`` (:data:`OUTPUTS`): ``editing.h5`` (every table below as
column datasets ``{table}.{column}``, with provenance), ``vector_arithmetic.csv`` (per source,
task, modulus and scale), ``vector_arithmetic_residues.csv`` (per source, family, modulus,
source residue i and target residue j at ``editing.scale``), ``vector_arithmetic_summary.csv``
(per source, task/family and modulus at ``editing.scale``, beside the paper's figures on the
mod-10 rows), ``greater_than.csv`` (per path, task, token), ``edit_loss_prompts.csv``
(per prompt edit), ``edit_loss_corpus.csv`` (per corpus edit class), ``scale_sweep.png``,
``greater_than.png`` and ``editing_summary.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from successor_heads.editing import edit_loss as el
from successor_heads.editing import greater_than as gt
from successor_heads.editing import vector_arithmetic as va
from successor_heads.core.adapters import get_adapter
from successor_heads.core.atomic import atomic_path
from successor_heads.core.corpus import load_corpus
from successor_heads.core.h5io import IncompleteOutputError, provenance, write_h5
from successor_heads.core.loading import load_model, read_manifest
from successor_heads.core.tasks import build_tasks
from successor_heads.core.handoff import load_top_heads, write_json

log = logging.getLogger(__name__)

OUTPUTS = ("editing.h5", "vector_arithmetic.csv", "vector_arithmetic_residues.csv", "vector_arithmetic_summary.csv",
           "greater_than.csv", "edit_loss_prompts.csv", "edit_loss_corpus.csv", "scale_sweep.png",
           "greater_than.png", "editing_summary.json")


def _csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.5g")


def _columns(df: pd.DataFrame, prefix: str) -> dict:
    """A table as HDF5 column datasets ``{prefix}.{column}`` (strings as lists of str)."""
    out = {}
    for c in df.columns:
        v = df[c]
        out[f"{prefix}.{c}"] = [str(s) for s in v] if v.dtype == object else v.to_numpy()
    return out


def _check(cfg) -> None:
    e = cfg.editing
    if e.scale_ref not in va.SCALE_REFS:
        raise ValueError(f"editing.scale_ref={e.scale_ref!r}: must be one of {va.SCALE_REFS}")
    bad = [s for s in list(e.sources) + list(e.corpus_sources) if s not in va.SOURCES]
    if bad:
        raise ValueError(f"editing.sources/corpus_sources contain {bad}: must be among {va.SOURCES}")
    missing = sorted(set(e.corpus_sources) - set(e.sources))
    if missing:
        raise ValueError(f"editing.corpus_sources has {missing}, which editing.sources does not load")
    if not list(e.scale_sweep):
        raise ValueError("editing.scale_sweep is empty: give at least one scale, e.g. [0.0, 1.0]")
    pm = e.get("paper_modulus", va.PAPER_MODULUS)
    if isinstance(pm, bool) or not isinstance(pm, int) or (pm != 0 and pm < 2):
        raise ValueError(f"editing.paper_modulus={pm!r}: must be 0 (off) or an integer >= 2 (the paper's: 10)")


def successor_head(out_dir: Path, mode: str | None) -> tuple[int, int]:
    """``(layer, head)``: the top head of ``out_dir/successor_scores.h5`` (under ``mode``).

    Raises: ValueError when the scores file is missing or unfinished (names the scores stage)
    or has no such mode."""
    try:
        return load_top_heads(out_dir / "successor_scores.h5", k=1, mode=mode)[0]
    except IncompleteOutputError as e:
        raise ValueError(f"successor scores unavailable: {e}. They are made by the scores stage "
                         "(`successor-heads scores model=...`, or snakemake's successor_scores rule)") from e
    except KeyError as e:
        raise ValueError(f"editing.head_mode={mode!r}: successor_scores.h5 has no such mode ({e})") from e


def run(cfg, model_dir: str | Path, out_dir: str | Path, progress: bool = True) -> dict:
    """Run the editing analyses for ``cfg.model`` and write the outputs of the module docstring.

    Args:
        cfg: resolved config (full, or the ``editing`` stage view).
        model_dir: folder written by :func:`successor_heads.models.fetch_model`.
        out_dir: ``results/{model}``; outputs go to ``out_dir/editing``.

    Returns: the summary dict also written to ``editing_summary.json``.
    Raises: ValueError for a missing scores or directions file (naming the stage that makes
    it), directions of the wrong width, or bad ``editing`` settings.
    """
    t0 = time.time()
    _check(cfg)
    e = cfg.editing
    out_dir = Path(out_dir)
    ed = out_dir / "editing"
    layer, head = successor_head(out_dir, e.head_mode)
    dpath = out_dir / "features" / "directions.h5"
    if not dpath.is_file():
        raise ValueError(f"{dpath} does not exist: feature directions are made by the features stage "
                         "(`successor-heads features model=...`, or snakemake's features rules)")
    model, tok = load_model(model_dir, cfg.model.dtype, cfg.device)
    manifest = read_manifest(model_dir)
    adapter = get_adapter(model)
    directions, dattrs = va.load_directions(dpath, adapter.dims.d_model, tuple(e.sources))
    norms = cfg.scores.norms
    fcfg = cfg.get("features") or {}
    mlp0_norms = str(dattrs.get("norms", fcfg.get("norms", norms)))  # the space the directions live in
    residue_of = str(dattrs.get("residue_of", fcfg.get("residue_of", "position")))
    feat_head = str(dattrs.get("successor_head", "n/a"))
    if feat_head not in ("n/a", f"L{layer}H{head}"):
        log.warning("features were made with successor head %s, editing uses L%dH%d", feat_head, layer, head)
    moduli = dict(e.moduli)
    paper_modulus = int(e.get("paper_modulus", va.PAPER_MODULUS))  # absent in configs older than the key
    value_bias = va.value_bias_of(cfg)
    tasks = build_tasks(tok, cfg.tasks)
    scales = sorted({float(s) for s in e.scale_sweep} | {float(e.scale)})
    log.info("editing through L%dH%d; directions %s; scales %s", layer, head, sorted(directions), scales)

    timings, tick = {}, t0

    def lap(name):
        nonlocal tick
        timings[name] = round(time.time() - tick, 1)
        tick = time.time()
        log.info("%s done in %.1f s", name, timings[name])

    lap("load")
    va_df = va.vector_arithmetic(adapter, layer, head, tasks, directions, scales, norms, e.scale_ref,
                                 moduli, residue_of, mlp0_norms, paper_modulus, value_bias)
    va_sum = va.summarise(va_df, float(e.scale))
    lap("vector_arithmetic")
    gt_df = gt.greater_than(adapter, layer, head, tasks, norms, tuple(e.greater_than_families), value_bias)
    lap("greater_than")
    cases = el.prompt_cases(tok, tasks, moduli, residue_of, e.n_items, e.max_prompts_per_family,
                            e.max_targets_per_prompt)
    pr_df = el.prompt_edit_loss(adapter, cases, directions, float(e.scale), e.scale_ref, mlp0_norms,
                                progress=progress)
    lap("edit_loss_prompts")
    corpus = load_corpus(cfg.corpus, tok, progress=progress)
    classes = el.residue_classes(tasks, moduli, list(e.corpus_families), residue_of)
    co_df = el.corpus_edit_loss(adapter, corpus.tokens, classes, directions, e.corpus_shift, float(e.scale),
                                e.scale_ref, mlp0_norms, list(e.corpus_sources), e.batch_size, progress)
    lap("edit_loss_corpus")
    va_task, va_res = va.per_task(va_df), va.per_residue(va_df, float(e.scale))

    ed.mkdir(parents=True, exist_ok=True)
    _csv(va_task, ed / "vector_arithmetic.csv")
    _csv(va_res, ed / "vector_arithmetic_residues.csv")
    _csv(va_sum, ed / "vector_arithmetic_summary.csv")
    _csv(gt_df, ed / "greater_than.csv")
    _csv(pr_df, ed / "edit_loss_prompts.csv")
    _csv(co_df, ed / "edit_loss_corpus.csv")
    datasets = {**_columns(va_task, "vector_arithmetic"), **_columns(va_res, "vector_arithmetic_residues"),
                **_columns(va_sum, "vector_arithmetic_summary"), **_columns(gt_df, "greater_than"),
                **_columns(pr_df, "edit_loss_prompts"), **_columns(co_df, "edit_loss_corpus")}
    attrs = provenance(cfg, manifest, quantization=_quantization(manifest), successor_head=f"L{layer}H{head}",
                       features_successor_head=feat_head,
                       head_mode=str(e.head_mode), mlp0_norms=mlp0_norms, residue_of=residue_of,
                       scale=float(e.scale), scale_ref=e.scale_ref, scales=scales, moduli=moduli,
                       paper_modulus=paper_modulus, value_bias=value_bias,
                       corpus=corpus.description, corpus_shape=list(corpus.tokens.shape),
                       dims="every dataset is one column of a table (one value per row); see the CSVs")
    write_h5(ed / "editing.h5", datasets, attrs)
    name = f"{cfg.model.name} L{layer}H{head}"
    va.plot_scale_sweep(va_df, f"{name}: vector arithmetic (scale_ref={e.scale_ref})", ed / "scale_sweep.png")
    gt.plot(gt_df, f"{name}: greater-than bias (head OV vs MLP0 direct)", ed / "greater_than.png")

    summary = summarise(cfg, layer, head, feat_head, tasks, va_df, va_sum, gt_df, pr_df, co_df, directions)
    summary.update(value_bias=value_bias, mlp0_norms=mlp0_norms, residue_of=residue_of,
                   n_prompt_edits=len(pr_df),
                   corpus=corpus.description, corpus_shape=list(corpus.tokens.shape),
                   quantization=_quantization(manifest), timings_s=timings,
                   wall_s=round(time.time() - t0, 1))
    write_json(summary, ed / "editing_summary.json")
    return summary


def summarise(cfg, layer, head, feat_head, tasks, va_df, va_sum, gt_df, pr_df, co_df, directions) -> dict:
    """The ``editing_summary.json`` dict: head, success rates at ``editing.scale`` per source and
    ``{family}_mod{m}`` (and ``numbers_20_29_mod10``), best scale per group, greater-than
    numbers, loss changes, and the paper's Figure 5 numbers: ``beside_paper`` holds, per paper
    group, ours with the paper's modulus (mod 10, like for like) next to the paper's value;
    ``ours_past_paper`` holds the families edited with another modulus (days mod 7, months mod
    12), which the paper did not study. Inputs: the tables of :func:`run`. Raises nothing."""
    e = cfg.editing
    pm = int(e.get("paper_modulus", va.PAPER_MODULUS))  # extra runs; 0: off
    nums = sorted({v for t in tasks if t.family == "numbers" for v in t.index})
    fam = va_sum[va_sum.kind != "task"]
    best = {}
    if len(va_df):
        sw = va.sweep_table(va_df)
        for (src, grp, m), g in sw.groupby(["source", "group", "modulus"]):
            r = g.loc[g.success_rate.idxmax()]
            best.setdefault(src, {})[va.group_key(grp, m)] = {"scale": float(r.scale),
                                                             "success_rate": float(r.success_rate)}
    moduli = dict(e.moduli)
    missing = sorted(va.group_key(f, m) for f in moduli for m in va.task_moduli(f, moduli, pm)
                     if not any(k[1] == m for k in directions))
    sources = sorted(set(fam.source))
    # the paper's numbers are for mod 10 whatever editing.paper_modulus adds: compare only those
    past = sorted({(r.group, int(r.modulus)) for r in fam.itertuples() if int(r.modulus) != va.PAPER_MODULUS})
    return {
        "model": cfg.model.name, "successor_head": f"L{layer}H{head}", "features_successor_head": feat_head,
        "head_mode": e.head_mode, "norms": cfg.scores.norms, "scale": float(e.scale), "scale_ref": e.scale_ref,
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


def _quantization(manifest: dict) -> str:
    """The weights' quantization: the manifest's ``quantization``, else its GGUF main type."""
    q = manifest.get("quantization") or (manifest.get("gguf") or {}).get("quantization") or "none"
    return str(q.get("main_type", q) if isinstance(q, dict) else q)


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
