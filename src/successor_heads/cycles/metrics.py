"""Circular features and each head as a map of the circle: model-free metrics (ours;
docs/DESIGN.md, "Circular features").

Items of a cycle sit at integer positions ``k`` (Monday=0, January=0, the digit 7 at 7, A=0)
of period ``T``; item ``k``'s angle is ``2*pi*k/T``. Two questions:

* :func:`circle_fit`: do vectors ``x_k`` (effective embeddings, or ``W_U`` columns) lie on a
  circle ``c + cos(2*pi*k/T) b_1 + sin(2*pi*k/T) b_2``? Share of variance explained (R^2), a
  seeded permutation null, every harmonic's share, and whether the cycle closes.
* :func:`head_maps`: a head's task-logit matrix ``logits[r, j]`` (row r = input item r, column
  j = output item j) read as a map of the circle: per row, the phase of the logits' frequency-1
  component with the row's own item left out ("masked"), minus the row's own angle, is the
  shift ``Delta_r``. A successor head turns every item by one step (``Delta_r = 2*pi/T``). A
  copy head, an anti-copy head (large negative own logit: a turn by pi in every Fourier plane)
  and a shift-by-two head all shift consistently, so consistency alone proves nothing; the
  direction-sensitive ``rotation_score = mean_r cos(Delta_r - 2*pi/T)`` and the masked own item
  tell them apart. :func:`purity` splits a head's map of the fitted circle into its rotation
  and reflection parts.

Shapes: ``n`` items, ``d`` features (``d_model``), ``n_maps`` logit matrices (heads).
Everything is numpy float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A row's frequency-1 amplitude below this fraction of its logits' spread has no phase: the
#: row turns nothing (a pure copy or anti-copy row once its own item is masked).
PHASE_EPS = 1e-6


def _check_positions(k, T: int, n: int) -> np.ndarray:
    k = np.asarray(k)
    if k.shape != (n,):
        raise ValueError(f"positions k has shape {k.shape}, expected ({n},): one position per item")
    if T < 2:
        raise ValueError(f"period T={T}: must be at least 2")
    if n < 3:
        raise ValueError(f"{n} items: a circle needs at least 3")
    return k.astype(float)


def harmonic_design(k, T: int, harmonic: int = 1) -> np.ndarray:
    """``[n, 2]``: ``cos`` and ``sin`` of ``2*pi*harmonic*k/T``, each column centred over the
    items (so a fit on it has an intercept). Source: ours."""
    a = 2 * np.pi * harmonic * np.asarray(k, dtype=float) / T
    A = np.stack([np.cos(a), np.sin(a)], 1)
    return A - A.mean(0)


def _projector(A: np.ndarray) -> np.ndarray:
    """``[n, n]`` orthogonal projector onto the column space of ``A`` (rank-deficient allowed)."""
    return A @ np.linalg.pinv(A, rcond=1e-10)  # the Nyquist harmonic's sin column is rounding noise


@dataclass
class CircleFit:
    """Result of :func:`circle_fit`.

    ``r2``: share of the centred vectors' variance the period-T circle explains; ``r2_null``
    ``[n_permutations]``: the same with the item labels permuted; ``r2_null_mean``,
    ``r2_null_p95``, ``p`` (``(1 + #null >= r2) / (1 + n_permutations)``); ``harmonics``
    ``[T // 2]``: share of harmonic ``1..T//2`` (they sum to 1 for a complete cycle);
    ``closure_ratio``: :func:`closure_ratio` of the items' coordinates in the fitted plane;
    ``closes``: ``closure_ratio <= 1`` (read it only where ``r2`` is above its null); ``centre [d]``,
    ``basis [2, d]`` (the fitted ``b_1, b_2``), ``coords [n, 2]`` (each item's least-squares
    coordinates in that basis, around the centre).
    """

    r2: float
    r2_null: np.ndarray
    r2_null_mean: float
    r2_null_p95: float
    p: float
    harmonics: np.ndarray
    closure_ratio: float
    closes: bool
    centre: np.ndarray
    basis: np.ndarray
    coords: np.ndarray

    def points(self, k, T: int) -> np.ndarray:
        """``[n, d]``: the fitted circle's point of each position ``k`` ("circle only" inputs)."""
        return self.centre + harmonic_design_raw(k, T) @ self.basis


def harmonic_design_raw(k, T: int) -> np.ndarray:
    """``[n, 2]``: uncentred ``cos, sin`` of ``2*pi*k/T`` (the fitted circle's parametrisation)."""
    a = 2 * np.pi * np.asarray(k, dtype=float) / T
    return np.stack([np.cos(a), np.sin(a)], 1)


def circle_fit(X, k, T: int, n_permutations: int = 1000, seed: int = 0) -> CircleFit:
    """Fit vectors on a period-T circle by least squares, with a permutation null.

    Args:
        X: ``[n, d]`` one vector per item.
        k: ``[n]`` integer positions of the items on the cycle (distinct).
        T: the period.
        n_permutations: item-label permutations for the null (0: no null, ``p`` is NaN).
        seed: seed of the permutations (``numpy.random.default_rng``); the same seed gives the
            same null.

    Returns: :class:`CircleFit`.
    Raises: ValueError for fewer than 3 items, ``T < 2``, mismatched shapes or ``X`` with no
        variance. Source: ours, after Engels et al. 2024 (circular day and month features).
    """
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X has shape {X.shape}: expected [n_items, d]")
    k = _check_positions(k, T, X.shape[0])
    centre = X.mean(0)
    Xc = X - centre
    G = Xc @ Xc.T  # [n, n] Gram: R^2 of any labelling is tr(P G_perm) / tr(G)
    total = float(np.trace(G))
    if not total > 0:
        raise ValueError("the vectors have no variance: every item has the same vector")
    A = harmonic_design(k, T)
    P = _projector(A)
    r2 = float(np.sum(P * G) / total)
    harmonics = np.array([np.sum(_projector(harmonic_design(k, T, j)) * G) / total for j in range(1, T // 2 + 1)])
    if n_permutations > 0:
        rng = np.random.default_rng(seed)
        perm = np.stack([rng.permutation(len(k)) for _ in range(n_permutations)])
        null = np.einsum("ij,bij->b", P, G[perm[:, :, None], perm[:, None, :]]) / total
        p = float((1 + np.sum(null >= r2 - 1e-12)) / (1 + n_permutations))
        null_mean, null_p95 = float(null.mean()), float(np.quantile(null, 0.95))
    else:
        null, p, null_mean, null_p95 = np.zeros(0), float("nan"), float("nan"), float("nan")
    basis = np.linalg.lstsq(A, Xc, rcond=None)[0]  # [2, d]
    # A is the centred design: X ~ mean + (raw - mean(raw)) @ basis, i.e. centre + raw @ basis
    centre_fit = centre - harmonic_design_raw(k, T).mean(0) @ basis
    coords = (X - centre_fit) @ np.linalg.pinv(basis)  # [n, 2] least-squares coordinates in the plane
    # in the fitted plane: in many dimensions noisy items are all about equally far apart, so a
    # full-space distance would call almost anything closed
    ratio = closure_ratio(coords, k, T)
    return CircleFit(r2, null, null_mean, null_p95, p, harmonics, ratio, bool(ratio <= 1.0), centre_fit, basis,
                     coords)


def closure_ratio(X, k, T: int) -> float:
    """Does the cycle close? The distance from the last item (largest ``k``) to the first,
    divided by the largest step between items adjacent in ``k`` times the chord ratio
    ``sin(pi*g/T) / sin(pi/T)`` that a circle gives for the wrap-around gap of ``g`` positions
    (``g = 1`` for a complete cycle). At most 1: the last item is as near the first as a circle
    puts it (closed); an open arc or a line gives a larger ratio. Source: ours.

    Args: ``X [n, d]``, ``k [n]`` distinct positions, ``T`` the period.
    Raises: ValueError for fewer than 3 items.
    """
    X = np.asarray(X, dtype=float)
    k = _check_positions(k, T, X.shape[0])
    order = np.argsort(k)
    Xs, ks = X[order], k[order]
    steps = np.linalg.norm(np.diff(Xs, axis=0), axis=1) / np.maximum(np.diff(ks), 1)
    gap = ks[0] + T - ks[-1]
    chord = np.sin(np.pi * min(gap, T / 2) / T) / np.sin(np.pi / T)
    return float(np.linalg.norm(Xs[-1] - Xs[0]) / (steps.max() * chord))


def _row_phases(logits_HNN: np.ndarray, k, T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per map and row, the masked frequency-1 component of the row's logits over the items:
    ``z_r = sum_{j != r} (ℓ[r, j] - m_r) exp(i θ_j)`` with ``m_r`` the row's mean over ``j != r``
    (the DFT of the row over the full cycle with the own item, and any position the task lacks,
    filled with that mean). Returns ``z [n_maps, n]`` (complex), ``centred [n_maps, n, n]``
    (each row minus ``m_r``; the own entry is the own logit minus ``m_r``) and
    ``defined [n_maps, n]`` (the amplitude is not negligible against the row's spread)."""
    n = logits_HNN.shape[1]
    theta = 2 * np.pi * np.asarray(k, dtype=float) / T
    off = ~np.eye(n, dtype=bool)  # [n, n]: column j is not row r's own item
    L = logits_HNN
    m = (L * off).sum(-1, keepdims=True) / (n - 1)  # [n_maps, n, 1] masked row means
    centred = L - m
    z = np.einsum("hrj,rj->hr", centred * off, np.broadcast_to(np.exp(1j * theta), (n, n)))
    spread = np.sqrt(((centred * off) ** 2).sum(-1) / (n - 1))
    defined = np.abs(z) > PHASE_EPS * np.maximum(spread, np.finfo(float).tiny)
    return z, centred, defined


@dataclass
class HeadMaps:
    """Result of :func:`head_maps`, one entry per map (head), each ``[n_maps]`` unless noted.

    ``rotation_score``: ``mean_r cos(Delta_r - 2*pi/T)`` over rows that have a successor (rows
    without a phase count 0); ``shift_deg``, ``shift_steps``: the circular mean of ``Delta_r``
    (NaN when ``consistency`` is 0); ``consistency``: ``|mean_r exp(i Delta_r)|``;
    ``in_plane_accuracy``: fraction of those rows whose phase is nearest their successor's
    angle; ``profile [n_maps, T]``: mean centred logit at offset ``d = (k_j - k_r) mod T``
    (``d = 0``: the own logit, NaN where no pair has that offset); ``best_offset``: the
    ``d >= 1`` with the largest profile; ``delta [n_maps, n]``: ``Delta_r`` in radians (NaN for
    rows without a phase).
    """

    rotation_score: np.ndarray
    shift_deg: np.ndarray
    shift_steps: np.ndarray
    consistency: np.ndarray
    in_plane_accuracy: np.ndarray
    profile: np.ndarray
    best_offset: np.ndarray
    delta: np.ndarray


def _as_maps(logits) -> tuple[np.ndarray, bool]:
    L = np.asarray(logits, dtype=float)
    single = L.ndim == 2
    L = L[None] if single else L
    if L.ndim != 3 or L.shape[1] != L.shape[2]:
        raise ValueError(f"logits have shape {np.shape(logits)}: expected [n, n] or [n_maps, n, n] (rows: input "
                         "items, columns: the same items as outputs)")
    return L, single


def head_maps(logits, k, T: int, successor) -> HeadMaps:
    """Each head as a map of the circle, from its task-logit matrices.

    Args:
        logits: ``[n_maps, n, n]`` (or one ``[n, n]``): row r holds input item r's logits over
            the same n items (the paper's effective OV circuit restricted to the task).
        k: ``[n]`` the items' integer positions on the cycle.
        T: the period.
        successor: ``[n]`` column of each row's successor, -1 where it has none (rows without a
            successor are left out of the scores, not of the profile).

    Returns: :class:`HeadMaps` (each field ``[n_maps]``, or a scalar array for one ``[n, n]``).
    Raises: ValueError for mismatched shapes, fewer than 3 items or no row with a successor.
    Source: ours (docs/DESIGN.md, "Circular features").
    """
    L, single = _as_maps(logits)
    n = L.shape[1]
    kf = _check_positions(k, T, n)
    succ = np.asarray(successor)
    if succ.shape != (n,):
        raise ValueError(f"successor has shape {succ.shape}, expected ({n},)")
    rows = succ >= 0
    if not rows.any():
        raise ValueError("no item has its successor among the items: nothing to score")
    theta = 2 * np.pi * kf / T
    step = 2 * np.pi / T
    z, centred, defined = _row_phases(L, kf, T)
    delta = np.where(defined, np.angle(z) - theta, np.nan)
    unit = np.where(defined, np.exp(1j * np.nan_to_num(delta)), 0)[:, rows]  # rows without a phase: 0
    rotation = np.where(defined[:, rows], np.cos(np.nan_to_num(delta[:, rows]) - step), 0).mean(1)
    mean_unit = unit.mean(1)
    consistency = np.abs(mean_unit)
    shift = np.where(consistency > PHASE_EPS, np.angle(mean_unit), np.nan)
    # nearest item angle to each row's phase, by circular distance
    dist = np.abs(np.angle(np.exp(1j * (np.angle(z)[:, :, None] - theta[None, None, :]))))  # [n_maps, n, n]
    nearest = dist.argmin(-1)
    hit = (nearest == succ[None]) & defined
    accuracy = hit[:, rows].mean(1)
    offset = np.mod(np.round(kf[None, :] - kf[:, None]).astype(int), T)  # [n, n], offset of column j from row r
    profile = np.full((L.shape[0], T), np.nan)
    for d in range(T):
        sel = offset == d
        if sel.any():
            profile[:, d] = centred[:, sel].mean(1)
    with np.errstate(invalid="ignore"):
        later = profile[:, 1:]
        best = np.where(np.isnan(later).all(1), -1, np.nanargmax(np.where(np.isnan(later), -np.inf, later), 1) + 1)
    out = HeadMaps(rotation, np.degrees(shift), shift / step, consistency, accuracy, profile, best, delta)
    if single:
        out = HeadMaps(*(f[0] for f in vars(out).values()))
    return out


def purity(logits, k, T: int) -> np.ndarray:
    """Rotation against reflection part of a head's map of the circle.

    Each row's masked frequency-1 component ``w_r`` (as in :func:`head_maps`) is
    fitted on the input's point of the circle ``z_r = exp(2*pi*i*k_r/T)`` as
    ``w_r ~ alpha z_r + beta conj(z_r)`` by least squares: ``alpha z`` is a rotation (and
    scale), ``beta conj(z)`` a reflection. ``purity = |alpha|^2 / (|alpha|^2 + |beta|^2)``:
    1 for a rotation (any angle, copying included), 0 for a reflection, 0.5 for a map that
    flattens the circle onto a line. Pass the logits of the fitted circle's points ("the fitted
    circle passed through the head") to measure the map of the circle itself.

    Args: ``logits [n_maps, n, n]`` or ``[n, n]``; ``k [n]`` positions; ``T`` the period.
    Returns: ``[n_maps]`` (a scalar array for one map), NaN where the map sends the circle to 0.
    Raises: ValueError for mismatched shapes or fewer than 3 items. Source: ours.
    """
    L, single = _as_maps(logits)
    kf = _check_positions(k, T, L.shape[1])
    z_in = np.exp(2j * np.pi * kf / T)
    w, _, _ = _row_phases(L, kf, T)
    A = np.stack([z_in, np.conj(z_in)], 1)  # [n, 2]
    coef = np.linalg.lstsq(A, w.T, rcond=None)[0]  # [2, n_maps]
    rot, ref = np.abs(coef[0]) ** 2, np.abs(coef[1]) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(rot + ref > 0, rot / (rot + ref), np.nan)
    return out[0] if single else out


def ranks(scores) -> np.ndarray:
    """``[n]`` 1-based rank of each score, largest first (ties by order; NaN last). Source: ours."""
    s = np.asarray(scores, dtype=float)
    order = np.argsort(np.where(np.isnan(s), np.inf, -s), kind="stable")
    out = np.empty(len(s), int)
    out[order] = np.arange(1, len(s) + 1)
    return out


def fourier_spectrum(X) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum along the items of evenly spaced items (numbers 0..n-1).

    Args: ``X [n, d]`` one vector (or ``[n]`` one value) per item, in order.
    Returns: ``periods [n // 2]`` (``n / f`` for frequency ``f = 1..n // 2``) and ``share
    [n // 2]``: each frequency's share of the centred vectors' power, summed over features.
    Raises: ValueError for fewer than 4 items or no variance. Source: ours, after Zhou et al.
    2024 (Fourier features of number embeddings).
    """
    X = np.asarray(X, dtype=float)
    X = X[:, None] if X.ndim == 1 else X
    n = X.shape[0]
    if n < 4:
        raise ValueError(f"{n} items: a spectrum needs at least 4")
    power = (np.abs(np.fft.rfft(X - X.mean(0), axis=0)) ** 2).sum(1)[1:n // 2 + 1]
    if not power.sum() > 0:
        raise ValueError("the vectors have no variance: no spectrum")
    f = np.arange(1, n // 2 + 1)
    return n / f, power / power.sum()
