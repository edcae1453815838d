"""Thin wrapper: rule successor_scores -> successor_heads.scores.stage.run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_stage  # noqa: E402

from successor_heads.scores import stage as scores  # noqa: E402

run_stage(snakemake, scores.run)  # noqa: F821
