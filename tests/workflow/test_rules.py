"""The rules' declarations and the job scripts, checked without running the workflow: every
per-model job uses the cores it is given."""

import re
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "workflow" / "scripts"


class _Stop(Exception):
    """Raised by the stand-in setup_logging, so a job script stops before its stage runs."""


def _fake_job(tmp, threads=3):
    """A stand-in for the ``snakemake`` object a job script gets: named files, params, threads."""
    files = SimpleNamespace(items=lambda: [("summary", str(tmp / "summary.json"))], manifest=str(tmp / "m.json"))
    return SimpleNamespace(scriptdir=str(SCRIPTS), log=[str(tmp / "job.log")], threads=threads, input=files,
                           output=files, params=SimpleNamespace(items=lambda: [("seed", 1)]),
                           resources=SimpleNamespace(mem_mb=123))


def test_rules_take_their_threads_from_the_model():
    """Every per-model rule takes its threads from the model's resources.cpus."""
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for rule in re.split(r"\n(?=rule )", smk.read_text())[1:]:
            name = rule.split(":")[0].split()[1]
            if 'res("mem_mb")' in rule:  # a per-model rule (zoo-level ones are local, without resources)
                assert 'threads: res("cpus")' in rule, f"{smk.name}: rule {name}"
            assert "threads: 2" not in rule, f"{smk.name}: rule {name} hard-codes its threads"


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py") if p.name != "_common.py"))
def test_every_job_script_first_sets_up_logging_with_snakemake_threads(script, tmp_path, monkeypatch):
    """Each job script, run with a stand-in ``snakemake`` object, calls setup_logging (itself or
    through _common.run_stage) with the rule's log and ``snakemake.threads`` before anything else."""
    monkeypatch.setattr(sys, "path", [str(SCRIPTS), *sys.path])
    monkeypatch.delitem(sys.modules, "_common", raising=False)
    import _common

    calls = []

    def record(log_path, threads=None):
        calls.append((log_path, threads))
        raise _Stop

    monkeypatch.setattr(_common, "setup_logging", record)
    job = _fake_job(tmp_path, threads=3)
    with pytest.raises(_Stop):
        runpy.run_path(str(SCRIPTS / script), init_globals={"snakemake": job})
    assert calls == [(job.log[0], 3)]


def test_run_stage_sets_torch_threads_and_logs_the_summary(tmp_path):
    """_common.run_stage gives setup_logging ``snakemake.threads`` (torch's thread count and the
    OpenMP variable follow), hands the stage its typed config, named files and ``mem_mb``, and
    logs what the stage returns."""
    code = ("import os, sys, torch; from types import SimpleNamespace; sys.path[:0] = sys.argv[1:3]; "
            "from test_rules import _fake_job; from _common import run_stage; from pathlib import Path; "
            "job = _fake_job(Path(sys.argv[3]), threads=3); "
            "got = run_stage(job, lambda cfg, ins, outs, mem_mb, tag: dict(threads=torch.get_num_threads(), "
            "seed=cfg.seed, ins=ins, mem_mb=mem_mb, tag=tag), tag='t'); "
            "assert got == dict(threads=3, seed=1, ins={'summary': str(Path(sys.argv[3]) / 'summary.json')}, "
            "mem_mb=123, tag='t'), got; assert os.environ['OMP_NUM_THREADS'] == '3'")
    subprocess.run([sys.executable, "-c", code, str(SCRIPTS), str(Path(__file__).parent), str(tmp_path)], check=True)
    log = (tmp_path / "job.log").read_text()
    assert "torch threads: 3" in log and "summary: {'threads': 3, 'seed': 1" in log


def test_setup_logging_sets_torch_threads():
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); from _common import setup_logging; "
            "setup_logging(sys.argv[2], 3); assert torch.get_num_threads() == 3, torch.get_num_threads(); "
            "import os; assert os.environ['OMP_NUM_THREADS'] == '3'")
    with __import__("tempfile").TemporaryDirectory() as tmp:
        log = Path(tmp) / "job.log"
        subprocess.run([sys.executable, "-c", code, str(SCRIPTS), str(log)], check=True)
        assert "torch threads: 3" in log.read_text()
