"""Thin wrapper: rule editing -> successor_heads.editing.stage.run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_stage  # noqa: E402

from successor_heads.editing import stage as editing  # noqa: E402

run_stage(snakemake, editing.run)  # noqa: F821
