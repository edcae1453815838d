"""Successor scores from weights: the effective OV circuit (paper, Section 2; docs/DESIGN.md).

For head h of layer L and a task's tokens ``t_1..t_n``,
``logits_h(t_i) = W_U · W_OV^h · x_L(t_i)`` restricted to the task's tokens, where ``x`` is an
effective embedding (:mod:`successor_heads.core.effective_embedding`) and ``W_OV^h = W_V^h W_O^h``
has no value bias (``value_bias=True`` is our option, not the paper's). The head gets pair
``(t_i, t_j = succ(t_i))`` right when ``t_j`` has the largest of those logits. The successor
score is the fraction of pairs it gets right: per task, and overall as the pair-weighted mean
over all non-held-out tasks. Everything is computed in float32 whatever the model's dtype.
:func:`chance_level` is the score of a head that always picks one task token.

:func:`successor_scores` computes every head's OV read-out (:func:`successor_heads.core.ov.ov_readout`)
for a layer in batched products over the union of all tasks' tokens, then unembeds each task's
block only;
:func:`successor_scores_loop` is the plain per-head, per-task reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from successor_heads.core.adapters import Adapter
from successor_heads.core.ov import ov_readout
from successor_heads.core.streaming import head_circuit, readout_modules, resident


@dataclass
class TaskIndex:
    """A task reduced to what scoring needs. ``token_ids [n]``; ``successor [n]`` (-1: no pair)."""

    name: str
    token_ids: list[int]
    successor: list[int]
    held_out: bool = False

    @property
    def n_pairs(self) -> int:
        return int(sum(s >= 0 for s in self.successor))


@dataclass
class ScoreResult:
    """``per_task [n_layers, n_heads, n_tasks]`` (fraction of pairs right; NaN for tasks without
    pairs), ``overall [n_layers, n_heads]`` (pair-weighted over non-held-out tasks),
    ``n_pairs [n_tasks]``, ``task_names``."""

    per_task: np.ndarray
    overall: np.ndarray
    n_pairs: np.ndarray
    task_names: list[str]


def _overall(per_task: np.ndarray, tasks: list[TaskIndex]) -> np.ndarray:
    w = np.array([0 if t.held_out else t.n_pairs for t in tasks], dtype=float)
    if w.sum() == 0:
        raise ValueError("no task has a (token, successor) pair of single tokens: nothing to score")
    return np.nansum(np.nan_to_num(per_task) * w, axis=-1) / w.sum()


def chance_level(tasks: list[TaskIndex]) -> float:
    """Pair-weighted successor score of the best constant head (one that always picks the same
    token of each task), over the non-held-out tasks: ``sum_k max_t #pairs(succ = t) / sum_k
    n_pairs_k``. A top score near it is noise. Ours, beside the paper's score (Section 2).

    Raises: ValueError when no task has a pair.
    """
    hits = sum(max(np.bincount([s for s in t.successor if s >= 0]).max(initial=0), 0)
               for t in tasks if not t.held_out and t.n_pairs)
    total = sum(t.n_pairs for t in tasks if not t.held_out)
    if total == 0:
        raise ValueError("no task has a (token, successor) pair of single tokens: nothing to score")
    return float(hits / total)


def _correct_fraction(logits_HTT: torch.Tensor, successor: torch.Tensor) -> torch.Tensor:
    """``[n_heads, n, n]`` task logits, ``successor [n]`` -> ``[n_heads]`` fraction of pairs right."""
    has = successor >= 0
    if not bool(has.any()):
        return torch.full((logits_HTT.shape[0],), float("nan"))
    pred = logits_HTT[:, has].argmax(-1)  # [n_heads, n_pairs]
    return (pred == successor[has]).float().mean(-1).cpu()


def _readout_all_heads(adapter: Adapter, x_TM: torch.Tensor, layer: int, norms: str, batch_heads: int,
                       value_bias: bool, input_norm: bool | None, out_HTM: torch.Tensor) -> torch.Tensor:
    """Every head's :func:`~successor_heads.core.ov.ov_readout` of ``x_TM``, ``batch_heads`` heads
    per product, written into ``out_HTM`` (float32 ``[n_heads, n_tokens, d_model]``, reused for
    every layer) and returned."""
    n_heads = adapter.dims.n_heads
    for h0 in range(0, n_heads, batch_heads):
        h1 = min(h0 + batch_heads, n_heads)
        heads = None if (h0, h1) == (0, n_heads) else torch.arange(h0, h1)  # all heads: W_V, W_O not copied
        ov_readout(adapter, layer, x_TM, norms, heads, value_bias, input_norm, out=out_HTM[h0:h1])
    return out_HTM


@torch.no_grad()
def successor_scores(
    adapter: Adapter,
    x_LTM: torch.Tensor,
    token_ids: torch.Tensor,
    tasks: list[TaskIndex],
    norms: str = "raw",
    batch_heads: int = 64,
    progress: bool = False,
    value_bias: bool = False,
    input_norm: bool | None = None,
) -> ScoreResult:
    """Score every head of every layer on every task at once.

    Args:
        adapter: the model's :class:`~successor_heads.core.adapters.Adapter`.
        x_LTM: effective embeddings ``[n_layers, n_tokens, d_model]`` of ``token_ids``.
        token_ids: ``[n_tokens]`` the union of all tasks' token ids (any order, unique).
        tasks: tasks whose ``token_ids`` are all in ``token_ids``.
        norms: ``"raw"`` or ``"applied"`` (see :meth:`Adapter.ov`, :meth:`Adapter.unembed`).
        batch_heads: heads per OV product (bounds the product's intermediates; a layer's
            outputs ``[n_heads, n_tokens, d_model]`` are held at once).
        value_bias: add ``b_V^h W_O^h`` to each head's output (not the paper's circuit).
        input_norm: apply the layer's attention input norm before ``W_V``; pass
            :func:`successor_heads.core.effective_embedding.head_input_norm` of the mode that made
            ``x_LTM`` (default: ``norms == "applied"``).

    Returns: :class:`ScoreResult`.
    Raises: ValueError if a task token is missing from ``token_ids`` or no task has a pair.
    """
    token_ids = torch.as_tensor(token_ids, dtype=torch.long)
    pos = {int(t): i for i, t in enumerate(token_ids.tolist())}
    try:
        task_pos = [torch.tensor([pos[t] for t in task.token_ids], dtype=torch.long) for task in tasks]
    except KeyError as e:
        raise ValueError(f"task token id {e} is not among token_ids") from e
    # a streamed model (successor_heads.core.streaming) reads W_U and the final norm once, then
    # each layer's norms and value/output projections only while that layer is scored
    with resident(adapter.model, *readout_modules(adapter)):
        return _score_layers(adapter, x_LTM, tasks, task_pos, norms, batch_heads, progress, value_bias, input_norm)


def _layer_weights(adapter: Adapter, layer: int):
    """What scoring ``layer`` reads: its attention input norm, value and output projections and
    post-attention norm (resident for the block when the model is streamed)."""
    return resident(adapter.model, *head_circuit(adapter, layer))


def _score_layers(adapter: Adapter, x_LTM, tasks, task_pos, norms, batch_heads, progress, value_bias,
                  input_norm) -> ScoreResult:
    """The body of :func:`successor_scores` once the unembedding is resident."""
    unembed = [tuple(None if w is None else w.float() for w in adapter.unembed_columns(torch.tensor(task.token_ids)))
               for task in tasks]
    # only tokens that have a successor are scored: their rows among token_ids, and the
    # successor's column within the task
    pair_rows, pair_target = [], []
    for p, task in zip(task_pos, tasks):
        succ = torch.tensor(task.successor, dtype=torch.long)
        has = succ >= 0
        pair_rows.append(p[has].to(adapter.device) if bool(has.any()) else None)
        pair_target.append(succ[has].to(adapter.device))
    d = adapter.dims
    per_task = np.full((d.n_layers, d.n_heads, len(tasks)), np.nan)
    per_task_t = torch.full((d.n_heads, len(tasks)), float("nan"), device=adapter.device)
    # buffers written anew for every layer: a fresh allocation of this size per layer (and per
    # task) is returned to the OS when freed and page-faulted in again, which cost more system
    # time than the products themselves on a 13B model (benchmarks/bench_streaming.py)
    h_HTM = torch.empty(d.n_heads, x_LTM.shape[1], d.d_model, device=adapter.device)
    n_rows = max((len(r) for r in pair_rows if r is not None), default=0)
    rows_flat = torch.empty(d.n_heads * n_rows * d.d_model, device=adapter.device)
    for layer in tqdm(range(d.n_layers), desc="successor scores", disable=not progress):
        with _layer_weights(adapter, layer):
            _readout_all_heads(adapter, x_LTM[layer], layer, norms, batch_heads, value_bias, input_norm, h_HTM)
        # only each task's own block of logits is needed: unembedding every token against every
        # other (n_tokens^2) costs far more than the tasks' blocks together
        for k, (rows, target, (W_U, b_U)) in enumerate(zip(pair_rows, pair_target, unembed)):
            if rows is None:
                continue  # no pair in this task: NaN
            h_HNM = torch.index_select(h_HTM, 1, rows, out=rows_flat[:d.n_heads * len(rows) * d.d_model]
                                       .view(d.n_heads, len(rows), d.d_model))
            logits_HNT = h_HNM @ W_U  # [n_heads, n_pairs, n_task_tokens]
            if b_U is not None:
                logits_HNT = logits_HNT + b_U
            per_task_t[:, k] = (logits_HNT.argmax(-1) == target).float().mean(-1)
        per_task[layer] = per_task_t.cpu().numpy()
    return ScoreResult(per_task, _overall(per_task, tasks), np.array([t.n_pairs for t in tasks]),
                       [t.name for t in tasks])


@torch.no_grad()
def successor_scores_loop(
    adapter: Adapter, x_LTM: torch.Tensor, token_ids: torch.Tensor, tasks: list[TaskIndex], norms: str = "raw",
    value_bias: bool = False, input_norm: bool | None = None,
) -> ScoreResult:
    """Reference implementation of :func:`successor_scores`: one head, one task at a time,
    with explicit float32 ``W_OV = W_V W_O`` per head and the norms applied by hand. Same inputs,
    outputs and errors."""
    token_ids = torch.as_tensor(token_ids, dtype=torch.long)
    pos = {int(t): i for i, t in enumerate(token_ids.tolist())}
    input_norm = norms == "applied" if input_norm is None else input_norm
    d = adapter.dims
    per_task = np.full((d.n_layers, d.n_heads, len(tasks)), np.nan)
    for layer in range(d.n_layers):
        W_V, b_V = (w.float() for w in adapter.W_V_layer(layer))
        W_O = adapter.W_O_layer(layer)[0].float()
        post = adapter.attn_out_norm(layer)
        for h in range(d.n_heads):
            W_OV = W_V[h] @ W_O[h]  # [d_model, d_model]
            for k, task in enumerate(tasks):
                ids = torch.tensor(task.token_ids)
                x = x_LTM[layer, [pos[t] for t in task.token_ids]].to(adapter.device, torch.float32)
                if input_norm:
                    x = adapter.run_f32(adapter.attn_in_norm(layer), x)
                out = x @ W_OV
                if value_bias:
                    out = out + b_V[h] @ W_O[h]
                if norms == "applied" and post is not None:
                    out = adapter.run_f32(post, out)
                logits = adapter.unembed(out, norms, token_ids=ids)
                per_task[layer, h, k] = _correct_fraction(logits[None], torch.tensor(task.successor))[0]
    return ScoreResult(per_task, _overall(per_task, tasks), np.array([t.n_pairs for t in tasks]),
                       [t.name for t in tasks])
