"""Thin wrapper: rule paper_table -> successor_heads.zoo.paper_comparison (its inputs, per stage
the summary of each model, are passed through unchanged)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import setup_logging  # noqa: E402

from successor_heads.zoo import paper_comparison  # noqa: E402

log = setup_logging(snakemake.log[0], snakemake.threads)  # noqa: F821
summaries = {stage: list(paths) for stage, paths in snakemake.input.items()}  # noqa: F821
out = snakemake.output  # noqa: F821
df = paper_comparison.run(summaries, snakemake.params.models, out.csv, out.html)  # noqa: F821
log.info("paper beside ours:\n%s", df.to_string(index=False))
