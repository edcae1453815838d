"""Sparse autoencoders and mod-m feature choice (sae.py) on synthetic data with planted
directions: recovery, determinism, FVU/L0 definitions, feature choice, save/load, bad options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from successor_heads.core.h5io import IncompleteOutputError
from successor_heads.features.sae import (
    SparseAutoencoder,
    dead_features,
    evaluate,
    load_saes,
    modal_features,
    mode_across_saes,
    save_saes,
    top_features,
    train_sae,
)

M, D = 10, 32


def planted(n: int = 400, seed: int = 0, noise: float = 0.05):
    """Rows ``a * u_{n mod 10} + b * w + offset + noise`` with orthonormal ``u`` ``[10, d_model]``
    and ``w``: a distractor direction present on every row that the synthetic head ignores."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(D, D, generator=g))[0]
    U, w = Q[:, :M].T.contiguous(), Q[:, M]
    y = torch.arange(n) % M
    a, b = 1 + 2 * torch.rand(n, generator=g), 2 * torch.rand(n, generator=g)
    x = a[:, None] * U[y] + b[:, None] * w + noise * torch.randn(n, D, generator=g) + 0.5 * torch.randn(D, generator=g)
    return x, y, U


@pytest.fixture(scope="module")
def trained():
    x, y, U = planted()
    sae, hist = train_sae(x, 16, l1_coeff=0.1, lr=1e-2, steps=300, batch_size=64, seed=0)
    return x, y, U, sae, hist


def test_recovers_planted_directions(trained):
    x, _, U, sae, hist = trained
    cos = (sae.directions() @ U.T).max(0).values  # best feature per planted direction
    assert cos.min() > 0.9, cos
    ev = evaluate(sae, x)
    assert ev["fvu"] < 0.1 and ev["l0"] < 3.0, ev
    assert hist["loss"][-1] < hist["loss"][0]
    norms = sae.W_dec.detach().norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_head_feature_choice_recovers_classes(trained):
    """A synthetic head that reads u_{class} from each row: the top feature of class i's rows is
    the feature along u_i, it covers the class, and the mode across SAEs returns u_i."""
    x, y, U, sae, _ = trained

    def score(x_NM, r_N):
        return (x_NM * U[y[r_N]]).sum(-1)

    top, eff, acts = top_features(sae, x, score)
    assert top.shape == (len(x),) and eff.shape == acts.shape == (len(x), sae.d_sae)
    feat, cov, n_rows = modal_features(top, y.numpy(), M)
    assert (n_rows == len(x) // M).all()
    assert np.nanmin(cov) > 0.8, cov
    dirs = sae.directions().numpy()[feat]
    assert (np.sum(dirs * U.numpy(), 1) > 0.9).all()
    sae2, _ = train_sae(x, 16, l1_coeff=0.1, lr=1e-2, steps=300, batch_size=64, seed=1)
    top2, _, _ = top_features(sae2, x, score)
    feat2, cov2, _ = modal_features(top2, y.numpy(), M)
    D_SCM = np.stack([dirs, sae2.directions().numpy()[feat2]])
    chosen, out, agree = mode_across_saes(D_SCM, np.stack([cov, cov2]))
    assert (chosen >= 0).all() and (agree == 1.0).all()
    assert (np.sum(out * U.numpy(), 1) > 0.9).all()


def test_fallback_rows_use_activation_times_weight(trained):
    x, _, _, sae, _ = trained
    nan_score = lambda x_NM, r_N: torch.full((len(r_N),), float("nan"))
    w = torch.zeros(sae.d_sae)
    w[3] = 1.0
    top, eff, acts = top_features(sae, x, nan_score, w)
    active3 = acts[:, 3] > 0
    assert (top[active3] == 3).all()
    np.testing.assert_allclose(eff[active3, 3], acts[active3, 3], rtol=1e-6)


def test_training_is_deterministic_for_a_seed():
    x, _, _ = planted(200)
    a, ha = train_sae(x, 8, steps=100, batch_size=32, seed=5)
    b, hb = train_sae(x, 8, steps=100, batch_size=32, seed=5)
    c, _ = train_sae(x, 8, steps=100, batch_size=32, seed=6)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert ha["loss"] == hb["loss"]
    assert not torch.equal(a.W_dec, c.W_dec)


def test_training_works_inside_no_grad():
    x, _, _ = planted(200)
    a, ha = train_sae(x, 8, steps=50, batch_size=32, seed=5)
    with torch.no_grad():
        b, hb = train_sae(x, 8, steps=50, batch_size=32, seed=5)
    assert ha["loss"] == hb["loss"] and hb["loss"][-1] < hb["loss"][0]


def test_tied_decoder_shares_weights():
    x, _, _ = planted(100)
    sae, _ = train_sae(x, 8, steps=20, batch_size=16, tied=True)
    assert sae.W_enc is None and "W_enc" not in sae.state_dict()
    assert torch.equal(sae.encoder(), sae.W_dec.T)


def test_fvu_is_one_for_the_mean_and_zero_for_identity():
    x, _, _ = planted(100)
    sae = SparseAutoencoder(D, 4)
    sae.scale.fill_(2.0)
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0) * 2.0)  # x_hat = mean for every row (all features off)
        sae.b_enc.fill_(-1e9)
    ev = evaluate(sae, x)
    assert ev["fvu"] == pytest.approx(1.0, rel=1e-5) and ev["l0"] == 0
    ident = SparseAutoencoder(D, 2 * D)
    with torch.no_grad():  # x = relu(x) - relu(-x): exact with +/- basis features
        E = torch.cat([torch.eye(D), -torch.eye(D)])
        ident.W_dec.copy_(E)
        ident.W_enc.copy_(E.T)
    assert evaluate(ident, x)["fvu"] < 1e-10


def test_dead_fraction_on_a_hand_made_sae():
    """Features 0-3 read +x_k (alive on rows with x_k > 0); feature 4 has zero encoder weights
    and a negative bias, feature 5 a large negative bias: both never fire, so 2 of 6 are dead."""
    x = torch.tensor([[1.0, 0.5, 2.0, 1.0], [0.2, 1.0, -1.0, 3.0], [-1.0, -1.0, 1.0, 0.5]])
    sae = SparseAutoencoder(4, 6)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[:, :4].copy_(torch.eye(4))
        sae.W_enc[:, 5] = 1.0
        sae.b_enc.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, -0.1, -100.0]))
        sae.W_dec.copy_(torch.eye(6, 4) + torch.eye(6, 4).roll(4, 0))  # rows: any unit vectors
    assert dead_features(sae, x).tolist() == [False, False, False, False, True, True]
    assert evaluate(sae, x)["dead_fraction"] == pytest.approx(2 / 6)
    # on a row where x_0 <= 0 only, feature 0 is dead too: the fraction depends on the rows given
    assert dead_features(sae, x[2:]).tolist() == [True, True, False, False, True, True]
    with pytest.raises(ValueError, match="no rows"):
        dead_features(sae, x[:0])


def test_modal_features_edge_cases():
    top = np.array([3, 3, 5, -1, 7, 2, 2, 4, -1])
    cls = np.array([0, 0, 0, 0, 1, 2, 2, 2, 3])
    feat, cov, n = modal_features(top, cls, 5)
    assert feat.tolist() == [3, 7, 2, -1, -1]
    np.testing.assert_allclose(cov[:4], [0.5, 1.0, 2 / 3, 0.0])
    assert np.isnan(cov[4]) and n.tolist() == [4, 1, 3, 1, 0]
    feat, _, _ = modal_features(np.array([4, 1]), np.array([0, 0]), 2)  # tie -> lowest index
    assert feat[0] == 1
    feat, cov, n = modal_features(top, cls, 5, mask_T=cls != 0)
    assert feat[0] == -1 and n[0] == 0


def test_mode_across_saes_prefers_majority_then_coverage():
    e = np.eye(4)
    dirs = np.stack([e[[0, 1]], e[[0, 2]], e[[3, 2]]])  # class 0: e0,e0,e3; class 1: e1,e2,e2
    cov = np.array([[0.2, 0.9], [0.5, 0.1], [0.9, 0.3]])
    chosen, out, agree = mode_across_saes(dirs, cov)
    assert chosen.tolist() == [1, 2]  # majority e0 (higher coverage of the two), majority e2
    np.testing.assert_allclose(out, e[[0, 2]])
    np.testing.assert_allclose(agree, [2 / 3, 2 / 3])
    dirs[:, 1] = np.nan
    chosen, out, agree = mode_across_saes(dirs, cov)
    assert chosen[1] == -1 and np.isnan(out[1]).all() and agree[1] == 0


def test_save_load_round_trip(tmp_path, trained):
    x, _, _, sae, _ = trained
    path = save_saes(tmp_path / "saes.h5", [sae, sae], {"extra": np.arange(3)}, {"note": "x"})
    saes, data, attrs = load_saes(path)
    assert len(saes) == 2 and data["extra"].tolist() == [0, 1, 2] and attrs["note"] == "x"
    assert torch.equal(saes[1].encode(x), sae.encode(x))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(IncompleteOutputError, match="delete"):
        load_saes(path)


@pytest.mark.parametrize("kw, match", [
    (dict(d_sae=0), "d_sae"), (dict(steps=0), "steps"), (dict(batch_size=0), "batch_size"),
    (dict(l1_coeff=-1.0), "l1_coeff"), (dict(lr=0.0), "lr"),
])
def test_bad_options(kw, match):
    x, _, _ = planted(20)
    args = dict(d_sae=4, steps=2, batch_size=4) | kw
    with pytest.raises(ValueError, match=match):
        train_sae(x, **args)


def test_bad_data():
    with pytest.raises(ValueError, match="empty token set"):
        train_sae(torch.zeros(0, D), 4, steps=1)
    x, _, _ = planted(10)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_sae(x, 4, steps=1)
    with pytest.raises(ValueError, match="d_sae"):
        SparseAutoencoder(D, 0)
