"""Stage ``editing``: vector arithmetic with the mod-m features through the successor head, its
greater-than bias, and what a feature edit does to next-token loss (paper, Section 3.2 and
Figure 5; docs/DESIGN.md "Vector arithmetic", "Greater-than bias", "Editing and loss").

Inputs (:data:`successor_heads.core.layout.INPUTS` ``["editing"]``): ``manifest`` (the model
folder's ``manifest.json``), ``scores`` (``successor_scores.h5`` of the scores stage: the
successor head is its top head, :func:`~successor_heads.core.handoff.load_top_heads`) and
``directions`` (``features/directions.h5`` of the features stage: ``sae_mod{m}``,
``probe_mod{m}``; its ``norms`` and ``residue_of`` attributes, else ``features.norms`` /
``features.residue_of``, say which MLP0 space and residue convention the directions use).
Vector arithmetic edits each family with its own modulus (``editing.moduli``) and, where that
differs, also with the paper's mod-10 features (``editing.paper_modulus``): months and days
with mod 10 are the paper's setting (Figure 5: months about 53%, days fail) and sit beside the
paper's numbers; days mod 7 and months mod 12 are ours, past the paper. Every vector-arithmetic
table has a ``modulus`` column; summary keys are ``{group}_mod{m}`` (e.g. ``months_mod10``,
``months_mod12``). The head's OV circuit has no value bias unless ``scores.value_bias`` is true
(recorded as ``value_bias`` in the summary and the HDF5 attributes).

Outputs (:data:`successor_heads.core.layout.OUTPUTS` ``["editing"]``, in
``results/{model}/editing/``; layout names in brackets): ``editing.h5`` (``h5``: every table
below as column datasets ``{table}.{column}``, with provenance), ``vector_arithmetic.csv``
(``vector_arithmetic``: per source, task, modulus and scale), ``vector_arithmetic_residues.csv``
(``va_residues``: per source, family, modulus, source residue i and target residue j at
``editing.scale``), ``vector_arithmetic_summary.csv`` (``va_summary``: per source, task/family
and modulus at ``editing.scale``, beside the paper's figures on the mod-10 rows),
``greater_than.csv`` (``greater_than``: per path, task, token), ``edit_loss_prompts.csv``
(``prompts``: per prompt edit), ``edit_loss_corpus.csv`` (``corpus``: per corpus edit class),
``scale_sweep.png`` (``sweep``), ``greater_than.png`` (``greater_fig``) and
``editing_summary.json`` (``summary``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from successor_heads.editing import edit_loss as el
from successor_heads.editing import greater_than as gt
from successor_heads.editing import vector_arithmetic as va
from successor_heads.editing.summary import editing_summary, vector_arithmetic_table
from successor_heads.core.corpus import load_corpus
from successor_heads.core.h5io import provenance, quantization_label, write_h5
from successor_heads.core.heads import head_label
from successor_heads.core.loading import open_for_stage
from successor_heads.core.streaming import head_circuit, mlp0_circuit, readout_modules, resident
from successor_heads.core.tasks import build_tasks
from successor_heads.core.handoff import StageInputError, load_top_heads
from successor_heads.core.writers import SIGNIFICANT5, write_csv, write_json

log = logging.getLogger(__name__)

def _columns(df: pd.DataFrame, prefix: str) -> dict:
    """A table as HDF5 column datasets ``{prefix}.{column}`` (strings as lists of str)."""
    out = {}
    for c in df.columns:
        v = df[c]
        out[f"{prefix}.{c}"] = [str(s) for s in v] if v.dtype == object else v.to_numpy()
    return out


def run(cfg, inputs: Mapping[str, str | Path], outputs: Mapping[str, str | Path], progress: bool = True,
        mem_mb: int | None = None) -> dict:
    """Run the editing analyses for ``cfg.model`` and write the outputs of the module docstring.

    Args:
        cfg: the run's typed config (:class:`successor_heads.config.RootConfig`; a job's: its params).
        inputs: ``manifest``, ``scores``, ``directions`` (module docstring;
            :func:`successor_heads.core.layout.inputs`).
        outputs: the paths to write, by the names of the module docstring
            (:func:`successor_heads.core.layout.outputs`).
        mem_mb: the job's memory (MB; the workflow passes the rule's ``mem_mb`` resource), which
            ``model.memory=auto`` compares the weights with; None: ``cfg.model.resources.mem_mb``.

    Returns: the summary dict also written to ``outputs["summary"]``.
    Raises: :class:`~successor_heads.core.handoff.StageInputError` (a ValueError) for a missing
    scores or directions file (naming the stage that makes it); ValueError for directions of the
    wrong width or bad ``editing`` settings.
    """
    t0 = time.time()
    e = cfg.editing
    layer, head = load_top_heads(inputs["scores"], 1, e.head_mode, model=cfg.model.name, option="editing.head_mode")[0]
    dpath = Path(inputs["directions"])
    if not dpath.is_file():
        raise StageInputError(f"{dpath} does not exist: feature directions are made by the features stage "
                              f"(`successor-heads features model={cfg.model.name}`, or snakemake's features rules)")
    model, tok, adapter, manifest = open_for_stage(cfg, inputs["manifest"], mem_mb)
    directions, dattrs = va.load_directions(dpath, adapter.dims.d_model, tuple(e.sources))
    norms = cfg.scores.norms
    mlp0_norms = str(dattrs.get("norms", cfg.features.norms))  # the space the directions live in
    residue_of = str(dattrs.get("residue_of", cfg.features.residue_of))
    feat_head = str(dattrs.get("successor_head", "n/a"))
    if feat_head not in ("n/a", head_label(layer, head)):
        log.warning("features were made with successor head %s, editing uses %s", feat_head, head_label(layer, head))
    moduli = dict(e.moduli)
    paper_modulus, value_bias = e.paper_modulus, cfg.scores.value_bias
    tasks = build_tasks(tok, **asdict(cfg.tasks))
    scales = sorted({float(s) for s in e.scale_sweep} | {float(e.scale)})
    log.info("editing through %s; directions %s; scales %s", head_label(layer, head), sorted(directions), scales)

    timings, tick = {}, t0

    def lap(name):
        nonlocal tick
        timings[name] = round(time.time() - tick, 1)
        tick = time.time()
        log.info("%s done in %.1f s", name, timings[name])

    lap("load")
    # weights only: MLP0, the head's circuit and the readout (a streamed model reads just these)
    with resident(model, *mlp0_circuit(adapter), *head_circuit(adapter, layer), *readout_modules(adapter)):
        va_df = va.vector_arithmetic(adapter, layer, head, tasks, directions, scales, norms, e.scale_ref,
                                     moduli, residue_of, mlp0_norms, paper_modulus, value_bias)
        va_sum = vector_arithmetic_table(va_df, float(e.scale))
        lap("vector_arithmetic")
        gt_df = gt.greater_than(adapter, layer, head, tasks, norms, tuple(e.greater_than_families), value_bias)
        lap("greater_than")
    cases = el.prompt_cases(tok, tasks, moduli, residue_of, e.n_items, e.max_prompts_per_family,
                            e.max_targets_per_prompt)
    pr_df = el.prompt_edit_loss(adapter, cases, directions, float(e.scale), e.scale_ref, mlp0_norms,
                                progress=progress)
    lap("edit_loss_prompts")
    corpus = load_corpus(tok, **asdict(cfg.corpus), progress=progress)
    classes = el.residue_classes(tasks, moduli, list(e.corpus_families), residue_of)
    co_df = el.corpus_edit_loss(adapter, corpus.tokens, classes, directions, e.corpus_shift, float(e.scale),
                                e.scale_ref, mlp0_norms, list(e.corpus_sources), e.batch_size, progress)
    lap("edit_loss_corpus")
    va_task, va_res = va.per_task(va_df), va.per_residue(va_df, float(e.scale))

    for name, df in (("vector_arithmetic", va_task), ("va_residues", va_res), ("va_summary", va_sum),
                     ("greater_than", gt_df), ("prompts", pr_df), ("corpus", co_df)):
        write_csv(df, outputs[name], SIGNIFICANT5)
    datasets = {**_columns(va_task, "vector_arithmetic"), **_columns(va_res, "vector_arithmetic_residues"),
                **_columns(va_sum, "vector_arithmetic_summary"), **_columns(gt_df, "greater_than"),
                **_columns(pr_df, "edit_loss_prompts"), **_columns(co_df, "edit_loss_corpus")}
    attrs = provenance(manifest, **cfg.model.provenance(), norms=norms, successor_head=head_label(layer, head),
                       features_successor_head=feat_head,
                       head_mode=str(e.head_mode), mlp0_norms=mlp0_norms, residue_of=residue_of,
                       scale=float(e.scale), scale_ref=e.scale_ref, scales=scales, moduli=moduli,
                       paper_modulus=paper_modulus, value_bias=value_bias,
                       corpus=corpus.description, corpus_shape=list(corpus.tokens.shape),
                       dims="every dataset is one column of a table (one value per row); see the CSVs")
    write_h5(outputs["h5"], datasets, attrs)
    name = f"{cfg.model.name} {head_label(layer, head)}"
    va.plot_scale_sweep(va_df, f"{name}: vector arithmetic (scale_ref={e.scale_ref})", outputs["sweep"])
    gt.plot(gt_df, f"{name}: greater-than bias (head OV vs MLP0 direct)", outputs["greater_fig"])

    summary = editing_summary(model=cfg.model.name, norms=norms, head_mode=e.head_mode, scale=e.scale,
                              scale_ref=e.scale_ref, moduli=moduli, paper_modulus=paper_modulus, layer=layer,
                              head=head, feat_head=feat_head, tasks=tasks, va_df=va_df, va_sum=va_sum, gt_df=gt_df,
                              pr_df=pr_df, co_df=co_df, directions=directions)
    summary.update(memory=manifest["memory"], value_bias=value_bias, mlp0_norms=mlp0_norms, residue_of=residue_of,
                   n_prompt_edits=len(pr_df),
                   corpus=corpus.description, corpus_shape=list(corpus.tokens.shape),
                   quantization=quantization_label(manifest), timings_s=timings,
                   wall_s=round(time.time() - t0, 1))
    write_json(summary, outputs["summary"])
    return summary
