"""Shared by the workflow scripts: send logging, warnings and any traceback to the rule's log,
size torch's thread pool to the cores the rule was given, and hand a rule's declared files to a
stage unchanged."""

import logging
import os
import sys
import warnings


def set_threads(threads):
    """Use ``threads`` cores for torch (intra-op pool) and for BLAS/OpenMP libraries loaded later.

    ``threads`` is ``snakemake.threads``: the rule's ``threads: res("cpus")`` (the model's
    ``resources.cpus``), capped by Snakemake at ``--cores``; on SLURM it is the job's
    ``--cpus-per-task``. torch's default (every core of the node) oversubscribes a node shared
    with other jobs. Returns the count set (at least 1).
    """
    n = max(1, int(threads or 1))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)  # for libraries that read it on import (numpy's BLAS, ...)
    import torch

    torch.set_num_threads(n)
    return n


def named(files) -> dict[str, str]:
    """A rule's ``snakemake.input`` or ``snakemake.output`` as ``{name: path}``: the names are those
    of successor_heads.core.layout, which the stage's ``run(cfg, inputs, outputs)`` reads."""
    return {name: str(path) for name, path in files.items()}


def job_config(params):
    """The job's typed config (:class:`successor_heads.config.RootConfig`) from its Snakemake
    ``params``: the keys it reads (:data:`successor_heads.config.PARAMS`), logged as the record of
    what the job ran with."""
    from successor_heads.config import build

    given = dict(params.items())
    logging.getLogger("successor_heads").info("config (this job's params): %s", given)
    return build(given)


def setup_logging(log_path, threads=None):
    """Log to ``log_path`` (and stderr); with ``threads`` (``snakemake.threads``) also call
    :func:`set_threads`. Returns the ``successor_heads`` logger."""
    handler = logging.FileHandler(log_path, mode="w")
    logging.basicConfig(level=logging.INFO, handlers=[handler, logging.StreamHandler(sys.stderr)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    log = logging.getLogger("successor_heads")

    def excepthook(etype, value, tb):
        log.error("stage failed", exc_info=(etype, value, tb))

    sys.excepthook = excepthook
    if threads is not None:
        log.info("torch threads: %d (snakemake.threads)", set_threads(threads))
    return log


def run_stage(smk, run, **kwargs):
    """Run a stage's ``run(cfg, inputs, outputs, mem_mb=..., **kwargs)`` for the job ``smk`` (the
    ``snakemake`` object): log to the rule's log with the rule's threads, build the job's config
    from its params, pass the job's ``mem_mb`` (a stage streams the model when it exceeds it), and
    log what ``run`` returns. Returns it."""
    log = setup_logging(smk.log[0], smk.threads)
    cfg = job_config(smk.params)
    result = run(cfg, named(smk.input), named(smk.output), mem_mb=smk.resources.mem_mb, **kwargs)
    log.info("summary: %s", result)
    return result
