"""Thin wrapper: rule cycles -> successor_heads.cycles.stage.run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_stage  # noqa: E402

from successor_heads.cycles import stage as cycles  # noqa: E402

run_stage(snakemake, cycles.run, progress=False)  # noqa: F821
