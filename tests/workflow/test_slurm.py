"""The tiny-model workflow through a real single-node SLURM cluster (tests/workflow/slurm/cluster.sh) and
snakemake-executor-plugin-slurm, with workflow/profiles/slurm; its outputs must equal a local
run's. Needs root (the cluster's daemons) and apt-get, or SLURM already installed; skipped with
the reason where it cannot start, except in CI (CI=true), where that is a failure.
SUCCESSOR_HEADS_TEST_STAGES (comma-separated, e.g. ``scores``) limits the stages, for debugging.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.support.workflow_project import REPO, make_project, snakemake, snakemake_command

from successor_heads.core.h5io import read_h5

pytestmark = [pytest.mark.slurm, pytest.mark.dag]

CLUSTER = REPO / "tests" / "workflow" / "slurm" / "cluster.sh"
STAGES = [f"stages=[{s}]"] if (s := os.environ.get("SUCCESSOR_HEADS_TEST_STAGES")) else []
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
TIMEOUT = 2400  # a loaded two-core machine
#: keys and columns that hold timings, which differ between any two runs
TIMING = re.compile(r"(^|_)(wall|elapsed|seconds|duration)(_|$)|_s$")
RTOL, ATOL = 1e-4, 1e-6  # float32 results computed with different thread counts


def cannot_run(reason: str):
    if IN_CI:
        pytest.fail(f"CI must run the SLURM test, but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node cluster (started here, and stopped at the end, unless it was
    already up). Yields the seconds its start took and whether it was up before."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        cannot_run("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    if os.geteuid() != 0:
        cannot_run("not root: tests/workflow/slurm/cluster.sh starts SLURM's daemons")
    was_up = subprocess.run([CLUSTER, "status"], capture_output=True).returncode == 0
    t0 = time.monotonic()
    proc = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=1800)
    started_s = time.monotonic() - t0
    if proc.returncode == 3:
        cannot_run(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, f"cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}"
    yield dict(start_s=started_s, was_up=was_up)
    if not was_up:
        subprocess.run([CLUSTER, "stop"], capture_output=True, timeout=120)


def slurm_logs(project: Path) -> str:
    return "\n".join(f"--- {f}\n{f.read_text()[-3000:]}" for f in sorted((project / ".snakemake").glob("slurm_logs/**/*.log")))


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory):
    """The same workflow run locally and through SLURM, in two projects; the local run goes on
    in the background while the SLURM run waits for its jobs."""
    local = make_project(tmp_path_factory.mktemp("local"))
    cluster = make_project(tmp_path_factory.mktemp("slurm"))
    cmd, env = snakemake_command(local, config=STAGES)
    t0 = time.monotonic()
    with open(local / "local_run.log", "w") as log:
        local_proc = subprocess.Popen(cmd, cwd=local, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        slurm = snakemake(
            cluster,
            "--profile", str(REPO / "workflow" / "profiles" / "slurm"),
            # no accounting on the test cluster, so no sacct; squeue is reliable with MinJobAge=600
            "--slurm-status-command", "squeue",
            "--slurm-init-seconds-before-status-checks", "1",
            "--slurm-keep-successful-logs",
            "--default-resources", "slurm_partition=debug", "mem_mb=1000", "runtime=10",
            "--jobs", "4", "--latency-wait", "10", "--retries", "0",
            config=STAGES, timeout=TIMEOUT, check=False,
        )
        slurm_s = time.monotonic() - t0
        assert slurm.returncode == 0, (f"SLURM run failed:\n{slurm.stdout[-3000:]}\n{slurm.stderr[-6000:]}\n"
                                       + slurm_logs(cluster))
        rc = local_proc.wait(TIMEOUT)
    finally:
        if local_proc.poll() is None:
            local_proc.kill()
    local_s = time.monotonic() - t0
    assert rc == 0, "local run failed:\n" + (local / "local_run.log").read_text()[-6000:]
    return dict(local=local, cluster=cluster, out=slurm.stdout + slurm.stderr, slurm_s=slurm_s, local_s=local_s,
                start_s=slurm_cluster["start_s"])


def test_jobs_ran_through_slurm(runs, capsys):
    out = runs["out"]
    remote = re.findall(r"^rule (\w+):", out, re.M)  # local rules are printed as "localrule"
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    assert remote and "successor_scores" in remote, out[-3000:]
    assert len(ids) == len(remote), (remote, ids)
    assert "fetch_model" not in remote  # a local rule: compute nodes may be offline
    for jobid in ids:
        info = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True).stdout
        assert "JobState=COMPLETED" in info, info
    with capsys.disabled():
        print(f"\nSLURM cluster start {runs['start_s']:.0f} s; SLURM run {runs['slurm_s']:.0f} s "
              f"({len(ids)} jobs: {', '.join(remote)}); local run, alongside, done after {runs['local_s']:.0f} s")


def normalise(value, roots):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        for r in roots:
            value = value.replace(str(r), "<project>")
    return value


def assert_close(a, b, what, roots):
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), what
        for k in a:
            if not TIMING.search(k):
                assert_close(a[k], b[k], f"{what}[{k}]", roots)
        return
    if isinstance(a, (list, tuple)) and not (a and isinstance(a[0], (int, float)) and not isinstance(a[0], bool)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{what}[{i}]", roots)
        return
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.dtype.kind in "fiub" and b_arr.dtype.kind in "fiub":
        assert a_arr.shape == b_arr.shape, what
        np.testing.assert_allclose(b_arr.astype(float), a_arr.astype(float), rtol=RTOL, atol=ATOL, equal_nan=True,
                                   err_msg=what)
    else:
        assert normalise(b, roots) == normalise(a, roots), what


def compare_file(fa: Path, fb: Path, roots):
    what = str(fa)
    if fa.suffix == ".h5":
        (da, aa), (db, ab) = read_h5(fa), read_h5(fb)
        assert_close(da, db, what, roots)
        assert_close({k: v.item() if hasattr(v, "item") else v for k, v in aa.items()},
                     {k: v.item() if hasattr(v, "item") else v for k, v in ab.items()}, what + " attrs", roots)
    elif fa.suffix == ".csv":
        a, b = pd.read_csv(fa), pd.read_csv(fb)
        assert list(a.columns) == list(b.columns) and a.shape == b.shape, what
        for col in a.columns:
            if TIMING.search(str(col)):
                continue
            if pd.api.types.is_numeric_dtype(a[col]) and pd.api.types.is_numeric_dtype(b[col]):
                assert_close(a[col].to_numpy(), b[col].to_numpy(), f"{what}:{col}", roots)
            else:
                assert [normalise(x, roots) for x in a[col].astype(str)] == \
                       [normalise(x, roots) for x in b[col].astype(str)], f"{what}:{col}"
    elif fa.suffix == ".json":
        assert_close(json.loads(fa.read_text()), json.loads(fb.read_text()), what, roots)
    else:  # figures and anything else: just there
        assert fb.stat().st_size > 0, fb


def outputs(project: Path) -> set[Path]:
    """Result files that a run computes (not logs, the copied model, or the resolved config)."""
    results = project / "results"
    return {
        f.relative_to(results) for f in results.rglob("*")
        if f.is_file() and not any(p.startswith(".") for p in f.relative_to(results).parts)
        and f.relative_to(results).parts[0] != "logs"
        and not {"model", "config"} & set(f.relative_to(results).parts[1:-1]) and f.name != "config.yaml"
    }


def test_outputs_equal_local_run(runs):
    local, cluster = runs["local"], runs["cluster"]
    files = outputs(local)
    assert files == outputs(cluster)
    assert any(f.suffix == ".h5" for f in files) and any(f.suffix == ".csv" for f in files)
    for rel in sorted(files):
        compare_file(local / "results" / rel, cluster / "results" / rel, (local, cluster))


def test_rerun_through_slurm_does_nothing(runs):
    proc = snakemake(runs["cluster"], "-n", "--profile", str(REPO / "workflow" / "profiles" / "slurm"),
                     "--slurm-status-command", "squeue", config=STAGES)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_cluster_stops(slurm_cluster, runs):
    """Last: the cluster shuts down by its pid files (the fixture's stop then has nothing left)."""
    if slurm_cluster["was_up"]:
        pytest.skip("the cluster was running before these tests; leaving it up")
    pid_dir = Path(os.environ.get("SLURM_TEST_DIR", "/var/lib/successor-heads-slurm"))
    pids = [int((pid_dir / f).read_text()) for f in ("slurmctld.pid", "slurmd.pid")]
    subprocess.run([CLUSTER, "stop"], check=True, capture_output=True, timeout=120)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"daemon {pid} still running"
    assert subprocess.run([CLUSTER, "status"], capture_output=True, timeout=60).returncode != 0
