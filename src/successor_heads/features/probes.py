"""Linear probes for index mod m on effective embeddings (paper, Section 3).

The paper trains linear probes to predict a number token's value mod 10 from its MLP0 output,
tests them on the non-numeric succession tokens (94 of 102 right: February -> 2) and compares
each class's probe direction with the SAE's mod-10 feature for that class (mean cosine 0.71).
We do the same for any modulus (10, and past the paper 7 for days and 12 for months).

A probe is a multinomial scikit-learn ``LogisticRegression`` (L2, ``C``) on standardised
inputs: a ``Pipeline`` of ``StandardScaler`` (each of the ``d_model`` coordinates centred and
divided by its standard deviation, so no coordinate dominates the lbfgs solve by its units)
and the regression. The probe's weights are then expressed back in the original
effective-embedding space: with the scaler's mean ``mu`` and scale ``sd``, class c's logit is
``((x - mu) / sd) . coef_[c] + b_c = x . w_c + b'_c`` with ``w_c = coef_[c] / sd`` and
``b'_c = b_c - (mu / sd) . coef_[c]``; the probe direction of class c is ``w_c / |w_c|``, a
direction in the MLP0 space the SAEs and the editing stage use.

A fit that stops at ``max_iter`` (scikit-learn's ``ConvergenceWarning``) is not silenced: it
is recorded on the :class:`Probe` (``converged=False``) and logged as a warning; the features
stage counts such fits in ``features_summary.json``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

#: lbfgs iteration cap of a probe (``features.probe_max_iter``).
MAX_ITER = 5000


@dataclass
class Probe:
    """A fitted probe.

    Fields: ``clf`` the fitted ``Pipeline(StandardScaler, LogisticRegression)``; ``modulus``;
    ``weights [modulus, d_model]`` and ``intercepts [modulus]`` in the original (unstandardised)
    space, so ``x @ weights.T + intercepts`` are the class logits (NaN rows for classes absent
    from training); ``directions [modulus, d_model]`` the unit-norm ``weights`` rows;
    ``classes`` the residues seen in training; ``converged`` False when lbfgs stopped at
    ``max_iter``; ``n_iter`` the iterations it ran.
    """

    clf: object
    modulus: int
    weights: np.ndarray
    intercepts: np.ndarray
    directions: np.ndarray
    classes: np.ndarray
    converged: bool = True
    n_iter: int = 0

    def predict(self, x_TM) -> np.ndarray:
        """``[n_tokens, d_model]`` (original units) -> predicted residue ``[n_tokens]`` int64."""
        x = np.asarray(x_TM, np.float64)
        if len(x) == 0:
            return np.zeros(0, np.int64)
        with threadpool_limits(1):
            return np.asarray(self.clf.predict(x), np.int64)

    def decision(self, x_TM) -> np.ndarray:
        """Class logits from the original-space weights: ``[n_tokens, d_model]`` ->
        ``[n_tokens, modulus]`` (NaN columns for absent classes); their ``np.nanargmax`` over
        classes is :meth:`predict`."""
        return np.asarray(x_TM, np.float64) @ self.weights.T + self.intercepts


def _check(x, y, modulus):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.int64)
    if isinstance(modulus, bool) or int(modulus) != modulus or int(modulus) < 2:
        raise ValueError(f"modulus={modulus!r}: must be an integer >= 2")
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"probe data has shape {x.shape}: need [n_tokens >= 1, d_model] (empty token set?)")
    if y.shape != (len(x),):
        raise ValueError(f"labels have shape {y.shape}; expected ({len(x)},)")
    if (y < 0).any() or (y >= modulus).any():
        raise ValueError(f"labels must lie in 0..{modulus - 1}")
    if len(np.unique(y)) < 2:
        raise ValueError(f"a probe needs rows of at least 2 classes; got only class(es) {np.unique(y).tolist()}")
    return x, y


def input_scale(x_TM) -> float:
    """Scalar that brings the rows' mean squared centred norm to ``d_model`` (1.0 if constant).
    Kept for callers that want one global scale; probes standardise per coordinate instead."""
    x = np.asarray(x_TM, np.float64)
    var = ((x - x.mean(0)) ** 2).sum(1).mean()
    return float(np.sqrt(x.shape[1] / var)) if var > 0 else 1.0


def _clf(C: float, seed: int, max_iter: int = MAX_ITER):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if not C > 0:
        raise ValueError(f"features.probe_C={C!r}: must be > 0")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"features.probe_max_iter={max_iter!r}: must be an integer >= 1")
    return Pipeline([("scale", StandardScaler()),
                     ("lr", LogisticRegression(C=float(C), max_iter=int(max_iter), random_state=int(seed)))])


def fit_probe(x_TM, y_T, modulus: int, C: float = 1.0, seed: int = 0, max_iter: int = MAX_ITER) -> Probe:
    """Fit a probe predicting ``y_T [n_tokens]`` (residues ``0..modulus-1``) from ``x_TM
    [n_tokens, d_model]`` on standardised inputs (module docstring; paper Section 3).

    Returns a :class:`Probe` whose ``weights``/``directions`` live in the original space of
    ``x_TM``. A fit that does not converge within ``max_iter`` lbfgs iterations is kept, marked
    ``converged=False`` and logged as a warning (not silenced); other warnings pass through.

    Raises: ValueError for modulus < 2, empty data, labels out of range, fewer than 2 classes,
    ``C <= 0`` or ``max_iter < 1``.
    """
    from sklearn.exceptions import ConvergenceWarning

    x, y = _check(x_TM, y_T, modulus)
    clf = _clf(C, seed, max_iter)
    # One BLAS thread: these problems are small, and on a shared or busy machine more threads
    # oversubscribe the cores (measured: 10x slower on 2 busy cores).
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1):
        warnings.simplefilter("always", ConvergenceWarning)  # record every one, even repeats
        clf.fit(x, y)
    converged = True
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:  # not ours to judge: hand it on unchanged
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    sc, lr = clf.named_steps["scale"], clf.named_steps["lr"]
    n_iter = int(np.max(lr.n_iter_))
    if not converged:
        log.warning("probe mod %d did not converge in %d lbfgs iterations (C=%g, %d rows); "
                    "raise features.probe_max_iter", int(modulus), int(max_iter), C, len(y))
    # back to the original space: x . (coef / sd) + (b - (mu / sd) . coef)
    W = np.asarray(lr.coef_, np.float64) / sc.scale_[None, :]
    b = np.asarray(lr.intercept_, np.float64) - W @ sc.mean_
    if len(lr.classes_) == 2:  # binary: one weight row w for class 1; class 0 gets -w
        W, b = np.stack([-W[0], W[0]]), np.array([-b[0], b[0]])
    weights = np.full((int(modulus), x.shape[1]), np.nan)
    intercepts = np.full(int(modulus), np.nan)
    dirs = np.full((int(modulus), x.shape[1]), np.nan)
    for row, b_c, c in zip(W, b, lr.classes_):
        weights[int(c)], intercepts[int(c)] = row, b_c
        dirs[int(c)] = row / max(np.linalg.norm(row), 1e-12)
    return Probe(clf, int(modulus), weights, intercepts, dirs, np.asarray(lr.classes_, np.int64),
                 converged, n_iter)


def cross_val_predict(x_TM, y_T, modulus: int, C: float = 1.0, folds: int = 5, seed: int = 0,
                      groups_T=None, max_iter: int = MAX_ITER,
                      probes_out: list | None = None) -> tuple[np.ndarray | None, int]:
    """Stratified k-fold predictions ``[n_tokens]`` for every row, each from a probe that did
    not see it. ``groups_T [n_tokens]`` (e.g. the number's value, so " 7" and "7", or "one" and
    "One", always fall in the same fold) keeps a group's rows together; ``folds`` is lowered to
    the smallest number of groups (or rows) in a class. ``probes_out``: a list each fold's
    fitted :class:`Probe` is appended to (e.g. to count fits with ``converged=False``).

    Returns ``(pred or None, folds used)``: None and 0 when some class has a single group, so
    no split can both hold it out and train on it. Raises: as :func:`fit_probe`; ValueError
    for ``folds < 2`` or ``groups_T`` of the wrong length.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    x, y = _check(x_TM, y_T, modulus)
    if isinstance(folds, bool) or int(folds) < 2:
        raise ValueError(f"features.cv_folds={folds!r}: must be >= 2")
    groups = np.arange(len(y)) if groups_T is None else np.asarray(groups_T)
    if groups.shape != y.shape:
        raise ValueError(f"groups have shape {groups.shape}; expected {y.shape}")
    k = min(int(folds), min(len(np.unique(groups[y == c])) for c in np.unique(y)))
    if k < 2:
        return None, 0
    if groups_T is None:
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=int(seed)).split(x, y)
    else:
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(seed)).split(x, y, groups)
    pred = np.full(len(y), -1, np.int64)
    for tr, te in splits:
        if len(np.unique(y[tr])) < 2:
            return None, 0
        probe = fit_probe(x[tr], y[tr], modulus, C, seed, max_iter)
        if probes_out is not None:
            probes_out.append(probe)
        pred[te] = probe.predict(x[te])
    return pred, k


def confusion(y_true, y_pred, modulus: int) -> np.ndarray:
    """``[modulus, modulus]`` counts: rows = true residue, columns = predicted (predictions
    outside ``0..modulus-1``, e.g. -1 for "no probe", are not counted)."""
    t, p = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    ok = (p >= 0) & (p < modulus) & (t >= 0) & (t < modulus)
    m = np.zeros((modulus, modulus), np.int64)
    np.add.at(m, (t[ok], p[ok]), 1)
    return m


def cosines(a_CM, b_CM) -> np.ndarray:
    """Row-wise cosine of ``[n_classes, d_model]`` arrays -> ``[n_classes]`` (NaN where a row is NaN/zero)."""
    a, b = np.asarray(a_CM, np.float64), np.asarray(b_CM, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
