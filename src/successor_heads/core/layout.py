"""Every output path of the project, defined once.

Per model, each stage writes named files under ``results/{model}/``; the zoo-level rules write
under ``results/{zoo_name}/``; every rule logs to ``results/logs/{model or zoo_name}/{rule}.log``.
The Snakemake rules, their scripts, the stages' ``run(cfg, inputs, outputs)``, the command line,
the paper table and the tests all take their paths from here, so a file is renamed in one place.

The names are the keys of the rules' ``input:`` and ``output:`` sections (``snakemake.input``,
``snakemake.output``) and of the mappings each stage's ``run`` receives. Paths are plain strings
joined with ``/``: with ``model="{model}"`` (the default) they are Snakemake patterns whose
``{model}`` wildcard each job fills in.

Stages, in the order they run: ``models`` (rule ``fetch_model``), ``activations`` (rule
``cache_activations``), ``scores`` (rule ``successor_scores``), ``features``, ``editing``, ``wild``,
``cycles``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

PathLike = str | os.PathLike

#: Per stage, the files it writes, by name, relative to ``results/{model}/``.
OUTPUTS: dict[str, dict[str, str]] = {
    "models": {"manifest": "model/manifest.json"},
    "activations": {"h5": "activations/effective_embeddings.h5"},
    "scores": {
        "h5": "successor_scores.h5",
        "csv": "successor_scores.csv",
        "tasks": "tasks.csv",
        "heatmap": "successor_heatmap.png",
        "top": "top_head_tasks.png",
        "summary": "scores_summary.json",
    },
    "features": {
        "directions": "features/directions.h5",
        "saes": "features/saes.h5",
        "table": "features/features_table.csv",
        "summary": "features/features_summary.json",
        "activations_fig": "features/feature_activations.png",
        "confusion": "features/probe_confusion.png",
        "cosine": "features/probe_sae_cosine.png",
    },
    "editing": {
        "h5": "editing/editing.h5",
        "vector_arithmetic": "editing/vector_arithmetic.csv",
        "va_residues": "editing/vector_arithmetic_residues.csv",
        "va_summary": "editing/vector_arithmetic_summary.csv",
        "greater_than": "editing/greater_than.csv",
        "prompts": "editing/edit_loss_prompts.csv",
        "corpus": "editing/edit_loss_corpus.csv",
        "sweep": "editing/scale_sweep.png",
        "greater_fig": "editing/greater_than.png",
        "summary": "editing/editing_summary.json",
    },
    "wild": {
        "h5": "wild/direct_effect.h5",
        "winners": "wild/winners.csv",
        "categories": "wild/categories.csv",
        "head_wins": "wild/head_wins.csv",
        "listings": "wild/listings.csv",
        "heatmap": "wild/loss_increase_heatmap.png",
        "shares": "wild/category_shares.png",
        "summary": "wild/wild_summary.json",
    },
    "cycles": {
        "circles": "cycles/circles.csv",
        "rotation": "cycles/rotation.csv",
        "summary": "cycles/cycles_summary.json",
        "circles_fig": "cycles/circles.png",
        "heatmap": "cycles/rotation_heatmap.png",
    },
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
                         "features": "features", "editing": "editing", "wild": "wild",
                         "cycles": "cycles"}

#: Per zoo-level rule, the files it writes, by name, relative to ``results/{zoo_name}/``.
ZOO_OUTPUTS: dict[str, dict[str, str]] = {
    "zoo_table": {"csv": "successor_heads.csv", "fig": "max_score_vs_params.png",
                  "per_task": "top_heads_per_task.png"},
    "paper_table": {"csv": "paper_vs_ours.csv", "html": "paper_vs_ours.html"},
    "cycles_table": {"csv": "cycles_rotation.csv"},
}

#: The checkpoint-sweep rule's files, relative to ``results/{zoo_name}/`` (written only when the
#: zoo has a sweep; docs/DESIGN.md, "Model specs"). One row and one panel per sweep.
SWEEP_OUTPUTS: dict[str, str] = {"csv": "over_training.csv", "fig": "over_training.png"}
SWEEP_RULE = "over_training"

#: The resolved config of a model, beside its outputs (``results/{model}/config.yaml``).
CONFIG = "config.yaml"
LOGS = "logs"


def _join(*parts: PathLike) -> str:
    return "/".join(str(p) for p in parts)


def _check(table: Mapping, key: str, what: str) -> None:
    if key not in table:
        raise KeyError(f"unknown {what} {key!r}: one of {sorted(table)}")


def model_root(results: PathLike, model: str = "{model}") -> str:
    """``results/{model}``: the folder of one model's outputs."""
    return _join(results, model)


def outputs(stage: str, results: PathLike = "results", model: str = "{model}") -> dict[str, str]:
    """The files ``stage`` writes for ``model``, by name (:data:`OUTPUTS`), under ``results``.

    Raises: KeyError for an unknown stage.
    """
    _check(OUTPUTS, stage, "stage")
    return {name: _join(results, model, rel) for name, rel in OUTPUTS[stage].items()}


def inputs(stage: str, results: PathLike = "results", model: str = "{model}") -> dict[str, str]:
    """The files ``stage`` reads for ``model``, by name (:data:`INPUTS`): other stages' outputs.

    Raises: KeyError for an unknown stage.
    """
    _check(INPUTS, stage, "stage")
    return {name: outputs(src, results, model)[key] for name, (src, key) in INPUTS[stage].items()}


def targets(stage: str, results: PathLike = "results", model: str = "{model}") -> list[str]:
    """The outputs of ``stage`` that ``rule all`` asks for (:data:`TARGETS`). Raises: KeyError."""
    _check(TARGETS, stage, "stage with targets")
    out = outputs(stage, results, model)
    return [out[name] for name in TARGETS[stage]]


def log(stage: str, results: PathLike = "results", model: str = "{model}") -> str:
    """``results/logs/{model}/{rule}.log``: the log of ``stage``'s rule (:data:`RULES`). Raises: KeyError."""
    _check(RULES, stage, "stage")
    return _join(results, LOGS, model, f"{RULES[stage]}.log")


def zoo_outputs(rule: str, results: PathLike = "results", zoo_name: str = "zoo") -> dict[str, str]:
    """The files the zoo-level ``rule`` writes, by name (:data:`ZOO_OUTPUTS`). Raises: KeyError."""
    _check(ZOO_OUTPUTS, rule, "zoo rule")
    return {name: _join(results, zoo_name, rel) for name, rel in ZOO_OUTPUTS[rule].items()}


def zoo_log(rule: str, results: PathLike = "results", zoo_name: str = "zoo") -> str:
    """``results/logs/{zoo_name}/{rule}.log``. Raises: KeyError for an unknown zoo rule."""
    _check(ZOO_OUTPUTS, rule, "zoo rule")
    return _join(results, LOGS, zoo_name, f"{rule}.log")


def sweep_outputs(results: PathLike = "results", zoo_name: str = "zoo") -> dict[str, str]:
    """The files of the checkpoint-sweep rule, by name (:data:`SWEEP_OUTPUTS`)."""
    return {name: _join(results, zoo_name, rel) for name, rel in SWEEP_OUTPUTS.items()}


def sweep_log(results: PathLike = "results", zoo_name: str = "zoo") -> str:
    """``results/logs/{zoo_name}/over_training.log``: the checkpoint-sweep rule's log."""
    return _join(results, LOGS, zoo_name, f"{SWEEP_RULE}.log")


def config_file(results: PathLike = "results", model: str = "{model}") -> str:
    """``results/{model}/config.yaml``: the model's resolved config."""
    return _join(results, model, CONFIG)


def model_dir(manifest: PathLike) -> Path:
    """The model folder (``results/{model}/model``) a ``manifest.json`` path describes: the
    manifest is written last into that folder, so rules depend on it, and stages open the folder."""
    return Path(manifest).parent
