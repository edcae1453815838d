"""Circles in a model and each head as a map of them (ours; docs/DESIGN.md, "Circular features").

The model side of :mod:`successor_heads.cycles.metrics`: the vectors a head's ``W_V`` reads
(effective embeddings through the head's input norm where the scores stage applies it), the
task-logit matrices of every head of a layer (the scores stage's effective OV circuit:
:func:`successor_heads.core.ov.ov_readout` times the task's ``W_U`` columns, plus ``b_U``, no
value bias), the causal check of one head on its fitted circle, and the Fourier spectrum of the
number tokens 0..99 where the tokenizer has them as single tokens.
"""

from __future__ import annotations

import numpy as np
import torch

from successor_heads.core.adapters import Adapter
from successor_heads.core.effective_embedding import mlp0_embeddings
from successor_heads.core.ov import ov_readout
from successor_heads.core.tasks import single_token_id
from successor_heads.cycles.metrics import CircleFit, fourier_spectrum


@torch.no_grad()
def head_inputs(adapter: Adapter, layer: int, x_TM: torch.Tensor, input_norm: bool) -> torch.Tensor:
    """What ``W_V`` of ``layer`` reads for effective embeddings ``x_TM [n, d_model]``: the layer's
    attention input norm applied when ``input_norm`` (always in ``resid`` mode;
    :func:`successor_heads.core.effective_embedding.head_input_norm`). Returns float32
    ``[n, d_model]`` on the adapter's device. Raises nothing beyond torch's. Source: paper
    Section 2 (effective OV circuit), docs/DESIGN.md "Norm conventions"."""
    x = x_TM.to(adapter.device, torch.float32)
    return adapter.run_f32(adapter.attn_in_norm(layer), x) if input_norm else x


@torch.no_grad()
def task_unembed(adapter: Adapter, token_ids) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``W_U`` columns ``[d_model, n_tokens]`` and ``b_U [n_tokens]`` (or None) of
    ``token_ids``, float32, gathered once per task. Raises IndexError for an id outside the
    vocabulary."""
    W_U, b_U = adapter.unembed_columns(torch.as_tensor(list(token_ids), dtype=torch.long))
    return W_U.float(), None if b_U is None else b_U.float()


@torch.no_grad()
def layer_task_logits(adapter: Adapter, layer: int, X_TM: torch.Tensor, token_ids, *, norms: str,
                      heads=None, unembed: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> np.ndarray:
    """Every (chosen) head's task-logit matrix: row r is input ``X_TM[r]`` (already as ``W_V``
    reads it, see :func:`head_inputs`) read through the head's OV circuit and the ``W_U`` columns
    of ``token_ids`` (plus ``b_U``), with no value bias: the scores stage's circuit.

    Args:
        X_TM: ``[n, d_model]`` head inputs.
        token_ids: ``[n_tokens]`` the logits' columns.
        norms: ``"raw"`` or ``"applied"`` (the scores stage's ``scores.norms``).
        heads: head indices (None: all ``n_heads``).
        unembed: :func:`task_unembed` of ``token_ids``, when the caller gathered it already.

    Returns: ``[n_heads, n, n_tokens]`` float64 logits.
    Raises: ValueError for an unknown ``norms``. Source: paper Section 2.
    """
    readout = ov_readout(adapter, layer, X_TM, norms, heads, value_bias=False, input_norm=False)
    return readout_logits(readout, unembed or task_unembed(adapter, token_ids))


def readout_logits(readout_HNM: torch.Tensor, unembed: tuple[torch.Tensor, torch.Tensor | None]) -> np.ndarray:
    """OV read-outs ``[n_heads, n, d_model]`` (:func:`successor_heads.core.ov.ov_readout`) times
    a task's :func:`task_unembed`: ``[n_heads, n, n_tokens]`` float64 logits."""
    W_U, b_U = unembed
    out = readout_HNM @ W_U
    return (out if b_U is None else out + b_U).double().cpu().numpy()


def best_constant_chance(successor) -> float:
    """One task's chance level as the scores stage defines it (docs/DESIGN.md, "Successor score
    and chance level"): the score of a head that always picks the same item,
    ``max_t #pairs(succ = t) / n_pairs``. Raises ValueError when no item has a successor."""
    s = np.asarray(successor)
    s = s[s >= 0]
    if s.size == 0:
        raise ValueError("no item has its successor among the items: no chance level")
    return float(np.bincount(s).max() / s.size)


@torch.no_grad()
def causal_check(adapter: Adapter, layer: int, head: int, X_TM: torch.Tensor, fit: CircleFit, k, T: int,
                 token_ids, successor, *, norms: str) -> dict:
    """Does the head act through the circle? Two interventions on its inputs.

    * **circle only**: each input replaced by its point on the fitted circle
      (:meth:`CircleFit.points`); the successor score that remains, beside the score on the real
      inputs and the task's chance level (:func:`best_constant_chance`).
    * **rotate by one step**: each input's in-plane component (its least-squares coordinates in
      the fitted plane) turned by ``2*pi/T``, the rest of the vector kept; ``move_rate`` is the
      fraction of items (whose next item is in the task) whose top item moves to the next item.
      ``move_rate_chance = 1 / n`` is a new top item drawn at random.

    Args:
        X_TM: ``[n, d_model]`` the inputs as ``W_V`` reads them (:func:`head_inputs`); ``fit``
            their :func:`~successor_heads.cycles.metrics.circle_fit`.
        k: ``[n]`` positions; ``T`` the period; ``token_ids [n]``; ``successor [n]`` (-1: none).
        norms: as :func:`layer_task_logits`.

    Returns: dict with ``score``, ``circle_only_score``, ``chance``, ``move_rate``,
    ``move_rate_chance``, ``n_pairs``, ``n_moves``.
    Raises: ValueError when no item has a successor. Source: ours (after Engels et al. 2024's
    circle patching).
    """
    succ = np.asarray(successor)
    rows = succ >= 0
    chance = best_constant_chance(succ)
    k = np.asarray(k)
    X = X_TM.double().cpu().numpy()
    unembed = task_unembed(adapter, token_ids)
    logits = lambda x: layer_task_logits(adapter, layer, torch.as_tensor(x, dtype=torch.float32),  # noqa: E731
                                         token_ids, norms=norms, heads=[head], unembed=unembed)[0]
    pred = logits(X).argmax(-1)
    circle_pred = logits(fit.points(k, T)).argmax(-1)
    step = 2 * np.pi / T
    R = np.array([[np.cos(step), -np.sin(step)], [np.sin(step), np.cos(step)]])
    u = fit.coords  # [n, 2], coordinates around the fitted centre
    moved_pred = logits(X + (u @ R.T - u) @ fit.basis).argmax(-1)
    position = {int(p) % T: i for i, p in enumerate(k)}
    nxt = np.array([position.get((int(k[p]) + 1) % T, -1) for p in pred])
    has = nxt >= 0
    return {"score": float((pred[rows] == succ[rows]).mean()),
            "circle_only_score": float((circle_pred[rows] == succ[rows]).mean()),
            "chance": chance, "n_pairs": int(rows.sum()),
            "move_rate": float((moved_pred[has] == nxt[has]).mean()) if has.any() else float("nan"),
            "move_rate_chance": 1.0 / len(k), "n_moves": int(has.sum())}


def number_token_ids(tokenizer, n: int = 100) -> tuple[list[int] | None, str]:
    """Ids of the numbers ``0..n-1`` when the tokenizer has every one as a single token, written
    without a leading space or else with one: ``(ids, spelling)``, or ``(None, reason)``. Raises
    nothing. Source: ours (docs/DESIGN.md, "Circular features")."""
    for space, spelling in (("", "unspaced"), (" ", "spaced")):
        ids = [single_token_id(tokenizer, f"{space}{i}") for i in range(n)]
        if all(i is not None for i in ids):
            return [int(i) for i in ids], spelling
    have = sum(single_token_id(tokenizer, str(i)) is not None for i in range(n))
    return None, f"the tokenizer has {have} of the numbers 0..{n - 1} as single tokens (unspaced)"


@torch.no_grad()
def number_spectrum(adapter: Adapter, tokenizer, *, norms: str, n: int = 100) -> dict:
    """The Fourier spectrum of the number tokens ``0..n-1``: of their ``mlp0`` effective
    embeddings, of their ``W_U`` columns, and, as the baseline, of their token ids' ranks (BPE
    ids follow merge order, a proxy for training frequency: periods 2, 5 and 10 appear in raw
    frequency too). Each spectrum is :func:`~successor_heads.cycles.metrics.fourier_spectrum`.

    Returns: ``{"applicable": False, "reason": ...}`` when the tokenizer lacks a number as a
    single token, else ``applicable``, ``spelling``, ``periods [n // 2]`` and ``share_mlp0``,
    ``share_W_U``, ``share_token_rank`` (each ``[n // 2]``, summing to 1).
    Raises: ValueError for an unknown ``norms``. Source: ours, after Zhou et al. 2024 and
    Kantamneni & Tegmark 2025 (Fourier features of numbers).
    """
    ids, spelling = number_token_ids(tokenizer, n)
    if ids is None:
        return {"applicable": False, "reason": spelling}
    t = torch.tensor(ids)
    emb = mlp0_embeddings(adapter, t, norms).double().cpu().numpy()
    W_U = adapter.unembed_columns(t)[0].double().cpu().numpy().T
    rank = np.argsort(np.argsort(ids)).astype(float)[:, None]
    periods, s_emb = fourier_spectrum(emb)
    return {"applicable": True, "spelling": spelling, "baseline": "token id rank (BPE merge order)",
            "periods": periods.tolist(), "share_mlp0": s_emb.tolist(),
            "share_W_U": fourier_spectrum(W_U)[1].tolist(), "share_token_rank": fourier_spectrum(rank)[1].tolist()}
