"""Thin wrapper: rule cycles -> successor_heads.cycles.stage.run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import job_config, named, setup_logging  # noqa: E402

from successor_heads.cycles import stage as cycles  # noqa: E402

log = setup_logging(snakemake.log[0], snakemake.threads)  # noqa: F821
cfg = job_config(snakemake.params)  # noqa: F821
summary = cycles.run(cfg, named(snakemake.input), named(snakemake.output), progress=False,  # noqa: F821
                     mem_mb=snakemake.resources.mem_mb)  # noqa: F821
log.info("summary: %s", summary)
