"""Feature selection for the mod-m features (paper, Section 3): which SAE feature the successor
head reads for each residue class, and the linear probe for the same classes. The features stage
(:mod:`successor_heads.features.stage`) runs these on the activation cache and writes their results.

* :func:`head_score_fn`: how much a vector helps the successor head predict a row's successor
  (the score :func:`successor_heads.features.sae.top_features` ranks features by);
* :func:`split_tokens`: the SAEs' train/validation split by distinct token;
* :func:`sae_features`: per class, the modal top feature of each SAE and the mode across SAEs;
* :func:`probe_sets` and :func:`probe_results`: the probe's training and test rows, its fit,
  cross-validation and transfer to the non-numeric succession tokens.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from successor_heads.core.ov import head_task_logits, ov_output
from successor_heads.features.activations import NUMBER_FAMILY, TokenRows
from successor_heads.features.probes import MAX_ITER, cross_val_predict, fit_probe
from successor_heads.features.sae import modal_features, mode_across_saes

log = logging.getLogger(__name__)

#: families a probe falls back on when number tokens alone leave a class with < 2 rows
VALUE_FAMILIES = ["number_words", "ordinal_words"]
#: the succession families that wrap with each modulus (past the paper: days mod 7, months mod 12)
CYCLIC_FAMILIES = {7: ["days", "day_prefixes"], 12: ["months", "month_prefixes"]}


def head_score_fn(adapter, layer: int, head: int, rows: TokenRows, norms: str = "raw", value_bias: bool = False):
    """The successor head's score of a vector read as a given row, for :func:`successor_heads.features.sae.top_features`
    (paper Section 3: the feature that matters most to the successor head).

    ``score(x [N, d_model], r [N]) -> [N]`` float32: the logit that head ``layer.head``'s OV
    circuit (:func:`successor_heads.core.ov.head_task_logits`, in float32) gives row r's
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

    def out(x):
        return ov_output(adapter, layer, x, norms, [head], value_bias)[0]

    @torch.no_grad()
    def score(x_NM, r_N):
        r_N = torch.as_tensor(r_N, dtype=torch.long)
        s = torch.full((len(r_N),), float("nan"))
        t = tgt[r_N]
        has = t >= 0
        if bool(has.any()):
            logits = head_task_logits(adapter, layer, head, x_NM[has], U_t, norms, value_bias)
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
    """Mod-``modulus`` SAE features (:mod:`successor_heads.features.stage`, step 3) from each SAE's per-row top features.

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
    summary = {"coverage_mean": nanmean(coverage), "coverage": coverage.tolist(),
               "coverage_mean_over_saes": nanmean(covs), "fires_on_class_mean": nanmean(fires),
               "agreement_mean": float(agree[has].mean()) if has.any() else float("nan"),
               "n_rows_per_class": n_rows.tolist()}
    table = {"n_rows": n_rows, "sae": chosen, "feature": feature, "coverage": coverage, "fires_on_class": fires,
             "agreement": agree}
    return {"directions": dirs, "chosen": chosen, "feature": feature, "per_sae_feature": feats,
            "per_sae_coverage": covs, "summary": summary, "table": table}


def probe_results(x, rows: TokenRows, y, modulus: int, C: float = 1.0, folds: int = 5, seed: int = 0,
                  max_iter: int = MAX_ITER) -> dict:
    """Mod-``modulus`` probe (:mod:`successor_heads.features.stage`, step 4; paper Section 3) on ``x [n_tokens,
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


def nanmean(v) -> float:
    """Mean of the finite entries of ``v``; NaN (no warning) when there are none."""
    v = np.asarray(v, float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
