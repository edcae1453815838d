"""What ``snakemake -n`` plans after a finished run when one config key changes: exactly the jobs
whose params hold the key (successor_heads.config.PARAMS) and the jobs downstream of their
outputs; that a dry run writes nothing; and the threads each job gets from ``resources.cpus``.

One DAG run on the tiny workflow project; every dry run starts from a copy of it.
"""

import re
import shutil

import pytest

from tests.support.workflow_project import TINY_OVERRIDES, make_project, snakemake

pytestmark = pytest.mark.dag

#: model.resources.cpus of the finished run (the tiny model file says 1)
CPUS = 2
MODEL = "tiny-llama"

#: key changed -> the jobs planned (each once, for the one model); `all` is the default target
PLANS = {
    # in the zoo table's params only (successor_heads.config.PARAMS["zoo_table"]): the scores
    # job counts heads above the paper's fixed 0.5
    "scores.threshold=0.4": {"zoo_table", "all"},
    # read by the wild job only; the paper table reads its summary
    "wild.batch_size=8": {"wild", "paper_table", "all"},
    # read by the features job only (not by cache_activations); editing reads its directions
    "features.d_sae=32": {"features", "editing", "paper_table", "all"},
    # read by the cycles job only; the zoo's cycles table reads its summary
    "cycles.n_permutations=200": {"cycles", "cycles_table", "all"},
    # scheduling only: in no job's params
    "model.resources.cpus=1": set(),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = make_project(tmp_path_factory.mktemp("plan"))
    proc = snakemake(tmp, overrides=[*TINY_OVERRIDES, f"model.resources.cpus={CPUS}"])
    (tmp / "snakemake.out").write_text(proc.stdout + proc.stderr)
    return tmp


def job_stats(out: str) -> dict[str, int]:
    """The ``Job stats`` table of a dry run: job name -> count (empty: nothing to be done)."""
    if "Nothing to be done" in out:
        return {}
    block = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


@pytest.mark.parametrize("override", list(PLANS))
def test_a_changed_key_plans_exactly_the_jobs_that_read_it(finished, tmp_path, override):
    project = tmp_path / "project"
    shutil.copytree(finished, project, symlinks=True)  # copy2: modification times kept
    proc = snakemake(project, "-n", overrides=[*TINY_OVERRIDES, f"model.resources.cpus={CPUS}", override])
    assert job_stats(proc.stdout + proc.stderr) == {job: 1 for job in PLANS[override]}


def test_a_dry_run_with_an_override_writes_nothing(finished, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(finished, project, symlinks=True)
    before = {p: p.stat().st_mtime_ns for p in (project / "results").rglob("*")}
    snakemake(project, "-n", overrides=[*TINY_OVERRIDES, f"model.resources.cpus={CPUS}", "wild.batch_size=8"])
    assert {p: p.stat().st_mtime_ns for p in (project / "results").rglob("*")} == before


@pytest.mark.parametrize("zoo_name", [None, "null"])
def test_a_zoo_given_on_the_command_line_plans_its_own_tables(finished, tmp_path, zoo_name):
    """Without zoo_name (or ``--config zoo_name=null``, which Snakemake passes as the string
    "null"), a zoo other than config.yaml's writes results/zoo-<members>/, never the finished
    run's results/zoo/."""
    project = tmp_path / "project"
    shutil.copytree(finished, project, symlinks=True)
    proc = snakemake(project, "-n", overrides=[*TINY_OVERRIDES, f"model.resources.cpus={CPUS}"], zoo_name=zoo_name)
    out = proc.stdout + proc.stderr
    assert "results/zoo-tiny-llama/successor_heads.csv" in out and "results/zoo/" not in out
    # only the zoo-level tables are new: the zoo table, the cycles table (cycles is in the
    # workflow's stages) and the paper table
    assert job_stats(out) == {"zoo_table": 1, "cycles_table": 1, "paper_table": 1, "all": 1}


def test_rule_threads_and_torch_threads_follow_resources_cpus(finished):
    """``threads: res("cpus")``: each model job ran with the model's ``resources.cpus``, and its
    script set torch's thread count to ``snakemake.threads``."""
    logs = finished / "results" / "logs" / MODEL
    for rule in ("successor_scores", "cache_activations", "features", "editing", "wild"):
        assert f"torch threads: {CPUS} (snakemake.threads)" in (logs / f"{rule}.log").read_text(), rule


def test_the_local_profile_is_read_without_a_flag(finished):
    """The README's main command reads workflow/profiles/default (rerun-incomplete, logs) by
    itself: Snakemake looks for profiles/default beside the Snakefile, a link to it."""
    out = (finished / "snakemake.out").read_text()
    assert re.search(r"Using workflow specific profile \S*profiles/default", out)
