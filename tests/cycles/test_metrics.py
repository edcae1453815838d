"""Model-free checks of the circle metrics: planted maps with known answers."""

import numpy as np
import pytest

from successor_heads.cycles.metrics import circle_fit, closure_ratio, head_maps, purity, ranks


def _onehot_map(T: int, shift: int, scale: float = 10.0, noise: float = 0.1, seed: int = 0, own: float = 0.0):
    """``[T, T]`` logits: row r puts ``scale`` on item ``r + shift`` (mod T), ``own`` on itself,
    plus seeded noise."""
    rng = np.random.default_rng(seed)
    L = noise * rng.standard_normal((T, T))
    L[np.arange(T), (np.arange(T) + shift) % T] += scale
    L[np.arange(T), np.arange(T)] += own
    return L


def _cyclic(T: int):
    return np.arange(T), (np.arange(T) + 1) % T


@pytest.mark.parametrize("T", [7, 10, 12])
def test_one_step_rotation_scores_near_one_with_shift_one_step(T):
    k, succ = _cyclic(T)
    m = head_maps(_onehot_map(T, 1), k, T, succ)
    assert m.rotation_score > 0.95
    assert abs(m.shift_steps - 1) < 0.2
    assert abs(m.shift_deg - 360 / T) < 0.2 * 360 / T
    assert m.consistency > 0.95
    assert m.in_plane_accuracy == 1.0
    assert m.best_offset == 1


def test_smooth_rotation_is_one_step():
    """A pure cosine tuned one step ahead; masking the own item biases the phase by a few degrees."""
    T = 12
    k, succ = _cyclic(T)
    theta = 2 * np.pi * k / T
    L = np.cos(theta[None, :] - theta[:, None] - 2 * np.pi / T)
    m = head_maps(L, k, T, succ)
    assert m.rotation_score == pytest.approx(1.0, abs=0.01)
    assert m.shift_steps == pytest.approx(1.0, abs=0.25)
    assert purity(L, k, T) == pytest.approx(1.0)


def test_copy_head_does_not_score_as_a_rotation():
    T = 7
    k, succ = _cyclic(T)
    m = head_maps(_onehot_map(T, 0), k, T, succ)  # own item strongly positive
    assert m.rotation_score < 0.5
    assert m.in_plane_accuracy < 0.5
    assert m.profile[0] > 5  # the copy shows in the own-item offset of the profile


def test_anti_copy_head_does_not_score_as_a_rotation():
    T = 7
    k, succ = _cyclic(T)
    m = head_maps(_onehot_map(T, 0, scale=-10.0), k, T, succ)  # own logit strongly negative
    assert m.rotation_score < 0.5
    assert m.profile[0] < -5
    # the smooth version (suppressing the own item and its neighbours) turns by pi: negative
    theta = 2 * np.pi * k / T
    smooth = -np.cos(theta[None, :] - theta[:, None])
    s = head_maps(smooth, k, T, succ)
    assert s.rotation_score < 0
    assert abs(abs(s.shift_steps) - T / 2) < 0.1


def test_unmasked_anti_copy_would_read_as_a_half_turn():
    """Why the own item is masked: a large negative own logit alone is a turn by pi."""
    T = 7
    k, succ = _cyclic(T)
    L = _onehot_map(T, 1, scale=1.0, own=-50.0, noise=0.0)
    m = head_maps(L, k, T, succ)
    assert m.rotation_score > 0.9  # masked: the successor logit decides
    assert m.best_offset == 1


def test_shift_by_two_is_not_a_successor():
    T = 7
    k, succ = _cyclic(T)
    m = head_maps(_onehot_map(T, 2), k, T, succ)
    assert m.rotation_score < 0.8
    assert abs(m.shift_steps - 2) < 0.3
    assert m.in_plane_accuracy == 0.0
    assert m.best_offset == 2


def test_incomplete_open_task_one_step():
    """Digits 1..9 on a period-10 circle (0 missing), 9 has no successor."""
    k = np.arange(1, 10)
    succ = np.array(list(range(1, 9)) + [-1])
    L = _onehot_map(10, 1)[1:, 1:]
    m = head_maps(L, k, 10, succ)
    assert m.rotation_score > 0.9
    assert m.in_plane_accuracy == 1.0


def test_reflection_has_low_purity_rotation_high():
    T = 12
    k, _ = _cyclic(T)
    theta = 2 * np.pi * k / T
    reflection = np.cos(theta[None, :] + theta[:, None])
    rotation = np.cos(theta[None, :] - theta[:, None] - 2 * np.pi / T)
    p = purity(np.stack([reflection, rotation]), k, T)
    assert p[0] < 0.05
    assert p[1] > 0.95


def test_batched_maps_equal_one_at_a_time():
    T = 7
    k, succ = _cyclic(T)
    maps = np.stack([_onehot_map(T, s, seed=s) for s in range(4)])
    batched = head_maps(maps, k, T, succ)
    for i in range(4):
        one = head_maps(maps[i], k, T, succ)
        assert one.rotation_score == pytest.approx(batched.rotation_score[i])
        assert one.best_offset == batched.best_offset[i]


def _circle_points(T: int, d: int = 16, noise: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((2, d))
    k = np.arange(T)
    a = 2 * np.pi * k / T
    X = 3.0 + np.stack([np.cos(a), np.sin(a)], 1) @ b + noise * rng.standard_normal((T, d))
    return X, k


def test_circle_fit_finds_a_circle_and_its_null_is_below():
    X, k = _circle_points(12)
    fit = circle_fit(X, k, 12, n_permutations=500, seed=1)
    assert fit.r2 > 0.95
    assert fit.r2_null_p95 < fit.r2
    assert fit.p < 0.01
    assert fit.closes
    assert fit.harmonics[0] == pytest.approx(fit.r2)
    assert fit.harmonics.sum() == pytest.approx(1.0)  # a complete cycle: harmonics are orthogonal
    # the fitted circle's points are the noiseless ones, up to the noise
    assert np.abs(fit.points(k, 12) - X).max() < 0.3


def test_line_does_not_close_and_noise_is_not_a_circle():
    rng = np.random.default_rng(0)
    v = rng.standard_normal(8)
    line = np.arange(12)[:, None] * v[None]
    assert closure_ratio(line, np.arange(12), 12) > 1
    assert not circle_fit(line, np.arange(12), 12, n_permutations=0).closes
    noise = rng.standard_normal((12, 50))
    fit = circle_fit(noise, np.arange(12), 12, n_permutations=500, seed=0)
    assert fit.p > 0.05


def test_open_arc_fits_but_does_not_close():
    """Items spread over half a circle: a period-T fit explains much, the closure test says open."""
    rng = np.random.default_rng(0)
    a = np.linspace(0, np.pi, 12)
    X = np.stack([np.cos(a), np.sin(a)], 1) @ rng.standard_normal((2, 16))
    fit = circle_fit(X, np.arange(12), 12, n_permutations=0)
    assert fit.r2 > 0.5
    assert not fit.closes


def test_permutation_null_is_seeded_and_reproducible():
    X, k = _circle_points(7, noise=1.0)
    a = circle_fit(X, k, 7, n_permutations=200, seed=3)
    b = circle_fit(X, k, 7, n_permutations=200, seed=3)
    c = circle_fit(X, k, 7, n_permutations=200, seed=4)
    np.testing.assert_array_equal(a.r2_null, b.r2_null)
    assert a.p == b.p
    assert not np.array_equal(a.r2_null, c.r2_null)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="at least 3"):
        circle_fit(np.ones((2, 4)), [0, 1], 7)
    with pytest.raises(ValueError, match="no variance"):
        circle_fit(np.ones((5, 4)), np.arange(5), 7)
    with pytest.raises(ValueError, match="successor"):
        head_maps(np.zeros((5, 5)), np.arange(5), 7, [-1] * 5)


def test_ranks_largest_first_nan_last():
    assert ranks([0.1, np.nan, 0.9, 0.5]).tolist() == [3, 4, 1, 2]


def test_fourier_spectrum_peaks_at_the_planted_periods():
    from successor_heads.cycles.metrics import fourier_spectrum

    n = np.arange(100)
    rng = np.random.default_rng(0)
    X = np.stack([np.cos(2 * np.pi * n / 10), np.sin(2 * np.pi * n / 10), np.cos(2 * np.pi * n / 2)], 1) @ rng.standard_normal((3, 8))
    periods, share = fourier_spectrum(X)
    top = set(np.round(periods[np.argsort(-share)[:2]], 6))
    assert top == {10.0, 2.0}
    assert share.sum() == pytest.approx(1.0)
