"""A throwaway project folder for running the real Snakefile on a tiny local model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.tiny import save_tiny_model

REPO = Path(__file__).resolve().parents[2]

#: Keep every stage tiny: the DAG test checks wiring, not science.
TINY_OVERRIDES = [
    "corpus.n_contexts=2",
    "corpus.context_len=32",
    "features.n_saes=2",
    "features.steps=30",
    "features.d_sae=16",
]


def make_project(tmp: Path, family: str = "llama", name: str = "tiny-llama") -> Path:
    """``tmp`` gets ``config/`` (the repo's, plus ``model/<name>.yaml`` pointing at a tiny
    random-weight model saved under ``tmp/weights``). Returns ``tmp``."""
    shutil.copytree(REPO / "config", tmp / "config")
    weights = save_tiny_model(family, tmp / "weights" / name)
    (tmp / "config" / "model" / f"{name}.yaml").write_text(
        f"name: {name}\nfamily: {family}\nn_params: 0\ndtype: float32\n"
        f"source:\n  kind: local\n  path: {weights}\n"
        "resources:\n  mem_mb: 2000\n  runtime: 10\n  cpus: 1\n  gpu: 0\n"
    )
    return tmp


def snakemake_command(tmp: Path, *args: str, models=("tiny-llama",), overrides=TINY_OVERRIDES, config=(),
                      env=None, zoo_name: str | None = "zoo") -> tuple[list[str], dict[str, str]]:
    """The command line and environment :func:`snakemake` runs (for tests that need a
    ``subprocess.Popen``). ``config``: extra ``--config`` items (e.g. ``"stages=[scores]"``);
    ``env``: extra environment variables for snakemake and its jobs; ``zoo_name``: the zoo's
    folder under ``results/`` (None: the workflow names it after the zoo's members)."""
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp),
        "--cores", "2", "--config", f"zoo=[{','.join(models)}]", f"config_dir={tmp / 'config'}",
        f"overrides=[{','.join(overrides)}]", *([f"zoo_name={zoo_name}"] if zoo_name else []), *config, *args,
    ]
    return cmd, dict(os.environ, PYTHONPATH=str(REPO / "src"), **(env or {}))


def snakemake(tmp: Path, *args: str, models=("tiny-llama",), overrides=TINY_OVERRIDES, timeout=900,
              check=True, config=(), env=None, zoo_name: str | None = "zoo") -> subprocess.CompletedProcess:
    """Run the repo's Snakefile in ``tmp`` (results land in ``tmp/results``); see
    :func:`snakemake_command` for ``config`` and ``env``."""
    cmd, env = snakemake_command(tmp, *args, models=models, overrides=overrides, config=config, env=env,
                                 zoo_name=zoo_name)
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc
