# Resolve each model's Hydra config once, at parse time, into results/{model}/config*.yaml.
# Files are rewritten only when their content changes, so a config change reruns exactly the
# stages whose config section changed.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from omegaconf import OmegaConf
from snakemake.logging import logger
from successor_heads.core.config import compose, resolve_for_workflow
from successor_heads.core.h5io import set_aside_incomplete

# config_dir: relative to the working directory if it exists there, else to the Snakefile.
CONFIG_DIR = Path(config["config_dir"])
if not CONFIG_DIR.is_absolute() and not CONFIG_DIR.is_dir():
    CONFIG_DIR = Path(workflow.basedir) / CONFIG_DIR
_root = compose(None, config["overrides"], CONFIG_DIR)
RESULTS = _root.results_dir
ZOO = list(config["zoo"]) or list(_root.zoo)
MODEL_CFG = resolve_for_workflow(ZOO, config["overrides"], RESULTS, CONFIG_DIR)
STAGES = list(config.get("stages", ["scores"]))
# stages whose summaries the paper table reads: the zoo table makes the scores run in every case
PAPER_STAGES = ["scores"] + [s for s in STAGES if s in ("features", "editing", "wild")]
ZOO_NAME = config.get("zoo_name", "zoo")
ZOO_DIR = f"{RESULTS}/{ZOO_NAME}"

# Snakemake trusts any output that exists and is newer than its inputs; an HDF5 output damaged
# after it was written (truncated copy, full disk) would be kept and break its consumers. Every
# HDF5 output carries a completion marker (successor_heads.core.h5io), so this run's models' files
# that are unreadable or unmarked are renamed to .<name>.damaged, and every file with such a twin
# that is still missing (also when a dry run set it aside) is requested by `rule all` (Snakemake
# reruns a job only for outputs that something requests): it is regenerated with everything
# downstream. Only the main process checks (not jobs re-parsing the Snakefile on a node).
REGENERATE = []
if workflow.is_main_process:
    for _m in ZOO:
        _moved, _missing = set_aside_incomplete(Path(RESULTS) / _m)
        for _bad in _moved:
            logger.warning(f"{_bad} is truncated or lacks its HDF5 completion marker; moved to "
                           f".{_bad.name}.damaged, it is regenerated if a rule writes it")
        REGENERATE += [str(p) for p in _missing]


wildcard_constraints:
    model="|".join(ZOO) if ZOO else "NO_MODEL",


def model_cfg(wildcards):
    return MODEL_CFG[wildcards.model]


def res(key):
    """Snakemake resource taken from the model's config (config/model/<name>.yaml: resources).

    Also used as `threads: res("cpus")`: a rule's cores are the model's cpus (Snakemake caps
    them at --cores; on SLURM they become --cpus-per-task), and every job script sets torch's
    thread count to snakemake.threads (workflow/scripts/_common.py), so torch neither
    oversubscribes a shared node nor leaves requested cores idle.
    """

    def get(wildcards, attempt=1):
        value = MODEL_CFG[wildcards.model].model.resources[key]
        if key in ("mem_mb", "runtime"):
            return int(value) * attempt
        return value

    return get


def stage_config(stage):
    return f"{RESULTS}/{{model}}/config/{stage}.yaml"


# Every rule runs in the project's one environment (snakemake --use-conda builds it).
CONDA_ENV = "../../environment.yml"

MANIFEST = f"{RESULTS}/{{model}}/model/manifest.json"

# Per-stage final outputs that `rule all` asks for; each stage's .smk registers its own.
STAGE_TARGETS = {}
ZOO_TARGETS = []


def all_outputs(wildcards):
    out = []
    for stage in STAGES:
        for pattern in STAGE_TARGETS.get(stage, []):
            out += expand(pattern, model=ZOO)
    regenerate = [f for f in REGENERATE if any(r.is_producer(f) for r in workflow.rules)]
    return out + ZOO_TARGETS + regenerate


# every stage summary of the zoo that rule paper_table reads
def paper_table_inputs(wildcards):
    from successor_heads.zoo.paper_comparison import STAGE_FILES

    return [f"{RESULTS}/{model}/{STAGE_FILES[s]}" for s in PAPER_STAGES for model in ZOO]
