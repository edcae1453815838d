# Compose each model's config once, at parse time, in memory (a bad key or value fails before any
# job starts; nothing is written). Each job gets the keys it reads as Snakemake `params`
# (successor_heads.config.PARAMS): Snakemake reruns a job whose params changed, so a config
# change reruns exactly the jobs that read a changed key (and those downstream of their outputs).
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from snakemake.logging import logger
from successor_heads import config as run_config
from successor_heads.core import layout
from successor_heads.core.h5io import set_aside_incomplete
from successor_heads.core.memory import job_mem_mb

# config_dir: relative to the working directory if it exists there, else to the Snakefile.
CONFIG_DIR = Path(config["config_dir"])
if not CONFIG_DIR.is_absolute() and not CONFIG_DIR.is_dir():
    CONFIG_DIR = Path(workflow.basedir) / CONFIG_DIR
_root = run_config.compose(None, config["overrides"], CONFIG_DIR)
RESULTS = _root.results_dir
# A zoo entry is a model file's name, a hub id org/name[@revision], a transformers folder, a .gguf
# file or a folder of checkpoints (a sweep); each model's results/<slug>/ is named by its slug
# (docs/DESIGN.md, "Model specs"). A bad entry or unsupported model_type fails here, at parse.
# The zoo's tables go to results/<zoo_name>/: `zoo` for config.yaml's zoo, else named after the
# members (successor_heads.config.zoo_name), so another zoo never overwrites them.
_ZOO = run_config.resolve_zoo(list(config["zoo"]) or list(_root.zoo), config["overrides"], CONFIG_DIR,
                              explicit_name=config.get("zoo_name"), root=_root)
MODEL_CFG = _ZOO.models
ZOO = list(MODEL_CFG)
ZOO_NAME = _ZOO.name
# checkpoint sweeps: {sweep: [{model, revision, step}, ...]}, flattened for the over_training rule
SWEEP_MEMBERS = [dict(m, sweep=s) for s, ms in _ZOO.sweeps.items() for m in ms]
STAGES = list(config.get("stages", ["scores"]))
# stages whose summaries the paper table reads: the zoo table makes the scores run in every case
PAPER_STAGES = ["scores"] + [s for s in STAGES if s in ("features", "editing", "wild")]

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
    model="|".join(map(re.escape, ZOO)) if ZOO else "NO_MODEL",


def model_cfg(wildcards):
    return MODEL_CFG[wildcards.model]


def res(key, streams=False):
    """Snakemake resource taken from the model's config (config/model/<name>.yaml: resources).

    ``streams``: the rule's job opens the model, which honours ``model.memory``; for a model it
    streams (``streamed``, or ``auto`` with weights over the share of this machine's memory) its
    ``mem_mb`` is what streaming needs (successor_heads.core.memory.job_mem_mb), not the weights' size.

    Also used as `threads: res("cpus")`: a rule's cores are the model's cpus (Snakemake caps
    them at --cores; on SLURM they become --cpus-per-task), and every job script sets torch's
    thread count to snakemake.threads (workflow/scripts/_common.py), so torch neither
    oversubscribes a shared node nor leaves requested cores idle.
    """

    def get(wildcards, attempt=1):
        m = MODEL_CFG[wildcards.model].model
        value = getattr(m.resources, key)
        if key == "mem_mb" and streams:
            value = job_mem_mb(m.memory, m.n_params, m.dtype, value)
        if key in ("mem_mb", "runtime"):
            return int(value) * attempt
        return value

    return get


def job_params(rule_name):
    """The `params` of `rule_name` (a rule): per config section, the keys its job reads
    (successor_heads.config.job_params), from the model's config (zoo-level rules: the zoo's)."""
    sections = dict.fromkeys(k.split(".")[0] for k in run_config.PARAMS[rule_name])
    if rule_name in layout.ZOO_OUTPUTS:
        return {s: run_config.job_params(_root, rule_name)[s] for s in sections}
    return {s: (lambda wildcards, s=s: run_config.job_params(MODEL_CFG[wildcards.model], rule_name)[s]) for s in sections}


# Every rule runs in the project's one environment (snakemake --use-conda builds it).
CONDA_ENV = "../../environment.yml"

# Every path below comes from successor_heads.core.layout: a rule's input/output names are the
# layout's names, which its script passes unchanged to the stage's run(cfg, inputs, outputs).


def reported(outputs, category, captions, subcategory="{model}"):
    """A rule's outputs (name -> path, from the layout) with the files named in `captions`
    (name -> caption file in workflow/report/) flagged for `snakemake --report`."""
    out = dict(outputs)
    for name, caption in captions.items():
        out[name] = report(out[name], caption=f"../report/{caption}", category=category,
                           subcategory=subcategory)
    return out


# The default target's files: each chosen stage's targets per model, then the zoo-level files.
# The over-training table and figure only when the zoo has a checkpoint sweep.
_ZOO_RULES = {"cycles_table": "cycles" in STAGES, "over_training": bool(SWEEP_MEMBERS)}
ZOO_TARGETS = [p for r in layout.ZOO_OUTPUTS if _ZOO_RULES.get(r, True)
               for p in layout.zoo_outputs(r, RESULTS, ZOO_NAME).values()]


def all_outputs(wildcards):
    out = []
    for stage in STAGES:
        if stage in layout.TARGETS:
            out += expand(layout.targets(stage, RESULTS), model=ZOO)
    regenerate = [f for f in REGENERATE if any(r.is_producer(f) for r in workflow.rules)]
    return out + ZOO_TARGETS + regenerate


# The paper table's inputs: per stage it reads, that stage's summary of every model (zoo order).
PAPER_INPUTS = {s: expand(layout.outputs(s, RESULTS)["summary"], model=ZOO) for s in PAPER_STAGES}
