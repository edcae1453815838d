# Resolve each model's Hydra config once, at parse time, into results/{model}/config*.yaml.
# Files are rewritten only when their content changes, so a config change reruns exactly the
# stages whose config section changed.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from omegaconf import OmegaConf
from successor_heads.config import compose, resolve_for_workflow

# config_dir: relative to the working directory if it exists there, else to the Snakefile.
CONFIG_DIR = Path(config["config_dir"])
if not CONFIG_DIR.is_absolute() and not CONFIG_DIR.is_dir():
    CONFIG_DIR = Path(workflow.basedir) / CONFIG_DIR
_root = compose(None, config["overrides"], CONFIG_DIR)
RESULTS = _root.results_dir
ZOO = list(config["zoo"]) or list(_root.zoo)
MODEL_CFG = resolve_for_workflow(ZOO, config["overrides"], RESULTS, CONFIG_DIR)
STAGES = list(config.get("stages", ["scores"]))


wildcard_constraints:
    model="|".join(ZOO) if ZOO else "NO_MODEL",


def model_cfg(wildcards):
    return MODEL_CFG[wildcards.model]


def res(key):
    """Snakemake resource taken from the model's config (config/model/<name>.yaml: resources)."""

    def get(wildcards, attempt=1):
        value = MODEL_CFG[wildcards.model].model.resources[key]
        if key in ("mem_mb", "runtime"):
            return int(value) * attempt
        return value

    return get


def stage_config(stage):
    return f"{RESULTS}/{{model}}/config/{stage}.yaml"


MANIFEST = f"{RESULTS}/{{model}}/model/manifest.json"

# Per-stage final outputs that `rule all` asks for; each stage's .smk registers its own.
STAGE_TARGETS = {}
ZOO_TARGETS = []


def all_outputs(wildcards):
    out = []
    for stage in STAGES:
        for pattern in STAGE_TARGETS.get(stage, []):
            out += expand(pattern, model=ZOO)
    return out + ZOO_TARGETS
