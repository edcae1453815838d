"""Thin wrapper: rule over_training -> successor_heads.zoo.over_training."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import setup_logging  # noqa: E402

from successor_heads.zoo import over_training  # noqa: E402

log = setup_logging(snakemake.log[0], snakemake.threads)  # noqa: F821
ins, out = snakemake.input, snakemake.output  # noqa: F821
df = over_training.run(snakemake.params.members, list(ins.summaries), list(ins.scores_h5), out.csv, out.fig)  # noqa: F821
log.info("over training:\n%s", df.to_string())
