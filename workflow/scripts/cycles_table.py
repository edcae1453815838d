"""Thin wrapper: rule cycles_table -> successor_heads.zoo.cycles_table.run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import setup_logging  # noqa: E402

from successor_heads.zoo import cycles_table  # noqa: E402

setup_logging(snakemake.log[0], snakemake.threads)  # noqa: F821
cycles_table.run(snakemake.input.summaries, snakemake.output.csv)  # noqa: F821
