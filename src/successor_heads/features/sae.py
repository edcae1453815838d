"""Sparse autoencoders on effective embeddings, and how mod-m features are picked from them.

Paper, Section 3 (mod-10 features): SAEs are trained on MLP0 outputs of number and succession
tokens; for each residue class i the feature that matters most to the successor head's output
on tokens of class i is found, and the mode is taken across SAEs; the chosen feature is the
top feature for 58.5% of its class's tokens on average.

The SAE (:class:`SparseAutoencoder`) is the standard ReLU SAE (Bricken et al. 2023;
Cunningham et al. 2023): ``a = ReLU((x s - b_dec) W_enc + b_enc)``, ``x_hat = (a W_dec + b_dec) / s``
with unit-norm decoder rows and loss ``mean_rows(|x_hat s - x s|^2 + l1_coeff * |a|_1)``, where
the scalar ``s`` scales the training rows to a mean squared centred norm of 1, so the first
term is a fraction of variance and ``l1_coeff`` means the same for any ``d_model``. The decoder
is tied (``W_enc = W_dec^T``) or untied.

Feature choice (ours, one reading of Section 3): for each row r and each feature f active on it,
the effect of f on the successor head is ``score(x_r) - score(x_r - a_f(r) d_f / s)`` where
``score`` is the logit the head's OV circuit gives r's successor minus the mean logit over r's
group (its task's tokens), i.e. the margin the successor score rewards (see
:func:`successor_heads.features.selection.head_score_fn`). Rows without a single-token successor fall back to
``a_f(r) * |OV(d_f / s)|``, the feature's activation times the norm of its decoder direction pushed
through the head's OV. A row's *top feature* is the one with the largest effect; the class's
feature (:func:`modal_features`) is the most common top feature over the class's rows, and its
*coverage* is the fraction of the class's rows whose top feature it is (the paper's 58.5%).
Across SAEs (:func:`mode_across_saes`) the chosen decoder direction is the one that the most
SAEs found (cosine above ``match_cosine``), ties broken by coverage.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from successor_heads.core.h5io import read_h5, write_h5


class SparseAutoencoder(nn.Module):
    """ReLU SAE with unit-norm decoder rows (module docstring).

    Parameters: ``W_enc [d_model, d_sae]`` (absent when tied), ``W_dec [d_sae, d_model]``,
    ``b_enc [d_sae]``, ``b_dec [d_model]``; buffer ``scale`` (scalar input scale ``s``).
    """

    def __init__(self, d_model: int, d_sae: int, tied: bool = False):
        super().__init__()
        if int(d_model) < 1:
            raise ValueError(f"d_model={d_model}: must be >= 1")
        if isinstance(d_sae, bool) or int(d_sae) < 1:
            raise ValueError(f"features.d_sae={d_sae!r}: the SAE needs at least one feature (d_sae >= 1)")
        self.d_model, self.d_sae, self.tied = int(d_model), int(d_sae), bool(tied)
        self.W_dec = nn.Parameter(torch.zeros(self.d_sae, self.d_model))
        self.W_enc = None if self.tied else nn.Parameter(torch.zeros(self.d_model, self.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(self.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(self.d_model))
        self.register_buffer("scale", torch.tensor(1.0))

    def encoder(self) -> torch.Tensor:
        """``[d_model, d_sae]``."""
        return self.W_dec.T if self.tied else self.W_enc

    def encode(self, x_TM: torch.Tensor) -> torch.Tensor:
        """``x [n_tokens, d_model]`` (original units) -> activations ``[n_tokens, d_sae]`` (>= 0)."""
        return torch.relu((x_TM * self.scale - self.b_dec) @ self.encoder() + self.b_enc)

    def decode(self, a_TF: torch.Tensor) -> torch.Tensor:
        """Activations ``[n_tokens, d_sae]`` -> reconstruction ``[n_tokens, d_model]`` (original units)."""
        return (a_TF @ self.W_dec + self.b_dec) / self.scale

    def forward(self, x_TM: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_hat [n_tokens, d_model], a [n_tokens, d_sae])``."""
        a = self.encode(x_TM)
        return self.decode(a), a

    def directions(self) -> torch.Tensor:
        """Unit-norm decoder directions ``[d_sae, d_model]`` (detached)."""
        W = self.W_dec.detach()
        return W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def contributions(self) -> torch.Tensor:
        """``[d_sae, d_model]``: what one unit of activation adds to ``x_hat`` in original units."""
        return self.W_dec.detach() / self.scale

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row to unit norm, in place."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))


def _check_options(x: torch.Tensor, d_sae, l1_coeff, lr, steps, batch_size) -> None:
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"SAE training data has shape {tuple(x.shape)}: need [n_tokens >= 1, d_model] "
                         "(empty token set?)")
    for name, v, lo in (("d_sae", d_sae, 1), ("steps", steps, 1), ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or int(v) != v or int(v) < lo:
            raise ValueError(f"features.{name}={v!r}: must be an integer >= {lo}")
    if not l1_coeff >= 0:
        raise ValueError(f"features.l1_coeff={l1_coeff!r}: must be >= 0")
    if not lr > 0:
        raise ValueError(f"features.lr={lr!r}: must be > 0")
    if not torch.isfinite(x).all():
        raise ValueError("SAE training data contains NaN or inf")


def train_sae(
    x_TM, d_sae: int, l1_coeff: float = 1e-3, lr: float = 1e-3, steps: int = 2000, batch_size: int = 128,
    seed: int = 0, tied: bool = False, device: str | torch.device = "cpu", progress: bool = False,
    desc: str = "SAE", num_threads: int | None = 1,
) -> tuple[SparseAutoencoder, dict]:
    """Train one SAE with Adam on rows of ``x_TM [n_tokens, d_model]`` (sampled with replacement).

    Deterministic for a given ``seed`` on a given device (init and batch order come from one
    ``torch.Generator``; on CPU torch runs ``num_threads`` threads meanwhile, default 1: these
    matrices are too small to gain from more, and a fixed count keeps results bitwise stable;
    None leaves torch's setting). Returns ``(sae in eval mode on CPU, history)`` where
    history has ``loss``, ``mse``, ``l1`` (per step, floats) and ``wall_s``, ``rows_per_s``.

    Raises: ValueError for ``d_sae``/``steps``/``batch_size`` < 1, negative ``l1_coeff``,
    non-positive ``lr``, empty or non-finite data.
    """
    x = torch.as_tensor(x_TM, dtype=torch.float32).detach()
    _check_options(x, d_sae, l1_coeff, lr, steps, batch_size)
    old_threads = torch.get_num_threads()
    if num_threads and torch.device(device).type == "cpu":
        torch.set_num_threads(int(num_threads))
    try:
        # a caller inside no_grad (or a leaked global grad switch) must not silently break training
        with torch.enable_grad():
            return _train(x, int(d_sae), float(l1_coeff), float(lr), int(steps), int(batch_size),
                          int(seed), bool(tied), device, progress, desc)
    finally:
        torch.set_num_threads(old_threads)


def _train(x, d_sae, l1_coeff, lr, steps, batch_size, seed, tied, device, progress, desc):
    import time

    n, d_model = x.shape
    g = torch.Generator().manual_seed(int(seed))
    sae = SparseAutoencoder(d_model, int(d_sae), tied)
    with torch.no_grad():
        mean = x.mean(0)
        var = ((x - mean) ** 2).sum(-1).mean()
        sae.scale.fill_(float(torch.rsqrt(var)) if var > 0 else 1.0)
        sae.b_dec.copy_(mean * sae.scale)
        sae.W_dec.copy_(torch.randn(int(d_sae), d_model, generator=g))
        sae.normalize_decoder()
        if not tied:
            sae.W_enc.copy_(sae.W_dec.T)
    sae.to(device).train()
    xs = x.to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    hist = {"loss": [], "mse": [], "l1": []}
    t0 = time.time()
    for _ in tqdm(range(int(steps)), desc=desc, disable=not progress, leave=False):
        idx = torch.randint(0, n, (int(batch_size),), generator=g)
        xb = xs[idx.to(device)]
        x_hat, a = sae(xb)
        mse = ((x_hat - xb) * sae.scale).pow(2).sum(-1).mean()
        l1 = a.sum(-1).mean()
        loss = mse + l1_coeff * l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # keep decoder rows on the unit sphere: drop the radial gradient
            W, G = sae.W_dec, sae.W_dec.grad
            G.sub_((G * W).sum(-1, keepdim=True) * W)
        opt.step()
        sae.normalize_decoder()
        hist["loss"].append(loss.item())
        hist["mse"].append(mse.item())
        hist["l1"].append(l1.item())
    hist["wall_s"] = time.time() - t0
    hist["rows_per_s"] = int(steps) * int(batch_size) / max(hist["wall_s"], 1e-9)
    return sae.cpu().eval(), hist


@torch.no_grad()
def dead_features(sae: SparseAutoencoder, x_TM) -> np.ndarray:
    """Which features never fire on rows ``x_TM [n_tokens, d_model]``: bool ``[d_sae]``, True
    where the activation is 0 on every row (ReLU never above 0). A health check of ours, not
    the paper's (dead features hold no mod-m information; many dead ones mean a too-large
    ``l1_coeff`` or ``d_sae``). Raises: ValueError for no rows."""
    x = torch.as_tensor(x_TM, dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError("dead_features: no rows (validation split empty?)")
    return ((sae.encode(x) > 0).sum(0) == 0).numpy()


@torch.no_grad()
def evaluate(sae: SparseAutoencoder, x_TM) -> dict[str, float]:
    """Fraction of variance unexplained, mean L0 and dead-feature fraction on rows ``x_TM
    [n_tokens, d_model]`` (the validation rows in the features stage).

    ``fvu = sum |x - x_hat|^2 / sum |x - mean(x)|^2`` (0 = perfect, 1 = no better than the mean);
    ``l0`` = mean number of active features per row; ``dead_fraction`` = fraction of the
    ``d_sae`` features with no activation > 0 on any row (:func:`dead_features`); ``mse`` per
    element. Raises: ValueError for no rows.
    """
    x = torch.as_tensor(x_TM, dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError("evaluate: no rows (validation split empty?)")
    x_hat, a = sae(x)
    den = float(((x - x.mean(0)) ** 2).sum())
    num = float(((x - x_hat) ** 2).sum())
    return {"fvu": num / den if den > 0 else float("nan"), "l0": float((a > 0).float().sum(-1).mean()),
            "dead_fraction": float(((a > 0).sum(0) == 0).float().mean()), "mse": num / x.numel()}


ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def top_features(
    sae: SparseAutoencoder, x_TM, score_fn: ScoreFn, fallback_F: torch.Tensor | None = None,
    batch_pairs: int = 8192,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's top feature for the head (module docstring).

    Args:
        x_TM: ``[n_tokens, d_model]`` effective embeddings.
        score_fn: ``(x [N, d_model], rows [N] long) -> [N]`` the head's score of vector N read as
            row ``rows[N]`` (NaN where the row has no score, e.g. no successor).
        fallback_F: ``[d_sae]`` effect per unit activation for rows whose score is NaN
            (e.g. ``|OV(d_f)|``); None: such rows use the activation alone.

    Returns: ``(top [n_tokens] int64, -1 where no feature is active; effect [n_tokens, d_sae]
    float32, -inf where inactive; acts [n_tokens, d_sae] float32)``.
    """
    x = torch.as_tensor(x_TM, dtype=torch.float32)
    a_TF = sae.encode(x)
    n, F = a_TF.shape
    base = score_fn(x, torch.arange(n)).float()
    C_FM = sae.contributions()
    fb = torch.ones(F) if fallback_F is None else torch.as_tensor(fallback_F, dtype=torch.float32)
    eff = torch.full((n, F), float("-inf"))
    r_all, f_all = a_TF.nonzero(as_tuple=True)
    for s in range(0, len(r_all), batch_pairs):
        r, f = r_all[s:s + batch_pairs], f_all[s:s + batch_pairs]
        act = a_TF[r, f]
        sc = base[r] - score_fn(x[r] - act[:, None] * C_FM[f], r).float()
        nan = torch.isnan(base[r])
        eff[r, f] = torch.where(nan, act * fb[f], sc)
    top = eff.argmax(1)
    top[(a_TF > 0).sum(1) == 0] = -1
    return top.numpy().astype(np.int64), eff.numpy(), a_TF.numpy()


def modal_features(top_T: np.ndarray, classes_T: np.ndarray, modulus: int,
                   mask_T: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per residue class, the most common top feature and its coverage.

    Args: ``top_T [n_tokens]`` (from :func:`top_features`, -1 = none), ``classes_T [n_tokens]``
    residues in ``0..modulus-1``, ``mask_T [n_tokens]`` bool rows to use (None: all).

    Returns: ``(feature [modulus] int64, -1 where the class has no row or no active feature;
    coverage [modulus] float, fraction of the class's rows whose top feature it is, NaN for an
    empty class; n_rows [modulus] int64)``. Ties go to the lowest feature index.
    """
    top_T, classes_T = np.asarray(top_T), np.asarray(classes_T)
    mask_T = np.ones(len(top_T), bool) if mask_T is None else np.asarray(mask_T, bool)
    feat = np.full(modulus, -1, np.int64)
    cov = np.full(modulus, np.nan)
    n_rows = np.zeros(modulus, np.int64)
    for i in range(modulus):
        t = top_T[mask_T & (classes_T == i)]
        n_rows[i] = len(t)
        if len(t) == 0:
            continue
        act = t[t >= 0]
        if len(act) == 0:
            cov[i] = 0.0
            continue
        feat[i] = int(np.bincount(act).argmax())
        cov[i] = float((t == feat[i]).mean())
    return feat, cov, n_rows


def mode_across_saes(dirs_SCM: np.ndarray, coverage_SC: np.ndarray, match_cosine: float = 0.9
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The direction most SAEs agree on, per class.

    Args: ``dirs_SCM [n_saes, n_classes, d_model]`` unit decoder directions (NaN rows: none),
    ``coverage_SC [n_saes, n_classes]``, ``match_cosine``: two directions match above it.

    Returns: ``(chosen [n_classes] int64 SAE index, -1 if no SAE has a feature; directions
    [n_classes, d_model] (NaN rows where none); agreement [n_classes] float, fraction of SAEs
    whose direction matches the chosen one)``.
    """
    dirs = np.asarray(dirs_SCM, np.float64)
    S, K, M = dirs.shape
    chosen = np.full(K, -1, np.int64)
    out = np.full((K, M), np.nan)
    agree = np.zeros(K)
    for k in range(K):
        valid = [s for s in range(S) if np.isfinite(dirs[s, k]).all()]
        if not valid:
            continue
        D = dirs[valid, k]
        support = ((D @ D.T) > match_cosine).sum(1)
        cov = np.nan_to_num(np.asarray(coverage_SC, float)[valid, k], nan=-1.0)
        best = max(range(len(valid)), key=lambda j: (support[j], cov[j], -j))
        chosen[k], out[k], agree[k] = valid[best], D[best], support[best] / S
    return chosen, out, agree


def save_saes(path: str | os.PathLike, saes: list[SparseAutoencoder], extra: dict | None = None,
              attrs: dict | None = None) -> Path:
    """Stack the SAEs' weights into one HDF5 file (``W_dec [n_saes, d_sae, d_model]`` etc.),
    plus ``extra`` datasets and ``attrs``, atomically. Raises: ValueError for no SAEs or mixed shapes."""
    if not saes:
        raise ValueError("no SAEs to save")
    if len({(s.d_model, s.d_sae, s.tied) for s in saes}) != 1:
        raise ValueError("SAEs differ in d_model, d_sae or tied; save them separately")
    ds = {k: torch.stack([getattr(s, k).detach().cpu() for s in saes])
          for k in ("W_dec", "b_enc", "b_dec", "scale")}
    if not saes[0].tied:
        ds["W_enc"] = torch.stack([s.W_enc.detach().cpu() for s in saes])
    ds.update(extra or {})
    a = dict(attrs or {})
    a.update(tied=saes[0].tied, d_sae=saes[0].d_sae, d_model=saes[0].d_model, n_saes=len(saes),
             sae_dims="W_enc: [n_saes, d_model, d_sae]; W_dec: [n_saes, d_sae, d_model]; "
                      "b_enc: [n_saes, d_sae]; b_dec: [n_saes, d_model]; scale: [n_saes]")
    return write_h5(path, ds, a)


def load_saes(path: str | os.PathLike) -> tuple[list[SparseAutoencoder], dict, dict]:
    """Inverse of :func:`save_saes`: ``(saes, datasets, attrs)``.

    Raises: :class:`successor_heads.core.h5io.IncompleteOutputError` for a missing or unfinished file.
    """
    data, attrs = read_h5(path, required=("W_dec", "b_enc", "b_dec", "scale"))
    tied = bool(attrs.get("tied", "W_enc" not in data))
    saes = []
    for k in range(data["W_dec"].shape[0]):
        s = SparseAutoencoder(data["W_dec"].shape[2], data["W_dec"].shape[1], tied)
        state = {"W_dec": data["W_dec"][k], "b_enc": data["b_enc"][k], "b_dec": data["b_dec"][k],
                 "scale": data["scale"][k]}
        if not tied:
            state["W_enc"] = data["W_enc"][k]
        s.load_state_dict({n: torch.as_tensor(np.asarray(v)) for n, v in state.items()})
        saes.append(s.eval())
    return saes, data, attrs
