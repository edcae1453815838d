"""Thin wrapper: rule editing -> successor_heads.editing.stage.run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import setup_logging

from successor_heads.core.config import load_resolved
from successor_heads.editing import stage as editing

log = setup_logging(snakemake.log[0], snakemake.threads)  # noqa: F821
cfg = load_resolved(snakemake.input.config)  # noqa: F821
out_dir = Path(snakemake.input.scores).parent  # noqa: F821  results/{model}
summary = editing.run(cfg, Path(snakemake.input.manifest).parent, out_dir)  # noqa: F821
log.info("summary: %s", summary)
