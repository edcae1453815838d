"""Thin wrapper: rule zoo_table -> successor_heads.zoo.table."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import setup_logging  # noqa: E402

from successor_heads.zoo import table  # noqa: E402

setup_logging(snakemake.log[0], snakemake.threads)  # noqa: F821
ins, out = snakemake.input, snakemake.output  # noqa: F821
table.run(ins.summaries, out.csv, out.fig, ins.scores, out.per_task, scores_h5=ins.scores_h5,
          threshold=snakemake.params.scores["threshold"])  # noqa: F821
