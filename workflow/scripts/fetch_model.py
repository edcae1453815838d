"""Thin wrapper: rule fetch_model -> successor_heads.models.fetch_model.

Fetches one model into the folder that holds ``snakemake.output.manifest``
(``results/{model}/model/``, :func:`successor_heads.core.layout.model_dir`); logging goes to
``snakemake.log[0]``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import job_config, setup_logging  # noqa: E402

from successor_heads.core.layout import model_dir  # noqa: E402
from successor_heads.models.fetch import fetch_model  # noqa: E402

log = setup_logging(snakemake.log[0], snakemake.threads)  # noqa: F821
manifest = Path(snakemake.output.manifest)  # noqa: F821
try:
    cfg = job_config(snakemake.params)  # noqa: F821
    fetch_model(model_dir(manifest), **cfg.model.fetch_args())
    if not manifest.is_file():
        raise RuntimeError(f"fetch_model finished but {manifest} is missing")
except Exception:
    log.exception("fetch_model failed")
    raise
