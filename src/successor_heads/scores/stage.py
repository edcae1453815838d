"""Stage ``scores``: successor scores of every head in both effective-embedding modes, the
behavioural check, tables and figures (paper Section 2 and Figure 2; docs/DESIGN.md, "Stage contracts").

Outputs (:data:`successor_heads.core.layout.OUTPUTS` ``["scores"]``, in ``results/{model}/``):
``successor_scores.h5`` (``h5``), ``successor_scores.csv`` (``csv``), ``tasks.csv`` (``tasks``),
``successor_heatmap.png`` (``heatmap``), ``top_head_tasks.png`` (``top``), ``scores_summary.json``
(``summary``). For a mixture-of-experts model the HDF5 file also records, for each task token
(``mlp0_token_ids``), the experts layer 0's router picks for its ``mlp0`` embedding
(``mlp0_router_experts [n_tokens, top_k]``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from successor_heads.core import plots
from successor_heads.core.heads import head_label
from successor_heads.core.effective_embedding import effective_embeddings, head_input_norm, neutral_prefix, norm_convention
from successor_heads.core.writers import FIXED4, write_csv, write_json
from successor_heads.core.h5io import layer_record, provenance, quantization_label, write_h5
from successor_heads.core.loading import open_for_stage
from successor_heads.core.paper import paper_number
from successor_heads.core.streaming import resident
from successor_heads.scores.behaviour import behavioural_drops, prompts_carry_bos
from successor_heads.scores.successor_score import TaskIndex, chance_level, successor_scores
from successor_heads.core.tasks import build_tasks, ordinal_list_prompts, tasks_report

log = logging.getLogger(__name__)

#: The paper's successor-head threshold (Section 2), behind this stage's ``n_above_threshold_*``
#: and the line on the per-task figure. ``scores.threshold`` is read by the zoo table only, so
#: changing it reruns that table and nothing else.
PAPER_THRESHOLD = float(paper_number("scores", "heads_above_threshold").setting["threshold"])


def task_indices(tasks) -> tuple[list[TaskIndex], torch.Tensor]:
    """Usable tasks as :class:`TaskIndex` and the union of their token ids ``[n_tokens]``."""
    idx = [TaskIndex(t.name, list(t.token_ids), list(t.successor), t.held_out)
           for t in tasks if getattr(t, "usable", True) and len(t.token_ids) > 0]
    union = sorted({tid for t in idx for tid in t.token_ids})
    if not union:
        raise ValueError("no succession task kept any single-token item for this tokenizer")
    return idx, torch.tensor(union, dtype=torch.long)


def run(cfg, inputs: Mapping[str, str | Path], outputs: Mapping[str, str | Path], progress: bool = True,
        mem_mb: int | None = None) -> dict:
    """Score every head of ``cfg.model`` and write the outputs listed in the module docstring.

    Args:
        cfg: the run's typed config (:class:`successor_heads.config.RootConfig`; a job's: its params).
        inputs: ``manifest``: the ``manifest.json`` of the folder written by
            :func:`successor_heads.models.fetch_model` (:func:`successor_heads.core.layout.inputs`).
        outputs: the paths to write, by the names of the module docstring
            (:func:`successor_heads.core.layout.outputs`).
        mem_mb: the job's memory (MB; the workflow passes the rule's ``mem_mb`` resource), which
            ``model.memory=auto`` compares the weights with; None: ``cfg.model.resources.mem_mb``.

    Returns: the summary dict also written to ``outputs["summary"]``.
    Raises: ValueError when no task survives the single-token filter.
    """
    t0 = time.time()
    model, tok, adapter, manifest = open_for_stage(cfg, inputs["manifest"], mem_mb)
    d = adapter.dims
    tasks = build_tasks(tok, **asdict(cfg.tasks))
    report = tasks_report(tasks)
    write_csv(report, outputs["tasks"])
    idx, token_ids = task_indices(tasks)
    norms, value_bias = cfg.scores.norms, bool(cfg.scores.value_bias)
    results = {}
    for mode in cfg.scores.modes:
        log.info("effective embeddings (%s) for %d tokens", mode, len(token_ids))
        x = effective_embeddings(adapter, token_ids, mode, norms, prefix_ids=neutral_prefix(tok), progress=progress)
        results[mode] = successor_scores(adapter, x, token_ids, idx, norms, cfg.scores.batch_heads, progress,
                                         value_bias, head_input_norm(mode, norms))
    chance = chance_level(idx)
    # mixture of experts: which experts layer 0's router picks for each task token's mlp0 embedding
    # (a dense model's embeddings are not read again: a streamed model would read W_E from disk);
    # streamed, the router and its input norm are read for this call (on the meta device a
    # router's linear map returns garbage instead of failing)
    experts = None
    if adapter.router(0) is not None:
        with resident(model, adapter.model.get_input_embeddings(), adapter.mlp_in_norm(0), adapter.router(0)):
            experts = adapter.mlp0_experts(adapter.embed(token_ids), norms)
    b = cfg.behaviour
    prompts = ordinal_list_prompts(tok, tasks, n_items=b.n_items, max_per_family=b.max_per_family)
    bos = prompts_carry_bos(tok, prompts) if prompts else False
    checked = candidate_heads(results, b.top_k) if b.top_k > 0 else None
    drops, base_lp = behavioural_drops(adapter, tok, prompts, ablation=b.ablation, progress=progress, heads=checked)
    checked_label = _checked_label(checked, d)

    default = cfg.scores.default_mode
    task_names = results[default].task_names
    datasets = {"task_names": task_names, "n_pairs": results[default].n_pairs,
                "behaviour_logprob_drop": drops.astype(np.float32)}
    for mode, r in results.items():
        datasets[f"scores_{mode}"] = r.per_task.astype(np.float32)
        datasets[f"overall_{mode}"] = r.overall.astype(np.float32)
    if experts is not None:
        datasets["mlp0_token_ids"] = token_ids.numpy().astype(np.int64)
        datasets["mlp0_router_experts"] = experts.cpu().numpy().astype(np.int64)
    attrs = provenance(manifest, **cfg.model.provenance(), default_mode=default, modes=list(cfg.scores.modes),
                       threshold=PAPER_THRESHOLD, n_prompts=len(prompts), ablation=b.ablation,
                       behaviour_heads_checked=checked_label, **method_record(cfg, chance, bos),
                       dims="scores_*: [n_layers, n_heads, n_tasks]; overall_*, behaviour_logprob_drop: [n_layers, n_heads]"
                       + ("; mlp0_router_experts: [n_tokens, top_k] (mixture of experts: layer 0's router choice "
                          "for each of mlp0_token_ids)" if experts is not None else ""))
    write_h5(outputs["h5"], datasets, attrs)

    rows = []
    for layer in range(d.n_layers):
        for head in range(d.n_heads):
            row = {"layer": layer, "head": head, "successor_score": results[default].overall[layer, head]}
            for k, name in enumerate(task_names):
                row[name] = results[default].per_task[layer, head, k]
            for mode, r in results.items():
                if mode != default:
                    row[f"successor_score_{mode}"] = r.overall[layer, head]
            row["behaviour_logprob_drop"] = drops[layer, head]
            rows.append(row)
    df = pd.DataFrame(rows).sort_values("successor_score", ascending=False, kind="stable")
    write_csv(df, outputs["csv"], FIXED4)

    panels = {f"{m} ({'default' if m == default else 'other'})": r.overall for m, r in results.items()}
    panels["behaviour: log-prob drop (nats)"] = drops
    plots.heatmap(panels, f"{cfg.model.name}: successor score per head (norms={norms}, chance {chance:.3f})",
                  outputs["heatmap"])
    top = df.iloc[0]
    tl, th = int(top["layer"]), int(top["head"])
    plots.bars(task_names, results[default].per_task[tl, th],
               f"{cfg.model.name} {head_label(tl, th)}: per-task successor score ({default})", outputs["top"],
               hline=PAPER_THRESHOLD, chance=chance)

    summary = summarise(cfg, results, drops, adapter.n_params(), manifest)
    summary.update(method_record(cfg, chance, bos))
    summary.update(layer_record(manifest))  # a hybrid: which decoder layer each layer index is
    summary.update(memory=manifest["memory"], n_prompts=len(prompts), behaviour_heads_checked=checked_label, baseline_logprob=base_lp,
                   wall_s=round(time.time() - t0, 1),
                   tokens_kept=int(report.n_tokens_kept.sum()), pairs_kept=int(report.n_pairs_kept.sum()),
                   pairs_dropped=int(report.n_pairs_dropped.sum()))
    write_json(summary, outputs["summary"])
    return summary


def method_record(cfg, chance: float, bos: bool) -> dict:
    """The conventions behind this run's numbers, written into ``scores_summary.json`` and the HDF5
    attributes: ``value_bias``, ``norms``, each mode's norm convention (docs/DESIGN.md, "Norm conventions"), the scoring
    dtype (always float32), the chance level (:func:`successor_heads.scores.successor_score.chance_level`) and
    whether the behavioural prompts carry a BOS (then left out of the ablation and the mean)."""
    rec = {"value_bias": bool(cfg.scores.value_bias), "norms": cfg.scores.norms, "scoring_dtype": "float32",
           "chance_level": float(chance), "behaviour_prompts_bos": bool(bos)}
    for mode in cfg.scores.modes:
        conv = norm_convention(mode, cfg.scores.norms)
        rec[f"norm_convention_{mode}"] = ", ".join(f"{k}={'n/a' if v is None else v}" for k, v in conv.items())
    return rec


def candidate_heads(results: dict, top_k: int) -> list[tuple[int, int]]:
    """The union over modes of each mode's ``top_k`` heads by overall successor score: the heads
    a ``behaviour.top_k`` run ablates (``[(layer, head), ...]``, sorted). ``results`` maps a mode to
    an object with ``overall [n_layers, n_heads]``. ``top_k=0`` gives ``[]`` (callers pass None
    for "every head" instead). The behavioural check is ours, not the paper's (docs/DESIGN.md, "Behavioural check")."""
    heads = set()
    for r in results.values():
        flat = np.argsort(-r.overall, axis=None, kind="stable")[:top_k]
        heads.update((int(a), int(b)) for a, b in zip(*np.unravel_index(flat, r.overall.shape)))
    return sorted(heads)


def _checked_label(checked, dims) -> str:
    total = dims.n_layers * dims.n_heads
    return f"all {total} heads" if checked is None else f"{len(checked)} of {total} heads (top-k by score per mode)"


def summarise(cfg, results: dict, drops: np.ndarray, n_params: int, manifest: dict) -> dict:
    """Zoo-table row: per mode the top head and score, heads above the paper's threshold, the runner-up's
    score and the top/runner-up ratio (None when the runner-up scores 0; the paper reports about
    8 for Pythia-1.4B L12H0, Section 2), agreement with the top behavioural head and that head's
    rank. ``drops [n_layers, n_heads]`` may hold NaN for heads the check skipped (``behaviour.top_k``).

    Raises: ValueError when every drop is NaN."""
    default = cfg.scores.default_mode
    bl, bh = np.unravel_index(np.nanargmax(drops), drops.shape)
    out = {"model": cfg.model.name, "family": cfg.model.family, "n_params": int(n_params),
           "quantization": quantization_label(manifest), "norms": cfg.scores.norms,
           "default_mode": default, "top_behaviour_head": head_label(bl, bh),
           "top_behaviour_drop": float(drops[bl, bh])}
    for mode, r in results.items():
        l, h = np.unravel_index(np.argmax(r.overall), r.overall.shape)
        out[f"top_head_{mode}"] = head_label(l, h)
        out[f"top_score_{mode}"] = float(r.overall[l, h])
        out[f"n_above_threshold_{mode}"] = int((r.overall > PAPER_THRESHOLD).sum())
        second = float(np.sort(r.overall, axis=None)[-2]) if r.overall.size > 1 else float("nan")
        out[f"runner_up_score_{mode}"] = second
        # the paper's Pythia-1.4B L12H0 scores about 8x its runner-up; undefined (None) for a
        # runner-up at 0 or a one-head model
        out[f"top_over_runner_up_{mode}"] = float(r.overall[l, h] / second) if second > 0 else None
        out[f"agrees_{mode}"] = bool((l, h) == (bl, bh))
        # rank of the behavioural top head under this mode (1 = first)
        out[f"behaviour_head_rank_{mode}"] = int((r.overall > r.overall[bl, bh]).sum() + 1)
    return out
