"""Thin wrapper: rule paper_table -> successor_heads.zoo.paper_comparison."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import setup_logging  # noqa: E402

from successor_heads import paper_comparison  # noqa: E402

log = setup_logging(snakemake.log[0], snakemake.threads)  # noqa: F821
p = snakemake.params  # noqa: F821
results = Path(snakemake.output.csv).parent.parent  # noqa: F821  (results/{zoo_name}/..)
df = paper_comparison.run(results, p.models, p.stages, snakemake.output.csv, snakemake.output.html)  # noqa: F821
log.info("paper beside ours:\n%s", df.to_string(index=False))
