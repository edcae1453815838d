"""Stage ``cycles``: circular features and each head as a map of the circle (ours; docs/DESIGN.md,
"Circular features").

Outputs (:data:`successor_heads.core.layout.OUTPUTS` ``["cycles"]``, in ``results/{model}/``):
``cycles/circles.csv`` (``circles``), ``cycles/rotation.csv`` (``rotation``),
``cycles/cycles_summary.json`` (``summary``), ``cycles/circles.png`` (``circles_fig``),
``cycles/rotation_heatmap.png`` (``heatmap``). Inputs: the model folder's ``manifest`` and the
scores stage's ``successor_scores.h5`` (``scores``: the successor head and every head's
successor score per task).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

import numpy as np

from successor_heads.core.effective_embedding import neutral_prefix, norm_convention
from successor_heads.core.h5io import IncompleteOutputError, provenance, read_h5
from successor_heads.core.handoff import StageInputError, load_top_heads
from successor_heads.core.heads import head_label
from successor_heads.core.loading import open_for_stage
from successor_heads.core.streaming import readout_modules, resident
from successor_heads.core.tasks import build_tasks
from successor_heads.core.writers import SIGNIFICANT5, write_csv, write_json
from successor_heads.cycles import figures
from successor_heads.cycles.maps import number_spectrum
from successor_heads.cycles.measure import measure_cycles

log = logging.getLogger(__name__)


def read_successor_scores(scores_h5: str | Path, *, model: str) -> tuple[dict, str]:
    """Every head's successor score per task from the scores stage's file: ``({mode: (scores
    [n_layers, n_heads, n_tasks], task_names)}, default_mode)``.

    Raises: StageInputError for a missing or unfinished file (the message names the stage)."""
    try:
        data, attrs = read_h5(scores_h5)
    except IncompleteOutputError as e:  # say which stage makes the file
        raise StageInputError(f"successor scores unavailable: {e}. Run `successor-heads scores model={model}` "
                              "first") from e
    names = list(data["task_names"])
    modes = {k[len("scores_"):]: (np.asarray(v), names) for k, v in data.items() if k.startswith("scores_")}
    return modes, str(attrs["default_mode"])


def run(cfg, inputs: Mapping[str, str | Path], outputs: Mapping[str, str | Path], progress: bool = True,
        mem_mb: int | None = None) -> dict:
    """Measure the circles of ``cfg.model`` and every head's map of them; write the outputs of the
    module docstring.

    Args:
        cfg: the run's typed config (:class:`successor_heads.config.RootConfig`; a job's: its
            params): ``model``, ``device``, ``tasks``, ``scores.modes``, ``scores.norms`` and
            ``cycles`` (:class:`~successor_heads.cycles.config.CyclesConfig`).
        inputs: ``manifest`` (the model folder's) and ``scores`` (``successor_scores.h5``).
        outputs: the paths by the names of the module docstring.
        mem_mb: the job's memory (MB; the workflow passes the rule's ``mem_mb`` resource), which
            ``model.memory=auto`` compares the weights with; None: ``cfg.model.resources.mem_mb``.

    Returns: the summary also written to ``outputs["summary"]``.
    Raises: StageInputError when the scores are missing; ValueError for a bad ``cycles``
        setting or when no task can be measured.
    """
    t0 = time.time()
    settings = cfg.cycles
    name = cfg.model.name
    scores, default_mode = read_successor_scores(inputs["scores"], model=name)
    sl, sh = load_top_heads(inputs["scores"], 1, model=name)[0]
    model, tok, adapter, manifest = open_for_stage(cfg, inputs["manifest"], mem_mb)
    norms, modes = cfg.scores.norms, list(cfg.scores.modes)
    periods = dict(settings.tasks)
    res = measure_cycles(adapter, tok, build_tasks(tok, **asdict(cfg.tasks)), periods=periods, modes=modes, norms=norms,
                         n_permutations=settings.n_permutations, seed=settings.seed, prefix_ids=neutral_prefix(tok),
                         successor_head=(sl, sh), successor_scores=scores, model_name=name, progress=progress)
    write_csv(res.circles, outputs["circles"], SIGNIFICANT5)
    write_csv(res.rotation, outputs["rotation"], SIGNIFICANT5)
    label = head_label(sl, sh)
    first = default_mode if default_mode in modes else modes[0]
    figures.circles([res.successor[first, t]["figure"] for t in periods if (first, t) in res.successor],
                    f"{name} {label} ({first}): input and output circles, arrows: the head's image of each item",
                    outputs["circles_fig"])
    figures.rotation_heatmap({f"{m}: {t}": g for (m, t), g in res.rotation_grid.items()},
                             f"{name}: rotation score per head (1 = one step forward)", outputs["heatmap"])

    rows = res.rotation[res.rotation["head"] == label]
    successor = {}
    for (mode, task), info in res.successor.items():
        row = rows[(rows["mode"] == mode) & (rows["task"] == task)].iloc[0]
        successor[f"{mode}/{task}"] = {
            **{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k not in ("mode", "task", "head")},
            "n_heads_ranked": int(((res.rotation["mode"] == mode) & (res.rotation["task"] == task)).sum()),
            "circulant_profile": info["profile"], "causal_check": info["causal_check"],
            "harmonics_input": info["harmonics_input"], "harmonics_W_U": info["harmonics_W_U"],
            "closure_ratio_input": info["closure_ratio_input"], "closure_ratio_W_U": info["closure_ratio_W_U"]}
    with resident(model, *readout_modules(adapter)):  # a streamed model reads W_U for the numbers' columns
        spectrum = number_spectrum(adapter, tok, norms=norms)
    summary = {"model": name, "successor_head": label, "default_mode": default_mode, "modes": modes,
               "norms": norms, "value_bias": False, "scoring_dtype": "float32",
               **{f"norm_convention_{m}": ", ".join(f"{k}={'n/a' if v is None else v}"
                                                    for k, v in norm_convention(m, norms).items()) for m in modes},
               "tasks": periods, "tasks_skipped": res.skipped, "n_permutations": settings.n_permutations,
               "seed": settings.seed, "successor": successor, "memory": manifest["memory"],
               "number_spectrum": spectrum,
               "provenance": provenance(manifest, **cfg.model.provenance(), norms=norms), "wall_s": round(time.time() - t0, 1)}
    write_json(summary, outputs["summary"])
    log.info("cycles of %s in %.1f s", name, summary["wall_s"])
    return {"successor_head": label, "wall_s": summary["wall_s"],
            **{f"rotation_{k}": round(v["rotation_score"], 3) for k, v in successor.items()}}
