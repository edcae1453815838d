"""Every output path of the project, defined once (docs/DESIGN.md, "Paths").

Per model, a stage writes named files under ``results/{model}/``; a zoo-level rule under
``results/{zoo_name}/``; each rule logs to ``results/logs/{model or zoo_name}/{rule}.log``. The
names are the keys of the rules' ``input:``/``output:`` and of a stage's ``run(cfg, inputs,
outputs)``. With ``model="{model}"`` (the default) a path is a Snakemake pattern.
"""

from __future__ import annotations

import os
from pathlib import Path

PathLike = str | os.PathLike

#: Per stage, the files it writes, by name, relative to ``results/{model}/``.
OUTPUTS: dict[str, dict[str, str]] = {
    "models": {"manifest": "model/manifest.json"},
    "activations": {"h5": "activations/effective_embeddings.h5"},
    "scores": {"h5": "successor_scores.h5", "csv": "successor_scores.csv", "tasks": "tasks.csv",
               "heatmap": "successor_heatmap.png", "top": "top_head_tasks.png", "summary": "scores_summary.json"},
    "features": {"directions": "features/directions.h5", "saes": "features/saes.h5",
                 "table": "features/features_table.csv", "summary": "features/features_summary.json",
                 "activations_fig": "features/feature_activations.png", "confusion": "features/probe_confusion.png",
                 "cosine": "features/probe_sae_cosine.png"},
    "editing": {"h5": "editing/editing.h5", "vector_arithmetic": "editing/vector_arithmetic.csv",
                "va_residues": "editing/vector_arithmetic_residues.csv",
                "va_summary": "editing/vector_arithmetic_summary.csv", "greater_than": "editing/greater_than.csv",
                "prompts": "editing/edit_loss_prompts.csv", "corpus": "editing/edit_loss_corpus.csv",
                "sweep": "editing/scale_sweep.png", "greater_fig": "editing/greater_than.png",
                "summary": "editing/editing_summary.json"},
    "wild": {"h5": "wild/direct_effect.h5", "winners": "wild/winners.csv", "categories": "wild/categories.csv",
             "head_wins": "wild/head_wins.csv", "listings": "wild/listings.csv",
             "heatmap": "wild/loss_increase_heatmap.png", "shares": "wild/category_shares.png",
             "summary": "wild/wild_summary.json"},
    "cycles": {"circles": "cycles/circles.csv", "rotation": "cycles/rotation.csv",
               "summary": "cycles/cycles_summary.json", "circles_fig": "cycles/circles.png",
               "heatmap": "cycles/rotation_heatmap.png"},
}

#: Per stage, what it reads from earlier stages: input name -> (stage, output name).
INPUTS: dict[str, dict[str, tuple[str, str]]] = {
    "models": {},
    "activations": {"manifest": ("models", "manifest")},
    "scores": {"manifest": ("models", "manifest")},
    "features": {"manifest": ("models", "manifest"), "activations": ("activations", "h5"),
                 "scores": ("scores", "h5")},
    "editing": {"manifest": ("models", "manifest"), "scores": ("scores", "h5"),
                "directions": ("features", "directions")},
    "wild": {"manifest": ("models", "manifest"), "scores": ("scores", "h5")},
    "cycles": {"manifest": ("models", "manifest"), "scores": ("scores", "h5")},
}

#: Per stage, the outputs ``rule all`` asks for (the rest come with them, from the same job).
TARGETS: dict[str, tuple[str, ...]] = {
    "scores": ("csv", "heatmap", "top"),
    "features": ("directions", "summary", "table", "activations_fig", "confusion", "cosine"),
    "editing": ("summary", "va_summary", "sweep", "greater_fig"),
    "wild": ("winners", "categories", "listings", "heatmap", "shares", "summary"),
    "cycles": ("circles", "rotation", "summary", "circles_fig", "heatmap"),
}

#: The Snakemake rule of each per-model stage (it names the stage's log).
RULES: dict[str, str] = {"models": "fetch_model", "activations": "cache_activations", "scores": "successor_scores",
                         "features": "features", "editing": "editing", "wild": "wild", "cycles": "cycles"}

#: Per zoo-level rule, the files it writes, by name, relative to ``results/{zoo_name}/``
#: (``over_training``: only for a zoo with a checkpoint sweep; docs/DESIGN.md, "Model specs").
ZOO_OUTPUTS: dict[str, dict[str, str]] = {
    "zoo_table": {"csv": "successor_heads.csv", "fig": "max_score_vs_params.png",
                  "per_task": "top_heads_per_task.png"},
    "paper_table": {"csv": "paper_vs_ours.csv", "html": "paper_vs_ours.html"},
    "cycles_table": {"csv": "cycles_rotation.csv"},
    "over_training": {"csv": "over_training.csv", "fig": "over_training.png"},
}


def _in(table: dict, key: str, what: str) -> dict:
    if key not in table:
        raise KeyError(f"unknown {what} {key!r}: one of {sorted(table)}")
    return table[key]


def outputs(stage: str, results: PathLike = "results", model: str = "{model}") -> dict[str, str]:
    """The files ``stage`` writes for ``model``, by name (:data:`OUTPUTS`). Raises: KeyError."""
    return {name: f"{results}/{model}/{rel}" for name, rel in _in(OUTPUTS, stage, "stage").items()}


def inputs(stage: str, results: PathLike = "results", model: str = "{model}") -> dict[str, str]:
    """The files ``stage`` reads for ``model``, by name (:data:`INPUTS`). Raises: KeyError."""
    return {name: outputs(src, results, model)[key] for name, (src, key) in _in(INPUTS, stage, "stage").items()}


def targets(stage: str, results: PathLike = "results", model: str = "{model}") -> list[str]:
    """The outputs of ``stage`` that ``rule all`` asks for (:data:`TARGETS`). Raises: KeyError."""
    out = outputs(stage, results, model)
    return [out[name] for name in _in(TARGETS, stage, "stage with targets")]


def log(stage: str, results: PathLike = "results", model: str = "{model}") -> str:
    """``results/logs/{model}/{rule}.log`` of ``stage``'s rule (:data:`RULES`). Raises: KeyError."""
    return f"{results}/logs/{model}/{_in(RULES, stage, 'stage')}.log"


def zoo_outputs(rule: str, results: PathLike = "results", zoo_name: str = "zoo") -> dict[str, str]:
    """The files the zoo-level ``rule`` writes, by name (:data:`ZOO_OUTPUTS`). Raises: KeyError."""
    return {name: f"{results}/{zoo_name}/{rel}" for name, rel in _in(ZOO_OUTPUTS, rule, "zoo rule").items()}


def zoo_log(rule: str, results: PathLike = "results", zoo_name: str = "zoo") -> str:
    """``results/logs/{zoo_name}/{rule}.log``. Raises: KeyError for an unknown zoo rule."""
    _in(ZOO_OUTPUTS, rule, "zoo rule")
    return f"{results}/logs/{zoo_name}/{rule}.log"


def config_file(results: PathLike = "results", model: str = "{model}") -> str:
    """``results/{model}/config.yaml``: the model's config as the command line ran it."""
    return f"{results}/{model}/config.yaml"


def model_dir(manifest: PathLike) -> Path:
    """The model folder a ``manifest.json`` path names (rules depend on the manifest, written
    last into the folder; stages open the folder)."""
    return Path(manifest).parent
