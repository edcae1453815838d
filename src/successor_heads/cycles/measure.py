"""Every measurement of the ``cycles`` stage for one model, as tables (ours; docs/DESIGN.md,
"Circular features"): the circle fits of each task's head inputs (per mode and layer) and of its
``W_U`` columns, every head's map of each task's circle, and the successor head's causal check.
All settings are explicit keyword arguments; :func:`successor_heads.cycles.stage.run` reads them
from the config."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from successor_heads.core.adapters import Adapter
from successor_heads.core.effective_embedding import effective_embeddings, head_input_norm
from successor_heads.core.heads import head_label
from successor_heads.core.tasks import Task
from successor_heads.core.ov import ov_readout
from successor_heads.core.streaming import head_circuit, readout_modules, resident
from successor_heads.cycles.maps import causal_check, head_inputs, readout_logits, task_unembed
from successor_heads.cycles.metrics import circle_fit, head_maps, purity, ranks

#: Columns of ``circles.csv`` and ``rotation.csv``, in order.
CIRCLE_COLUMNS = ("model", "mode", "layer", "task", "T", "r2", "r2_null_mean", "r2_null_p95", "p", "closes")
ROTATION_COLUMNS = ("mode", "task", "head", "rotation_score", "shift_deg", "shift_steps", "consistency",
                    "in_plane_accuracy", "purity", "best_offset", "rank", "successor_score")
#: ``mode`` of the output circle's rows in ``circles.csv`` (its ``layer`` is ``n_layers``).
OUTPUT_MODE = "W_U"


@dataclass
class CycleResult:
    """``circles``, ``rotation``: the two tables (:data:`CIRCLE_COLUMNS`, :data:`ROTATION_COLUMNS`);
    ``rotation_grid``: ``{(mode, task): [n_layers, n_heads]}``; ``successor``: the successor
    head's details per ``(mode, task)`` (profile, causal check, harmonics, closure, figure data);
    ``skipped``: task -> why it was not measured."""

    circles: pd.DataFrame
    rotation: pd.DataFrame
    rotation_grid: dict = field(default_factory=dict)
    successor: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)


def _circle_row(model: str, mode: str, layer: int, task: str, T: int, fit) -> dict:
    return {"model": model, "mode": mode, "layer": layer, "task": task, "T": T, "r2": fit.r2,
            "r2_null_mean": fit.r2_null_mean, "r2_null_p95": fit.r2_null_p95, "p": fit.p, "closes": fit.closes}


def _usable(tasks: list[Task], periods: dict[str, int]) -> tuple[list[Task], dict[str, str]]:
    by_name = {t.name: t for t in tasks}
    kept, skipped = [], {}
    for name in periods:
        t = by_name.get(name)
        if t is None:
            skipped[name] = "no such task (see successor_heads.core.tasks for the names)"
        elif len(t.token_ids) < 3:
            skipped[name] = f"{len(t.token_ids)} single-token items (a circle needs 3)"
        elif t.n_pairs_kept == 0:
            skipped[name] = "no (item, successor) pair of single tokens"
        else:
            kept.append(t)
    return kept, skipped


@torch.no_grad()
def measure_cycles(adapter: Adapter, tokenizer, tasks: list[Task], *, periods: dict[str, int], modes, norms: str,
                   n_permutations: int, seed: int, prefix_ids: list[int], successor_head: tuple[int, int],
                   successor_scores: dict[str, tuple[np.ndarray, list[str]]], model_name: str,
                   progress: bool = False) -> CycleResult:
    """Measure every circle and every head's map of it.

    Args:
        adapter, tokenizer: the model's.
        tasks: :func:`successor_heads.core.tasks.build_tasks` of the tokenizer.
        periods: task name -> period T (the tasks measured, in order).
        modes: effective-embedding modes (``mlp0``, ``resid``).
        norms: the scores stage's ``scores.norms``; the head reads ``resid`` vectors through its
            input norm (:func:`~successor_heads.core.effective_embedding.head_input_norm`).
        n_permutations, seed: the circle fits' permutation null.
        prefix_ids: the ``resid`` prefix (:func:`~successor_heads.core.effective_embedding.neutral_prefix`).
        successor_head: ``(layer, head)`` whose details, causal check and figure are kept.
        successor_scores: mode -> (``[n_layers, n_heads, n_tasks]`` successor scores, task
            names) from the scores stage (a mode or task missing there gives NaN).
        model_name: the ``model`` column of ``circles.csv``.

    Returns: :class:`CycleResult`.
    Raises: ValueError when no task in ``periods`` can be measured.
    Source: ours (docs/DESIGN.md, "Circular features").
    """
    kept, skipped = _usable(tasks, periods)
    if not kept:
        raise ValueError(f"cycles: no task can be measured ({skipped}); set cycles.tasks to tasks this tokenizer keeps")
    d = adapter.dims
    sl, sh = successor_head
    circles, rotation, grid, succ_info = [], [], {}, {}
    W_U_all = {}
    with resident(adapter.model, *readout_modules(adapter)):  # a streamed model reads W_U for these columns only
        for t in kept:
            T = periods[t.name]
            W = adapter.unembed_columns(torch.tensor(t.token_ids))[0].double().cpu().numpy().T  # [n, d_model]
            W_U_all[t.name] = circle_fit(W, t.index, T, n_permutations, seed)
            circles.append(_circle_row(model_name, OUTPUT_MODE, d.n_layers, t.name, T, W_U_all[t.name]))
        unembed = {t.name: task_unembed(adapter, t.token_ids) for t in kept}
    union = sorted({i for t in kept for i in t.token_ids})
    col = {tid: i for i, tid in enumerate(union)}
    for mode in modes:
        x_LTM = effective_embeddings(adapter, torch.tensor(union), mode, norms, prefix_ids=prefix_ids,
                                     progress=progress)
        inorm = head_input_norm(mode, norms)
        layer_free = mode == "mlp0" and not inorm  # the same head input at every layer
        scores, names = successor_scores.get(mode, (None, []))
        fits: dict[str, object] = {}
        for t in kept:
            grid[mode, t.name] = np.full((d.n_layers, d.n_heads), np.nan)
        for layer in range(d.n_layers):
            # a streamed model: this layer's circuit and the final norm, read once per layer and mode
            # (and W_U at the successor head's layer, for its causal check)
            outer = readout_modules(adapter) if layer == sl else [adapter.final_norm()]
            with resident(adapter.model, *head_circuit(adapter, layer), *outer):
                X = {t.name: head_inputs(adapter, layer, x_LTM[layer, [col[i] for i in t.token_ids]], inorm) for t in kept}
                for t in kept:
                    if t.name not in fits or not layer_free:
                        fits[t.name] = circle_fit(X[t.name].double().cpu().numpy(), t.index, periods[t.name],
                                                  n_permutations, seed)
                        circles.append(_circle_row(model_name, mode, layer, t.name, periods[t.name], fits[t.name]))
                # one OV product per layer: every task's inputs and their fitted circles' points
                blocks = [X[t.name] for t in kept] + [torch.as_tensor(fits[t.name].points(t.index, periods[t.name]),
                                                                      dtype=torch.float32, device=adapter.device)
                                                      for t in kept]
                readout = ov_readout(adapter, layer, torch.cat(blocks), norms, None, value_bias=False, input_norm=False)
                starts = np.cumsum([0] + [len(b) for b in blocks])
                for i, t in enumerate(kept):
                    T, k, succ = periods[t.name], np.asarray(t.index), np.asarray(t.successor)
                    task_col = names.index(t.name) if t.name in names else None
                    logits = readout_logits(readout[:, starts[i]:starts[i + 1]], unembed[t.name])
                    j = i + len(kept)
                    circle_logits = readout_logits(readout[:, starts[j]:starts[j + 1]], unembed[t.name])
                    m = head_maps(logits, k, T, succ)
                    pur = purity(circle_logits, k, T)
                    grid[mode, t.name][layer] = m.rotation_score
                    for h in range(d.n_heads):
                        rotation.append({"mode": mode, "task": t.name, "head": head_label(layer, h),
                                         "rotation_score": m.rotation_score[h], "shift_deg": m.shift_deg[h],
                                         "shift_steps": m.shift_steps[h], "consistency": m.consistency[h],
                                         "in_plane_accuracy": m.in_plane_accuracy[h], "purity": pur[h],
                                         "best_offset": int(m.best_offset[h]), "rank": 0,
                                         "successor_score": np.nan if scores is None or task_col is None
                                         else float(scores[layer, h, task_col])})
                    if layer == sl:
                        fit = fits[t.name]
                        phase = np.angle(np.exp(1j * (m.delta[sh] + 2 * np.pi * k / T)))
                        succ_info[mode, t.name] = {
                            "profile": m.profile[sh].tolist(), "harmonics_input": fit.harmonics.tolist(),
                            "closure_ratio_input": fit.closure_ratio,
                            "causal_check": causal_check(adapter, layer, sh, X[t.name], fit, k, T, t.token_ids, succ,
                                                         norms=norms),
                            "figure": {"task": t.name, "labels": list(t.tokens), "input_xy": fit.coords,
                                       "output_xy": W_U_all[t.name].coords, "image_phase": phase,
                                       "input_r2": fit.r2, "output_r2": W_U_all[t.name].r2,
                                       "rotation": float(m.rotation_score[sh])}}
    for t in kept:
        w = W_U_all[t.name]
        for (mode, name), info in succ_info.items():
            if name == t.name:
                info.update(harmonics_W_U=w.harmonics.tolist(), closure_ratio_W_U=w.closure_ratio)
    rot_df = pd.DataFrame(rotation, columns=list(ROTATION_COLUMNS))
    for _, idx in rot_df.groupby(["mode", "task"], sort=False).groups.items():
        rot_df.loc[idx, "rank"] = ranks(rot_df.loc[idx, "rotation_score"].to_numpy())
    return CycleResult(pd.DataFrame(circles, columns=list(CIRCLE_COLUMNS)), rot_df, grid, succ_info, skipped)
