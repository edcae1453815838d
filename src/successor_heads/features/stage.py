"""Stage ``features``: mod-10 (and mod-7, mod-12) features from SAEs and linear probes on
MLP0 outputs, read through the successor head (paper, Section 3; docs/DESIGN.md, Mod-10 features).

Steps: (1) the activation cache (:func:`build_cache`, rule ``cache_activations``): MLP0
outputs of numbers 0..``features.numbers_max`` and every succession-task token
(:mod:`successor_heads.features.activations`); (2) ``features.n_saes`` SAEs on a 90/10 split of the
distinct tokens (:mod:`successor_heads.features.sae`), FVU and L0 on the validation tokens; (3) per
modulus m and residue class i, each row's top feature for the successor head (the top head of
``successor_scores.h5``), the class's modal feature per SAE, the mode across SAEs and its
coverage; (4) logistic-regression probes for ``residue mod m`` trained on number tokens,
cross-validated there and tested on the non-numeric succession tokens, and the cosine of each
class's probe direction with its SAE feature (:mod:`successor_heads.features.probes`).

Health checks (ours, not in the paper): each SAE's dead-feature fraction (features that never
fire on a validation row, :func:`successor_heads.features.sae.evaluate`), and probe fits that did not
converge (counted, logged, never silenced). The head's OV circuit has no value bias unless
``scores.value_bias`` is true (recorded as ``value_bias`` in the summary and attributes).

The paper's numbers (GPT-2 / Pythia: modal feature coverage, probe right on the non-numeric
tokens, mean probe-SAE cosine) are :data:`PAPER`, read from :mod:`successor_heads.core.paper`.
The selection science of steps 3 and 4 is :mod:`successor_heads.features.selection`.

Outputs (:data:`successor_heads.core.layout.OUTPUTS` ``["features"]``, in ``results/{model}/features/``):
``directions.h5`` (``directions``: the contract the editing stage reads: ``sae_mod{m}``,
``probe_mod{m}`` ``[m, d_model]`` unit rows, NaN where a class has no tokens; attrs
``successor_head``, ``space``, ``norms``), ``saes.h5`` (``saes``), ``features_table.csv``
(``table``), ``features_summary.json`` (``summary``), ``feature_activations.png``
(``activations_fig``), ``probe_confusion.png`` (``confusion``), ``probe_sae_cosine.png`` (``cosine``).
The activation cache is ``activations/effective_embeddings.h5`` (``["activations"]["h5"]``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from successor_heads.core import plots
from successor_heads.core.effective_embedding import mlp0_embeddings
from successor_heads.core.heads import head_label
from successor_heads.core.paper import paper_values
from successor_heads.features.activations import TokenRows, activation_rows, read_cache, write_cache
from successor_heads.core.h5io import IncompleteOutputError, provenance, write_h5
from successor_heads.core.loading import open_for_stage
from successor_heads.core.streaming import head_circuit, hold, readout_modules
from successor_heads.features.probes import MAX_ITER, confusion, cosines
from successor_heads.features.sae import evaluate, save_saes, top_features, train_sae
from successor_heads.features.selection import head_score_fn, nanmean, probe_results, sae_features, split_tokens
from successor_heads.core.tasks import build_tasks
from successor_heads.core.handoff import load_top_heads
from successor_heads.core.writers import FIXED4, write_csv, write_json

log = logging.getLogger(__name__)

#: the paper's numbers for this stage (Section 3), the ``paper`` field of the summary
PAPER = paper_values("features")


def _cache_key(cfg, manifest) -> str:
    return json.dumps({"model": cfg.model.name, "sha256": manifest.get("sha256"),
                       "numbers_max": cfg.features.numbers_max, "norms": cfg.features.norms,
                       "tasks": asdict(cfg.tasks)}, sort_keys=True, default=str)


def build_cache(cfg, inputs: Mapping[str, str | Path], outputs: Mapping[str, str | Path],
                loaded=None, mem_mb: int | None = None) -> tuple[TokenRows, np.ndarray, dict]:
    """Compute and write the activation cache (module docstring, step 1).

    ``inputs["manifest"]``: the model folder's ``manifest.json``; ``outputs["h5"]``: the cache
    (:func:`successor_heads.core.layout.outputs` of stage ``activations``). ``loaded``: optional
    :class:`~successor_heads.core.loading.LoadedModel` already in memory (from
    :func:`~successor_heads.core.loading.open_model` on that folder); else the folder is opened as
    ``model.memory`` says (``mem_mb``: the job's memory for ``auto``,
    :func:`~successor_heads.core.loading.open_for_stage`). Returns ``(rows, x
    [n_tokens, d_model], attrs)``. Raises: ValueError for bad options or an empty token set.
    """
    path = outputs["h5"]
    model, tok, adapter, manifest = loaded or open_for_stage(cfg, inputs["manifest"], mem_mb)
    rows = activation_rows(tok, build_tasks(tok, **asdict(cfg.tasks)), cfg.features.numbers_max)
    x = mlp0_embeddings(adapter, rows.token_ids, cfg.features.norms, batch_size=1024).cpu()
    attrs = provenance(manifest, **cfg.model.provenance(), norms=cfg.features.norms, numbers_max=cfg.features.numbers_max,
                       cache_key=_cache_key(cfg, manifest))
    write_cache(path, rows, x, attrs)
    log.info("cached %d rows (%s) to %s", len(rows), rows.counts(), path)
    return rows, x.numpy(), attrs


def _load_cache_or_build(cfg, inputs, loaded, manifest, build: bool):
    path = inputs["activations"]
    try:
        rows, x, attrs = read_cache(path)
        if str(attrs.get("cache_key")) == _cache_key(cfg, manifest):
            return rows, x
        if not build:
            raise ValueError(f"{path} was built with another config ({attrs.get('cache_key')}); rerun cache_activations")
    except IncompleteOutputError:
        if not build:
            raise
    return build_cache(cfg, inputs, {"h5": path}, loaded)[:2]


def run(cfg, inputs: Mapping[str, str | Path], outputs: Mapping[str, str | Path], progress: bool = True,
        rebuild_cache: bool = False, mem_mb: int | None = None) -> dict:
    """Run the stage (module docstring) for ``cfg.model``.

    Args:
        cfg: the run's typed config (:class:`successor_heads.config.RootConfig`; a job's: its params).
        inputs: ``manifest`` (the model folder's ``manifest.json``), ``activations`` (the cache,
            built for this config), ``scores`` (``successor_scores.h5``): the names of
            :func:`successor_heads.core.layout.inputs`.
        outputs: the paths to write, by the names of the module docstring
            (:func:`successor_heads.core.layout.outputs`).
        rebuild_cache: (re)build ``inputs["activations"]`` when it is missing or was built with
            another config (the command line); False: such a cache is an error (Snakemake).
        mem_mb: the job's memory (MB; the workflow passes the rule's ``mem_mb`` resource), which
            ``model.memory=auto`` compares the weights with; None: ``cfg.model.resources.mem_mb``.

    Returns: the summary dict also written to ``outputs["summary"]``.
    Raises: ValueError for bad options, an empty token set or a stale cache;
    :class:`~successor_heads.core.handoff.StageInputError` when the scores file is missing (run
    the scores stage first); IncompleteOutputError for a missing cache without ``rebuild_cache``.
    """
    t0 = time.time()
    fc = cfg.features
    layer, head = load_top_heads(inputs["scores"], 1, fc.head_mode, model=cfg.model.name,
                                 option="features.head_mode")[0]
    loaded = open_for_stage(cfg, inputs["manifest"], mem_mb)
    model, tok, adapter, manifest = loaded
    rows, x = _load_cache_or_build(cfg, inputs, loaded, manifest, build=rebuild_cache)
    x_t = torch.as_tensor(x)
    head_norms, value_bias, probe_max_iter = cfg.scores.norms, cfg.scores.value_bias, fc.probe_max_iter
    # weights only from here: a streamed model reads the head's circuit and the readout once
    hold(model, *head_circuit(adapter, layer), *readout_modules(adapter))
    score, ov_norm = head_score_fn(adapter, layer, head, rows, head_norms, value_bias)

    train, val = split_tokens(rows.token_ids, fc.val_fraction, cfg.seed)
    saes, sae_stats, tops, acts = [], [], [], []
    for k in tqdm(range(fc.n_saes), desc="SAEs", disable=not progress):
        sae, hist = train_sae(x_t[train], fc.d_sae, fc.l1_coeff, fc.lr, fc.steps, fc.batch_size,
                              seed=cfg.seed * 1000 + k, tied=fc.tied, progress=progress, desc=f"SAE {k}")
        ev = evaluate(sae, x_t[val])
        top, _, a = top_features(sae, x_t, score, ov_norm(sae.contributions()))
        saes.append(sae)
        tops.append(top)
        acts.append(a)
        sae_stats.append({"fvu": ev["fvu"], "l0": ev["l0"], "dead_fraction": ev["dead_fraction"],
                          "final_loss": hist["loss"][-1], "rows_per_s": round(hist["rows_per_s"])})
        log.info("SAE %d: FVU %.3f, L0 %.1f, dead features %.0f%% (validation)", k, ev["fvu"], ev["l0"],
                 100 * ev["dead_fraction"])

    dirs_out, extra, table, per_mod, figs = {}, {"top_feature": np.stack(tops)}, [], {}, {}
    for m in (int(m) for m in fc.moduli):
        y = rows.residues(m, fc.residue_of)
        sf = sae_features(saes, tops, acts, y, m, rows.mask(), fc.match_cosine)
        pr = probe_results(x, rows, y, m, fc.probe_C, fc.cv_folds, cfg.seed, probe_max_iter)
        cos = cosines(pr["directions"], sf["directions"])
        per_mod[m] = {**sf["summary"], **pr["summary"], "probe_sae_cosine_mean": nanmean(cos),
                      "probe_sae_cosine": cos.tolist()}
        dirs_out.update({f"sae_mod{m}": sf["directions"].astype(np.float32),
                         f"probe_mod{m}": pr["directions"].astype(np.float32),
                         f"sae_feature_mod{m}": sf["feature"], f"sae_index_mod{m}": sf["chosen"]})
        extra.update({f"modal_feature_mod{m}": sf["per_sae_feature"], f"coverage_mod{m}": sf["per_sae_coverage"]})
        table += [{"modulus": m, "residue": i, **{k: v[i] for k, v in sf["table"].items()}, "probe_sae_cosine": cos[i],
                   **{k: v[i] for k, v in pr["table"].items()}} for i in range(m)]
        figs[m] = (sf, pr)

    head_name = head_label(layer, head)
    attrs = provenance(manifest, **cfg.model.provenance(), successor_head=head_name, space="mlp0", norms=fc.norms, head_norms=head_norms,
                       residue_of=fc.residue_of, moduli=[int(m) for m in fc.moduli], counts=rows.counts(),
                       value_bias=value_bias, probe_C=fc.probe_C, probe_max_iter=probe_max_iter,
                       probe_inputs="standardised per coordinate; probe_mod{m} rows mapped back to the mlp0 space",
                       dims="sae_mod{m}, probe_mod{m}: [m, d_model] unit rows (NaN: class without tokens)")
    write_h5(outputs["directions"], dirs_out, attrs)
    dead = [s["dead_fraction"] for s in sae_stats]
    extra.update(train_rows=train, val_rows=val, fvu=[s["fvu"] for s in sae_stats], l0=[s["l0"] for s in sae_stats],
                 dead_fraction=dead)
    save_saes(outputs["saes"], saes, extra, dict(attrs, l1_coeff=fc.l1_coeff, lr=fc.lr, steps=fc.steps,
                                                   batch_size=fc.batch_size, seed=cfg.seed))
    n_fits = sum(v["probe_n_fits"] for v in per_mod.values())
    n_bad = sum(v["probe_n_not_converged"] for v in per_mod.values())
    if n_bad:
        log.warning("%d of %d probe fits did not converge in %d iterations; see features_summary.json",
                    n_bad, n_fits, probe_max_iter)
    write_csv(pd.DataFrame(table), outputs["table"], FIXED4)
    _figures(cfg, rows, acts, figs, outputs)

    summary = {"model": cfg.model.name, "successor_head": head_name, "head_mode": fc.head_mode or "file default",
               "space": "mlp0", "norms": fc.norms, "head_norms": head_norms, "residue_of": fc.residue_of,
               "token_counts": rows.counts(), "n_train_tokens": len(train), "n_val_tokens": len(val),
               "fvu_mean": nanmean([s["fvu"] for s in sae_stats]), "l0_mean": nanmean([s["l0"] for s in sae_stats]),
               "dead_fraction": dead, "dead_fraction_mean": nanmean(dead),
               "value_bias": value_bias, "probe_max_iter": probe_max_iter,
               "probe_n_fits": n_fits, "probe_n_not_converged": n_bad, "probes_converged": n_bad == 0,
               "saes": sae_stats, "moduli": {str(m): v for m, v in per_mod.items()}, "paper": PAPER,
               "memory": manifest["memory"], "wall_s": round(time.time() - t0, 1)}
    write_json(summary, outputs["summary"])
    return summary


def _figures(cfg, rows: TokenRows, acts, figs, outputs: Mapping[str, str | Path]) -> None:
    import matplotlib.pyplot as plt

    name = cfg.model.name
    m0 = 10 if 10 in figs else next(iter(figs))
    sf, pr = figs[m0]
    chosen, feat = sf["chosen"], sf["feature"]
    # 1. modal features' activations over numbers 0..99
    spacings = [g for g in ("numbers_unspaced", "numbers_spaced") if g in rows.group]
    fig, axes = plt.subplots(len(spacings) or 1, 1, figsize=(12, 0.35 * m0 + 1.5) if spacings else (4, 2),
                             squeeze=False)
    n_cols = min(100, 1 + max((v for g, v in zip(rows.group, rows.index) if g in spacings), default=9))
    for ax, g in zip(axes[:, 0], spacings):
        M = np.full((m0, n_cols), np.nan)
        for r, (grp, val) in enumerate(zip(rows.group, rows.index)):
            if grp == g and val < n_cols:
                for i in range(m0):
                    if chosen[i] >= 0:
                        M[i, val] = acts[chosen[i]][r, feat[i]]
        im = ax.imshow(M, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(m0))
        ax.set_yticklabels([f"f{i} (SAE {chosen[i]} #{feat[i]})" for i in range(m0)], fontsize=7)
        ax.set_xlabel(f"number token ({g}; blank: not a single token)")
        fig.colorbar(im, ax=ax, fraction=0.03, label="activation")
    axes[0, 0].set_title(f"{name}: mod-{m0} features on numbers 0-{n_cols - 1}", fontsize=10)
    plots.save(fig, outputs["activations_fig"])
    # 2. probe confusion matrices
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    panels = [("training tokens, cross-validated", pr["cv_pred"], pr["y_train"]),
              ("other succession tokens", pr["test_pred"], pr["y_test"])]
    for ax, (title, pred, true) in zip(axes, panels):
        C = confusion(true, pred, m0) if pred is not None and len(pred) else np.zeros((m0, m0))
        ax.imshow(C, cmap="Blues")
        for (i, j), v in np.ndenumerate(C):
            if v:
                ax.text(j, i, int(v), ha="center", va="center", fontsize=6)
        acc = np.trace(C) / max(C.sum(), 1)
        ax.set_title(f"{title}: {acc:.0%} of {int(C.sum())}", fontsize=9)
        ax.set_xlabel("predicted residue")
        ax.set_ylabel("true residue")
    fig.suptitle(f"{name}: mod-{m0} linear probe", fontsize=10)
    plots.save(fig, outputs["confusion"])
    # 3. probe vs SAE cosines, one panel per modulus
    fig, axes = plt.subplots(1, len(figs), figsize=(4.2 * len(figs), 4), squeeze=False)
    for ax, (m, f) in zip(axes[0], figs.items()):
        P, S = f[1]["directions"], f[0]["directions"]
        with np.errstate(invalid="ignore"):
            C = P @ S.T
        im = ax.imshow(C, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(f"mod {m}: mean diagonal {nanmean(np.diag(C)):.2f}", fontsize=9)
        ax.set_xlabel("SAE feature of residue")
        ax.set_ylabel("probe direction of residue")
    fig.colorbar(im, ax=axes[0, -1], fraction=0.05, label="cosine")
    fig.suptitle(f"{name}: probe vs SAE directions (paper, mod 10: {PAPER['probe_sae_cosine_mod10']})", fontsize=10)
    plots.save(fig, outputs["cosine"])
