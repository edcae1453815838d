"""Thin wrapper: rule wild -> successor_heads.wild.stage.run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_stage  # noqa: E402

from successor_heads.wild import stage as wild  # noqa: E402

run_stage(snakemake, wild.run)  # noqa: F821
