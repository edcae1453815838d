"""Thin wrapper: rule features -> successor_heads.features.stage.run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_stage  # noqa: E402

from successor_heads.features import stage as features  # noqa: E402

run_stage(snakemake, features.run, progress=False)  # noqa: F821
