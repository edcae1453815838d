"""Faults on the tiny-model workflow: jobs killed while writing HDF5, a damaged cached file,
and reruns of a finished workflow.

The tests share one project and run in file order; each leaves the workflow complete.
SUCCESSOR_HEADS_TEST_STAGES (comma-separated, e.g. ``scores``) limits the stages, for debugging.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.support.workflow_project import make_project, snakemake, snakemake_command

from successor_heads.core.h5io import (
    SLOW_WRITE_ENV,
    IncompleteOutputError,
    check_h5,
    read_h5,
    set_aside_incomplete,
)

pytestmark = pytest.mark.dag

STAGES = [f"stages=[{s}]"] if (s := os.environ.get("SUCCESSOR_HEADS_TEST_STAGES")) else []
TIMEOUT = 1800  # a loaded two-core machine
SCORES_TMP = ".successor_scores.tmp-*.h5"  # successor_heads.core.atomic's temporary of successor_scores.h5


def run(project, *args, **kw):
    return snakemake(project, *args, config=STAGES, timeout=TIMEOUT, **kw)


def nothing_to_do(project) -> bool:
    proc = run(project, "-n")
    return "Nothing to be done" in proc.stdout + proc.stderr


def check_outputs(project: Path) -> list[Path]:
    """Every visible output is whole: HDF5 files read back with their completion marker, CSV and
    JSON parse, PNGs carry their signature. Leftover temporaries (``.<stem>.tmp-*``) are hidden
    and no HDF5 one is marked complete. Returns the temporaries."""
    results = project / "results"
    leftovers = []
    for f in sorted(results.rglob("*")):
        rel = f.relative_to(results)
        if not f.is_file() or rel.parts[0] == "logs":
            continue
        if any(p.startswith(".") for p in rel.parts):
            assert ".tmp-" in f.name or f.name.endswith(".damaged"), f"unexpected hidden file {f}"
            if ".tmp-" in f.name:
                leftovers.append(f)
                if f.suffix == ".h5":
                    with pytest.raises(IncompleteOutputError):
                        check_h5(f)
            continue
        if f.suffix == ".h5":
            read_h5(f)
        elif f.suffix == ".csv":
            assert len(pd.read_csv(f).columns) > 0, f
        elif f.suffix == ".json":
            json.loads(f.read_text())
        elif f.suffix == ".png":
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
    return leftovers


def descendants(pid: int) -> list[int]:
    """``pid``'s child processes, recursively (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def writer_of(path: Path) -> int | None:
    """The process that holds ``path`` open, if any (from /proc/*/fd)."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if any(os.readlink(fd) == str(path) for fd in (d / "fd").iterdir()):
                    return int(d.name)
            except OSError:
                continue
    return None


def start_and_wait_for_write(project: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """Start the workflow with successor_scores.h5's write held open before its completion
    marker; return once the temporary file is being written, and the file."""
    cmd, env = snakemake_command(project, *args, config=STAGES, env={SLOW_WRITE_ENV: "3600:successor_scores"})
    with open(project / "killed_run.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT
    out = project / "results" / "tiny-llama"
    while time.monotonic() < deadline:
        for tmp in out.glob(SCORES_TMP):  # earlier kills may have left some
            if writer_of(tmp):
                return proc, tmp
        if proc.poll() is not None:
            raise AssertionError(f"workflow ended ({proc.returncode}) before writing successor_scores.h5:\n"
                                 + (project / "killed_run.log").read_text()[-4000:])
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("successor_scores.h5 was never written")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("faults"))


def test_machine_dies_while_writing_h5(project):
    """SIGKILL to snakemake and every job while successor_scores.h5 is half written (a node or
    machine crash): the next run is refused (outputs the killed job had written are incomplete;
    its lock remains); after --unlock, with --rerun-incomplete (both profiles set it) it
    completes, every output whole, and the half-written temporary is hidden and unmarked."""
    proc, tmp = start_and_wait_for_write(project)
    victims = [proc.pid, *descendants(proc.pid)]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    proc.wait(60)
    out = project / "results" / "tiny-llama"
    assert not (out / "successor_scores.h5").exists(), "a killed write left a file that looks done"
    assert tmp.exists()
    with pytest.raises(IncompleteOutputError):
        check_h5(tmp)
    # what a user meets: outputs the killed job had already written (tasks.csv) are marked
    # incomplete, and the killed run's lock is still there
    plain = run(project, check=False)
    out_ = plain.stdout + plain.stderr
    assert plain.returncode != 0 and ("IncompleteFilesException" in out_ or "cannot be locked" in out_)
    locked = run(project, "--rerun-incomplete", check=False)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    run(project, "--unlock")
    run(project, "--rerun-incomplete")
    check_outputs(project)
    assert nothing_to_do(project)


def test_rerun_of_finished_workflow_does_nothing_fast(project, capsys):
    t0 = time.monotonic()
    proc = run(project)
    dt = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert "Nothing to be done" in out, out[-3000:]  # the time is printed, not asserted
    t0 = time.monotonic()
    assert nothing_to_do(project)
    with capsys.disabled():
        print(f"\nrerun of a finished workflow: {dt:.1f} s; dry run: {time.monotonic() - t0:.1f} s")


def test_truncated_h5_is_regenerated(project):
    """A cached HDF5 output damaged after the run (truncated) is noticed at parse time, set aside,
    regenerated with everything downstream; a dry run in between changes nothing of that."""
    h5 = project / "results" / "tiny-llama" / "successor_scores.h5"
    before = read_h5(h5)[0]
    os.truncate(h5, h5.stat().st_size // 2)
    with pytest.raises(IncompleteOutputError):
        read_h5(h5)
    dry = run(project, "-n")
    out = dry.stdout + dry.stderr
    assert "successor_scores.h5 is truncated" in out and "rule successor_scores:" in out, out[-3000:]
    real = run(project)
    out = real.stdout + real.stderr
    assert "rule successor_scores:" in out and "zoo_table" in out, out[-3000:]
    after = read_h5(h5)[0]
    assert sorted(after) == sorted(before)
    for name in before:
        np.testing.assert_array_equal(np.asarray(after[name]), np.asarray(before[name]), err_msg=name)
    check_outputs(project)
    assert nothing_to_do(project)
    assert not (h5.parent / ".successor_scores.h5.damaged").exists()


def test_job_killed_while_writing_h5(project, capsys):
    """SIGKILL to the successor_scores job alone (out of memory, a killed task) while it writes
    its HDF5 file: snakemake reports the failure and leaves no output that looks done; the next
    run completes."""
    proc, tmp = start_and_wait_for_write(project, "--forcerun", "successor_scores")
    os.kill(writer_of(tmp), signal.SIGKILL)
    assert proc.wait(600) != 0
    out = project / "results" / "tiny-llama"
    assert not (out / "successor_scores.h5").exists()
    check_outputs(project)
    run(project)
    leftovers = check_outputs(project)
    with capsys.disabled():
        print(f"\ntemporaries left by killed writes (hidden, never marked complete): {[f.name for f in leftovers]}")
    assert nothing_to_do(project)


def test_set_aside_incomplete(tmp_path):
    from successor_heads.core.h5io import write_h5

    good, bad = tmp_path / "a" / "good.h5", tmp_path / "a" / "bad.h5"
    write_h5(good, {"x": [1.0, 2.0]})
    write_h5(bad, {"x": [1.0, 2.0]})
    os.truncate(bad, 100)
    (tmp_path / "a" / ".bad.tmp-xyz.h5").write_bytes(b"half")
    moved, missing = set_aside_incomplete(tmp_path)
    assert moved == [bad] and missing == [bad] and not bad.exists()
    assert (tmp_path / "a" / ".bad.h5.damaged").exists()
    assert set_aside_incomplete(tmp_path) == ([], [bad])  # e.g. after a dry run
    write_h5(bad, {"x": [3.0]})  # regenerated
    assert set_aside_incomplete(tmp_path) == ([], [])
    assert not (tmp_path / "a" / ".bad.h5.damaged").exists() and good.exists()
