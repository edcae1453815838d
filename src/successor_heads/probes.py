"""Linear probes for index mod m on effective embeddings (paper, Section 3).

The paper trains linear probes to predict a number token's value mod 10 from its MLP0 output,
tests them on the non-numeric succession tokens (94 of 102 right: February -> 2) and compares
each class's probe direction with the SAE's mod-10 feature for that class (mean cosine 0.71).
We do the same for any modulus (10, and past the paper 7 for days and 12 for months).

A probe is a multinomial scikit-learn ``LogisticRegression`` (L2, ``C``) on the rows scaled by
one scalar (mean squared centred norm = ``d_model``), so its weight rows are directions in the
effective-embedding space itself; class c's probe direction is ``coef_[c] / |coef_[c]|``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits


@dataclass
class Probe:
    """A fitted probe. ``directions [modulus, d_model]`` unit-norm (NaN rows for classes absent
    from training); ``classes``: the residues seen in training; ``scale``: input scale."""

    clf: object
    modulus: int
    scale: float
    directions: np.ndarray
    classes: np.ndarray

    def predict(self, x_TM) -> np.ndarray:
        """``[n_tokens, d_model]`` -> predicted residue ``[n_tokens]``."""
        x = np.asarray(x_TM, np.float64)
        if len(x) == 0:
            return np.zeros(0, np.int64)
        with threadpool_limits(1):
            return np.asarray(self.clf.predict(x * self.scale), np.int64)


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
    """Scalar that brings the rows' mean squared centred norm to ``d_model`` (1.0 if constant)."""
    x = np.asarray(x_TM, np.float64)
    var = ((x - x.mean(0)) ** 2).sum(1).mean()
    return float(np.sqrt(x.shape[1] / var)) if var > 0 else 1.0


def _clf(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    if not C > 0:
        raise ValueError(f"features.probe_C={C!r}: must be > 0")
    return LogisticRegression(C=float(C), max_iter=5000, random_state=int(seed))


def fit_probe(x_TM, y_T, modulus: int, C: float = 1.0, seed: int = 0) -> Probe:
    """Fit a probe predicting ``y_T [n_tokens]`` (residues ``0..modulus-1``) from ``x_TM [n_tokens, d_model]``.

    Raises: ValueError for modulus < 2, empty data, labels out of range, fewer than 2 classes,
    ``C <= 0``.
    """
    x, y = _check(x_TM, y_T, modulus)
    s = input_scale(x)
    clf = _clf(C, seed)
    # One BLAS thread: these problems are small, and on a shared or busy machine more threads
    # oversubscribe the cores (measured: 10x slower on 2 busy cores).
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # lbfgs convergence chatter on separable data
        clf.fit(x * s, y)
    W = np.asarray(clf.coef_, np.float64)
    if len(clf.classes_) == 2:  # binary: one weight row w for class 1; class 0 gets -w
        W = np.stack([-W[0], W[0]])
    dirs = np.full((int(modulus), x.shape[1]), np.nan)
    for row, c in zip(W, clf.classes_):
        dirs[int(c)] = row / max(np.linalg.norm(row), 1e-12)
    return Probe(clf, int(modulus), s, dirs, np.asarray(clf.classes_, np.int64))


def cross_val_predict(x_TM, y_T, modulus: int, C: float = 1.0, folds: int = 5, seed: int = 0,
                      groups_T=None) -> tuple[np.ndarray | None, int]:
    """Stratified k-fold predictions ``[n_tokens]`` for every row, each from a probe that did
    not see it. ``groups_T [n_tokens]`` (e.g. the number's value, so " 7" and "7", or "one" and
    "One", always fall in the same fold) keeps a group's rows together; ``folds`` is lowered to
    the smallest number of groups (or rows) in a class.

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
        pred[te] = fit_probe(x[tr], y[tr], modulus, C, seed).predict(x[te])
    return pred, k


def confusion(y_true, y_pred, modulus: int) -> np.ndarray:
    """``[modulus, modulus]`` counts: rows = true residue, columns = predicted (predictions
    outside ``0..modulus-1``, e.g. -1 for "no probe", are not counted)."""
    t, p = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    ok = (p >= 0) & (p < modulus) & (t >= 0) & (t < modulus)
    m = np.zeros((modulus, modulus), np.int64)
    np.add.at(m, (t[ok], p[ok]), 1)
    return m


def cosines(a_KM, b_KM) -> np.ndarray:
    """Row-wise cosine of ``[n_classes, d_model]`` arrays -> ``[n_classes]`` (NaN where a row is NaN/zero)."""
    a, b = np.asarray(a_KM, np.float64), np.asarray(b_KM, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
