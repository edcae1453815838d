"""Thin wrapper: rule zoo_table -> successor_heads.zoo.table."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import setup_logging  # noqa: E402

from successor_heads import zoo  # noqa: E402

setup_logging(snakemake.log[0], snakemake.threads)  # noqa: F821
zoo.run(snakemake.input.summaries, snakemake.output.csv, snakemake.output.fig,  # noqa: F821
        snakemake.input.scores, snakemake.output.per_task)  # noqa: F821
