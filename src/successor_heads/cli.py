"""Command line: run one stage on one model outside Snakemake, with Hydra overrides.

    successor-heads fetch  model=smollm2-135m
    successor-heads scores model=gemma3-270m scores.norms=applied
    successor-heads features|editing|wild|cycles model=...
    successor-heads scores model=EleutherAI/pythia-70m@step1000    # a hub id, optional @revision
    successor-heads scores model=./my-model                        # a transformers folder
    successor-heads scores model=./my-model.Q4_K_M.gguf            # a GGUF file

A model without a file in ``config/model/`` gets its config derived from its weights (family,
dtype, resources) and its outputs under ``results/<slug>/`` (``<org>--<name>[@<revision>]``,
``local-<folder or file stem>``); see docs/DESIGN.md, "Model specs".

Outputs go where the workflow puts them (:mod:`successor_heads.core.layout`: ``results/{model}/``),
so a later ``snakemake`` run reuses what is already there only if its config matches. Each stage
reads and writes the same named files as its Snakemake rule; ``features`` also (re)builds the
activation cache when it is missing or was built with another config.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

#: command -> stage (the layout's name and the package holding its ``stage.run``)
STAGES = {"fetch": "models", "scores": "scores", "features": "features", "editing": "editing", "wild": "wild",
          "cycles": "cycles"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="successor-heads", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=sorted(STAGES))
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=gemma3-270m scores.norms=applied; "
                   "model= also takes a hub id org/name[@revision], a folder or a .gguf file")
    p.add_argument("--config-dir", default=None, help="Hydra config folder (default: ./config)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from omegaconf import OmegaConf

    from successor_heads.config import ConfigError, as_dict, compose
    from successor_heads.core import layout
    from successor_heads.core.writers import write_text

    try:
        cfg = compose(None, args.overrides, args.config_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results, name, stage_name = cfg.results_dir, cfg.model.name, STAGES[args.stage]
    write_text(OmegaConf.to_yaml(as_dict(cfg)), layout.config_file(results, name))  # the run's record
    manifest = layout.outputs("models", results, name)["manifest"]
    from successor_heads.models.fetch import ModelFetchError, fetch_model

    try:
        if stage_name == "models" or not Path(manifest).is_file():
            fetch_model(layout.model_dir(manifest), **cfg.model.fetch_args())
        if stage_name != "models":
            stage = importlib.import_module(f"successor_heads.{stage_name}.stage")
            extra = {"rebuild_cache": True} if stage_name == "features" else {}
            result = stage.run(cfg, layout.inputs(stage_name, results, name), layout.outputs(stage_name, results, name),
                               **extra)
            if isinstance(result, dict):
                for k, v in result.items():
                    print(f"{k}: {v}")
    except (ModelFetchError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
