"""Stage ``features``: mod-10 (and mod-7, mod-12) features from SAEs and linear probes on
MLP0 outputs, read through the successor head (paper, Section 3; DESIGN.md, Mod-10 features).

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

Paper numbers (GPT-2 / Pythia): modal feature covers 58.5% of its class on average; probe right
on 94 of 102 non-numeric tokens; mean probe-SAE cosine 0.71.

Outputs in ``out_dir/features/``: ``directions.h5`` (the contract the editing stage reads:
``sae_mod{m}``, ``probe_mod{m}`` ``[m, d_model]`` unit rows, NaN where a class has no tokens;
attrs ``successor_head``, ``space``, ``norms``), ``saes.h5``, ``features_table.csv``,
``features_summary.json``, ``feature_activations.png``, ``probe_confusion.png``,
``probe_sae_cosine.png``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from successor_heads.core import plots
from successor_heads.features.activations import NUMBER_FAMILY, TokenRows, activation_rows, mlp0_embeddings, read_cache, write_cache
from successor_heads.core.adapters import NORM_OPTIONS, get_adapter
from successor_heads.core.atomic import atomic_path
from successor_heads.core.h5io import IncompleteOutputError, provenance, write_h5
from successor_heads.core.loading import load_model, read_manifest
from successor_heads.features.probes import MAX_ITER, confusion, cosines, cross_val_predict, fit_probe
from successor_heads.features.sae import evaluate, modal_features, mode_across_saes, save_saes, top_features, train_sae
from successor_heads.core.tasks import build_tasks
from successor_heads.core.ov import value_bias_of
from successor_heads.core.handoff import load_top_heads

log = logging.getLogger(__name__)

CACHE = "activations/effective_embeddings.h5"
OUTPUTS = ("features/directions.h5", "features/saes.h5", "features/features_table.csv",
           "features/features_summary.json", "features/feature_activations.png",
           "features/probe_confusion.png", "features/probe_sae_cosine.png")
#: families a probe falls back on when number tokens alone leave a class with < 2 rows
VALUE_FAMILIES = ["number_words", "ordinal_words"]
#: the succession families that wrap with each modulus (past the paper: days mod 7, months mod 12)
CYCLIC_FAMILIES = {7: ["days", "day_prefixes"], 12: ["months", "month_prefixes"]}
PAPER = {"coverage_mod10": 0.585, "nonnumeric_probe_correct": "94/102", "probe_sae_cosine_mod10": 0.71}


def check_config(fc) -> None:
    """Reject bad ``features`` options with a message naming the key. Raises: ValueError."""
    def integer(name, lo):
        v = fc[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"features.{name}={v!r}: must be an integer >= {lo}")
    for name, lo in (("numbers_max", 0), ("n_saes", 1), ("d_sae", 1), ("steps", 1), ("batch_size", 1),
                     ("cv_folds", 2)):
        integer(name, lo)
    if "probe_max_iter" in fc:  # absent from configs written before the key
        integer("probe_max_iter", 1)
    if not 0 < fc.val_fraction < 1:
        raise ValueError(f"features.val_fraction={fc.val_fraction!r}: must be in (0, 1)")
    if fc.l1_coeff < 0 or fc.lr <= 0 or fc.probe_C <= 0:
        raise ValueError("features.l1_coeff must be >= 0, features.lr and features.probe_C > 0")
    if not fc.moduli or any(isinstance(m, bool) or int(m) != m or m < 2 for m in fc.moduli):
        raise ValueError(f"features.moduli={list(fc.moduli)!r}: must be a non-empty list of integers >= 2")
    if fc.residue_of not in ("position", "index"):
        raise ValueError(f"features.residue_of={fc.residue_of!r}: must be 'position' or 'index'")
    if fc.norms not in NORM_OPTIONS:
        raise ValueError(f"features.norms={fc.norms!r}: must be one of {NORM_OPTIONS}")
    if not -1 <= fc.match_cosine <= 1:
        raise ValueError(f"features.match_cosine={fc.match_cosine!r}: must be in [-1, 1]")


def _cache_key(cfg, manifest) -> str:
    return json.dumps({"model": cfg.model.name, "sha256": manifest.get("sha256"),
                       "numbers_max": cfg.features.numbers_max, "norms": cfg.features.norms,
                       "tasks": {k: cfg.tasks[k] for k in cfg.tasks}}, sort_keys=True, default=str)


def build_cache(cfg, model_dir, path, loaded=None) -> tuple[TokenRows, np.ndarray, dict]:
    """Compute and write the activation cache ``path`` (module docstring, step 1).

    ``loaded``: optional ``(model, tokenizer)`` already in memory. Returns ``(rows, x
    [n_tokens, d_model], attrs)``. Raises: ValueError for bad options or an empty token set.
    """
    check_config(cfg.features)
    manifest = read_manifest(model_dir)
    model, tok = loaded or load_model(model_dir, cfg.model.dtype, cfg.device)
    adapter = get_adapter(model)
    rows = activation_rows(tok, build_tasks(tok, cfg.tasks), cfg.features.numbers_max)
    x = mlp0_embeddings(adapter, rows.token_ids, cfg.features.norms)
    attrs = provenance(cfg, manifest, norms=cfg.features.norms, numbers_max=cfg.features.numbers_max,
                       cache_key=_cache_key(cfg, manifest))
    write_cache(path, rows, x, attrs)
    log.info("cached %d rows (%s) to %s", len(rows), rows.counts(), path)
    return rows, x.numpy(), attrs


def head_score_fn(adapter, layer: int, head: int, rows: TokenRows, norms: str = "raw", value_bias: bool = False):
    """The successor head's score of a vector read as a given row, for :func:`successor_heads.features.sae.top_features`
    (paper Section 3: the feature that matters most to the successor head).

    ``score(x [N, d_model], r [N]) -> [N]`` float32: the logit that head ``layer.head``'s OV
    circuit (:meth:`Adapter.ov`, then :meth:`Adapter.unembed`, in float32) gives row r's
    successor token minus the mean logit over the tokens of row r's group (its task, or all
    numbers of its spacing); NaN for rows without a single-token successor. Also returns
    ``ov_norm(C [d_sae, d_model]) -> [d_sae]``, ``|OV(c) - OV(0)|``, the fallback weight.
    ``value_bias`` adds ``b_V W_O`` to the OV output (``scores.value_bias``; default False, the
    paper's circuit). That vector is the same for every input, but its logits differ per token,
    so it shifts every score's margin by the same per-row amount (and, with ``norms="applied"``,
    interacts with the norms); with ``norms="raw"`` it cancels in ``ov_norm``.
    """
    U = sorted(set(rows.token_ids) | {s for s in rows.successor_id if s >= 0})
    pos = {t: i for i, t in enumerate(U)}
    U_t = torch.tensor(U, dtype=torch.long)
    groups = sorted(set(rows.group))
    gid = torch.tensor([groups.index(g) for g in rows.group])
    G = torch.zeros(len(groups), len(U))
    for g, t in zip(gid.tolist(), rows.token_ids):
        G[g, pos[t]] = 1.0
    G /= G.sum(1, keepdim=True)
    tgt = torch.tensor([pos[s] if s >= 0 else -1 for s in rows.successor_id])
    heads = torch.tensor([head])

    @torch.no_grad()
    def out(x):  # float32 in: Adapter.ov computes in float32 whatever the model dtype
        return adapter.ov(layer, x.to(adapter.device, torch.float32), norms, heads=heads, value_bias=value_bias)[0]

    @torch.no_grad()
    def score(x_NM, r_N):
        r_N = torch.as_tensor(r_N, dtype=torch.long)
        s = torch.full((len(r_N),), float("nan"))
        t = tgt[r_N]
        has = t >= 0
        if bool(has.any()):
            logits = adapter.unembed(out(x_NM[has]), norms, token_ids=U_t).float().cpu()
            s[has] = logits.gather(1, t[has][:, None])[:, 0] - (logits * G[gid[r_N[has]]]).sum(1)
        return s

    @torch.no_grad()
    def ov_norm(C_FM):
        return (out(C_FM) - out(torch.zeros(1, C_FM.shape[1]))).float().norm(dim=-1).cpu()

    return score, ov_norm


def split_tokens(token_ids, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, val)`` of one row per distinct token id, split ``1 - val_fraction :
    val_fraction`` at random (``seed``); at least one token on each side. Raises: ValueError
    for fewer than 2 distinct tokens."""
    _, first = np.unique(np.asarray(token_ids), return_index=True)
    if len(first) < 2:
        raise ValueError(f"only {len(first)} distinct token(s): cannot split into train and validation")
    perm = np.random.default_rng(int(seed)).permutation(np.sort(first))
    n_val = min(max(1, round(val_fraction * len(perm))), len(perm) - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _load_cache_or_build(cfg, model_dir, path, loaded, manifest, build: bool):
    try:
        rows, x, attrs = read_cache(path)
        if str(attrs.get("cache_key")) == _cache_key(cfg, manifest):
            return rows, x
        if not build:
            raise ValueError(f"{path} was built with another config ({attrs.get('cache_key')}); rerun cache_activations")
    except IncompleteOutputError:
        if not build:
            raise
    return build_cache(cfg, model_dir, path, loaded)[:2]


def probe_sets(rows: TokenRows, y: np.ndarray, modulus: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Probe training and test rows: number tokens (plus number and ordinal words when numbers
    leave a class with fewer than 2 rows, e.g. digit-splitting tokenizers) vs the rest; held-out
    tasks in neither. Returns ``(train_families, train_mask [n_tokens], test_mask [n_tokens])``."""
    fams = [NUMBER_FAMILY]
    train = rows.mask([NUMBER_FAMILY])
    if np.bincount(y[train], minlength=modulus).min() < 2:
        fams += VALUE_FAMILIES
        train = rows.mask(fams)
    return fams, train, rows.mask(exclude=fams)


def sae_features(saes, tops, acts, y, modulus: int, keep, match_cosine: float = 0.9) -> dict:
    """Mod-``modulus`` SAE features (module docstring, step 3) from each SAE's per-row top features.

    Args: ``saes`` (n_saes SAEs), ``tops`` (n_saes arrays ``[n_tokens]`` from
    :func:`successor_heads.features.sae.top_features`), ``acts`` (n_saes arrays ``[n_tokens, d_sae]``),
    ``y [n_tokens]`` residues, ``keep [n_tokens]`` bool rows that count.

    Returns a dict: ``directions [m, d_model]`` (NaN rows: class without a feature), ``chosen``
    / ``feature [m]`` (SAE and feature index, -1: none), ``per_sae_feature`` / ``per_sae_coverage``
    ``[n_saes, m]``, ``summary`` (JSON-ready) and ``table`` (per-class columns).
    """
    per = [modal_features(top, y, modulus, keep) for top in tops]
    feats, covs, n_rows = np.stack([p[0] for p in per]), np.stack([p[1] for p in per]), per[0][2]
    D = np.stack([np.where((f >= 0)[:, None], s.directions().numpy()[np.maximum(f, 0)], np.nan)
                  for s, f in zip(saes, feats)])
    chosen, dirs, agree = mode_across_saes(D, covs, match_cosine)
    feature = np.array([feats[s, i] if s >= 0 else -1 for i, s in enumerate(chosen)], np.int64)
    coverage = np.array([covs[s, i] if s >= 0 else np.nan for i, s in enumerate(chosen)])
    fires = np.array([np.nan if s < 0 else float((acts[s][keep & (y == i), feature[i]] > 0).mean())
                      for i, s in enumerate(chosen)])
    has = chosen >= 0
    summary = {"coverage_mean": _nanmean(coverage), "coverage": coverage.tolist(),
               "coverage_mean_over_saes": _nanmean(covs), "fires_on_class_mean": _nanmean(fires),
               "agreement_mean": float(agree[has].mean()) if has.any() else float("nan"),
               "n_rows_per_class": n_rows.tolist()}
    table = {"n_rows": n_rows, "sae": chosen, "feature": feature, "coverage": coverage, "fires_on_class": fires,
             "agreement": agree}
    return {"directions": dirs, "chosen": chosen, "feature": feature, "per_sae_feature": feats,
            "per_sae_coverage": covs, "summary": summary, "table": table}


def probe_results(x, rows: TokenRows, y, modulus: int, C: float = 1.0, folds: int = 5, seed: int = 0,
                  max_iter: int = MAX_ITER) -> dict:
    """Mod-``modulus`` probe (module docstring, step 4; paper Section 3) on ``x [n_tokens,
    d_model]`` with residues ``y [n_tokens]``: trained on :func:`probe_sets`' rows (inputs
    standardised, :func:`successor_heads.features.probes.fit_probe`), cross-validated there with folds
    grouped by value, tested on the rest.

    Returns a dict: ``directions [m, d_model]`` (unit rows in the original MLP0 space of ``x``;
    NaN rows when a class is absent or no probe could be fitted), ``summary`` (with
    ``probe_converged``: the main fit's, None without one; ``probe_n_fits`` and
    ``probe_n_not_converged`` over the main fit and the CV folds), ``table``, and the
    predictions for the figures. Raises: ValueError as :func:`~successor_heads.features.probes.fit_probe`.
    """
    fams, tr, te = probe_sets(rows, y, modulus)
    dirs = np.full((modulus, x.shape[1]), np.nan)
    te_pred = np.full(int(te.sum()), -1, np.int64)
    cv_pred, k, fits, converged = None, 0, [], None
    if tr.any() and len(np.unique(y[tr])) >= 2:
        probe = fit_probe(x[tr], y[tr], modulus, C, seed, max_iter)
        dirs, te_pred, converged = probe.directions, probe.predict(x[te]), probe.converged
        fits.append(probe)
        cv_pred, k = cross_val_predict(x[tr], y[tr], modulus, C, folds, seed, groups_T=np.asarray(rows.position)[tr],
                                       max_iter=max_iter, probes_out=fits)
    else:
        log.warning("mod %d: too few training rows for a probe (%d rows of families %s)", modulus, tr.sum(), fams)
    y_tr, y_te = y[tr], y[te]
    fam_te = np.asarray(rows.family, dtype=object)[te]
    per_family = {f: f"{int((te_pred[fam_te == f] == y_te[fam_te == f]).sum())}/{int((fam_te == f).sum())}"
                  for f in sorted(set(fam_te))}
    cyc = np.isin(fam_te, CYCLIC_FAMILIES.get(modulus, []))
    n_bad = sum(not f.converged for f in fits)
    if n_bad:
        log.warning("mod %d: %d of %d probe fits did not converge (raise features.probe_max_iter)",
                    modulus, n_bad, len(fits))
    summary = {"probe_train_families": fams, "probe_n_train": int(tr.sum()), "probe_cv_folds": k,
               "probe_converged": converged, "probe_n_fits": len(fits), "probe_n_not_converged": n_bad,
               "probe_cv_accuracy": float((cv_pred == y_tr).mean()) if cv_pred is not None else float("nan"),
               "probe_test_correct": int((te_pred == y_te).sum()), "probe_test_total": int(te.sum()),
               "probe_test_accuracy": float((te_pred == y_te).mean()) if te.any() else float("nan"),
               "probe_test_per_family": per_family,
               "probe_cyclic_accuracy": float((te_pred[cyc] == y_te[cyc]).mean()) if cyc.any() else None}
    table = {"probe_train_rows": np.bincount(y_tr, minlength=modulus),
             "probe_test_rows": np.bincount(y_te, minlength=modulus),
             "probe_test_correct": np.bincount(y_te[te_pred == y_te], minlength=modulus)}
    return {"directions": dirs, "summary": summary, "table": table, "cv_pred": cv_pred, "y_train": y_tr,
            "test_pred": te_pred, "y_test": y_te}


def run(cfg, model_dir, out_dir, progress: bool = True, activations=None, scores=None) -> dict:
    """Run the stage (module docstring) for ``cfg.model``.

    Args:
        cfg: resolved config (full, or the ``features`` stage view).
        model_dir: folder written by :func:`successor_heads.models.fetch_model`.
        out_dir: ``results/{model}``.
        activations: the cache to read (Snakemake passes it; must match the config). None: use
            ``out_dir/activations/effective_embeddings.h5``, (re)building it when missing or stale.
        scores: ``successor_scores.h5`` (default ``out_dir/successor_scores.h5``).

    Returns: the summary dict also written to ``features/features_summary.json``.
    Raises: ValueError for bad options or an empty token set; IncompleteOutputError when the
    scores file is missing (run the scores stage first).
    """
    t0 = time.time()
    fc = cfg.features
    check_config(fc)
    out_dir, fdir = Path(out_dir), Path(out_dir) / "features"
    scores = Path(scores) if scores else out_dir / "successor_scores.h5"
    layer, head = load_top_heads(scores, 1, fc.head_mode)[0]
    manifest = read_manifest(model_dir)
    model, tok = load_model(model_dir, cfg.model.dtype, cfg.device)
    adapter = get_adapter(model)
    rows, x = _load_cache_or_build(cfg, model_dir, Path(activations or out_dir / CACHE), (model, tok), manifest,
                                   build=activations is None)
    x_t = torch.as_tensor(x)
    head_norms = cfg.scores.norms if "scores" in cfg else fc.norms
    value_bias = value_bias_of(cfg)  # False when absent: the paper's OV circuit has no b_V
    probe_max_iter = int(fc.get("probe_max_iter", MAX_ITER))
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
        per_mod[m] = {**sf["summary"], **pr["summary"], "probe_sae_cosine_mean": _nanmean(cos),
                      "probe_sae_cosine": cos.tolist()}
        dirs_out.update({f"sae_mod{m}": sf["directions"].astype(np.float32),
                         f"probe_mod{m}": pr["directions"].astype(np.float32),
                         f"sae_feature_mod{m}": sf["feature"], f"sae_index_mod{m}": sf["chosen"]})
        extra.update({f"modal_feature_mod{m}": sf["per_sae_feature"], f"coverage_mod{m}": sf["per_sae_coverage"]})
        table += [{"modulus": m, "residue": i, **{k: v[i] for k, v in sf["table"].items()}, "probe_sae_cosine": cos[i],
                   **{k: v[i] for k, v in pr["table"].items()}} for i in range(m)]
        figs[m] = (sf, pr)

    head_name = f"L{layer}H{head}"
    attrs = provenance(cfg, manifest, successor_head=head_name, space="mlp0", norms=fc.norms, head_norms=head_norms,
                       residue_of=fc.residue_of, moduli=[int(m) for m in fc.moduli], counts=rows.counts(),
                       value_bias=value_bias, probe_C=fc.probe_C, probe_max_iter=probe_max_iter,
                       probe_inputs="standardised per coordinate; probe_mod{m} rows mapped back to the mlp0 space",
                       dims="sae_mod{m}, probe_mod{m}: [m, d_model] unit rows (NaN: class without tokens)")
    write_h5(fdir / "directions.h5", dirs_out, attrs)
    dead = [s["dead_fraction"] for s in sae_stats]
    extra.update(train_rows=train, val_rows=val, fvu=[s["fvu"] for s in sae_stats], l0=[s["l0"] for s in sae_stats],
                 dead_fraction=dead)
    save_saes(fdir / "saes.h5", saes, extra, dict(attrs, l1_coeff=fc.l1_coeff, lr=fc.lr, steps=fc.steps,
                                                   batch_size=fc.batch_size, seed=cfg.seed))
    n_fits = sum(v["probe_n_fits"] for v in per_mod.values())
    n_bad = sum(v["probe_n_not_converged"] for v in per_mod.values())
    if n_bad:
        log.warning("%d of %d probe fits did not converge in %d iterations; see features_summary.json",
                    n_bad, n_fits, probe_max_iter)
    with atomic_path(fdir / "features_table.csv") as tmp:
        pd.DataFrame(table).to_csv(tmp, index=False, float_format="%.4f")
    _figures(cfg, rows, acts, figs, fdir)

    summary = {"model": cfg.model.name, "successor_head": head_name, "head_mode": fc.head_mode or "file default",
               "space": "mlp0", "norms": fc.norms, "head_norms": head_norms, "residue_of": fc.residue_of,
               "token_counts": rows.counts(), "n_train_tokens": len(train), "n_val_tokens": len(val),
               "fvu_mean": _nanmean([s["fvu"] for s in sae_stats]), "l0_mean": _nanmean([s["l0"] for s in sae_stats]),
               "dead_fraction": dead, "dead_fraction_mean": _nanmean(dead),
               "value_bias": value_bias, "probe_max_iter": probe_max_iter,
               "probe_n_fits": n_fits, "probe_n_not_converged": n_bad, "probes_converged": n_bad == 0,
               "saes": sae_stats, "moduli": {str(m): v for m, v in per_mod.items()}, "paper": PAPER,
               "wall_s": round(time.time() - t0, 1)}
    with atomic_path(fdir / "features_summary.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, default=_json_default))
    return summary


def _nanmean(v) -> float:
    v = np.asarray(v, float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def _json_default(o):
    return o.item() if hasattr(o, "item") else str(o)


def _figures(cfg, rows: TokenRows, acts, figs, fdir: Path) -> None:
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
    plots.save(fig, fdir / "feature_activations.png")
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
    plots.save(fig, fdir / "probe_confusion.png")
    # 3. probe vs SAE cosines, one panel per modulus
    fig, axes = plt.subplots(1, len(figs), figsize=(4.2 * len(figs), 4), squeeze=False)
    for ax, (m, f) in zip(axes[0], figs.items()):
        P, S = f[1]["directions"], f[0]["directions"]
        with np.errstate(invalid="ignore"):
            C = P @ S.T
        im = ax.imshow(C, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(f"mod {m}: mean diagonal {_nanmean(np.diag(C)):.2f}", fontsize=9)
        ax.set_xlabel("SAE feature of residue")
        ax.set_ylabel("probe direction of residue")
    fig.colorbar(im, ax=axes[0, -1], fraction=0.05, label="cosine")
    fig.suptitle(f"{name}: probe vs SAE directions (paper, mod 10: 0.71)", fontsize=10)
    plots.save(fig, fdir / "probe_sae_cosine.png")
