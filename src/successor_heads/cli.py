"""Command line: run one stage on one model outside Snakemake, with Hydra overrides.

    successor-heads fetch  model=smollm2-135m
    successor-heads scores model=gemma3-270m scores.norms=applied
    successor-heads features|editing|wild model=...

Outputs go where the workflow puts them (``results/{model}/``), so a later ``snakemake``
run reuses what is already there only if its config matches.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

STAGES = {"fetch": None, "scores": "scores", "features": "features", "editing": "editing", "wild": "wild"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="successor-heads", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=sorted(STAGES))
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=gemma3-270m scores.norms=applied")
    p.add_argument("--config-dir", default=None, help="Hydra config folder (default: ./config)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from successor_heads.core.config import ConfigError, compose, write_if_changed

    try:
        cfg = compose(None, args.overrides, args.config_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = Path(cfg.results_dir) / cfg.model.name
    write_if_changed(cfg, out_dir / "config.yaml")
    model_dir = out_dir / "model"
    from successor_heads.models.fetch import ModelFetchError, fetch_model

    try:
        if args.stage == "fetch" or not (model_dir / "manifest.json").is_file():
            fetch_model(cfg, model_dir)
        if args.stage != "fetch":
            stage = importlib.import_module(f"successor_heads.{STAGES[args.stage]}.stage")
            result = stage.run(cfg, model_dir, out_dir)
            if isinstance(result, dict):
                for k, v in result.items():
                    print(f"{k}: {v}")
    except (ModelFetchError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
