"""The ``successor-heads`` command line, run as a user runs it (a subprocess): help, config
errors that fail before any model is touched (exit code 2, one clear line), and one real stage
on a tiny local model."""

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pandas as pd
import pytest

from tests.support.workflow_project import make_project

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    env.pop("SUCCESSOR_HEADS_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "successor_heads.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _clear_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2 and a one-line ``error: ...`` naming each of ``needles``, no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("error:"))
    for needle in needles:
        assert needle in line, line


def test_entry_point_is_the_cli_main():
    (ep,) = entry_points(group="console_scripts", name="successor-heads")
    assert ep.value == "successor_heads.cli:main"


def test_help_lists_the_stages():
    proc = _cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: successor-heads")
    for stage in ("fetch", "scores", "features", "editing", "wild", "cycles"):
        assert stage in proc.stdout
    assert "overrides" in proc.stdout


def test_unknown_stage_is_a_usage_error():
    proc = _cli("score", "model=smollm2-135m")
    assert proc.returncode == 2
    assert "invalid choice: 'score'" in proc.stderr


@pytest.mark.parametrize("override, needles", [
    ("scores.thresold=0.4", ["thresold"]),              # a key the schema does not declare
    ("scores.threshold=high", ["scores.threshold"]),    # a value of the wrong type
    ("scores.norms=folded", ["scores.norms", "folded"]),  # a value outside the allowed ones
])
def test_bad_override_fails_before_any_job(override, needles, tmp_path):
    proc = _cli("scores", "model=smollm2-135m", override, f"results_dir={tmp_path / 'results'}")
    _clear_error(proc, *needles)
    assert not (tmp_path / "results").exists()


def test_unknown_model_names_the_known_ones(tmp_path):
    proc = _cli("scores", "model=no-such-model", f"results_dir={tmp_path / 'results'}")
    _clear_error(proc, "no-such-model", "known models", "smollm2-135m")
    assert not (tmp_path / "results").exists()


TINY = ("model=tiny-llama", "device=cpu", "results_dir=out")


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A project folder after ``successor-heads scores`` on its tiny local model (run once, shared
    by the tests of the scores and the cycles command): ``(folder, process)``."""
    project = make_project(tmp_path_factory.mktemp("cli"), family="llama", name="tiny-llama")
    return project, _cli("scores", *TINY, cwd=project)


def test_scores_stage_on_a_tiny_local_model(scored):
    """From a project folder (config found in the working directory): the model is fetched from
    its local source, the scores stage writes its files, and the summary is printed."""
    tmp_path, proc = scored
    assert proc.returncode == 0, proc.stderr[-6000:]
    out = tmp_path / "out" / "tiny-llama"
    assert json.loads((out / "model" / "manifest.json").read_text())["source_kind"] == "local"
    for name in ("successor_scores.h5", "successor_scores.csv", "tasks.csv", "successor_heatmap.png",
                 "top_head_tasks.png", "scores_summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "scores_summary.json").read_text())
    assert summary["model"] == "tiny-llama"
    assert f"top_head_resid: {summary['top_head_resid']}" in proc.stdout
    df = pd.read_csv(out / "successor_scores.csv")
    assert len(df) == 2 * 4 and df.successor_score.between(0, 1).all()
    assert f"L{df.layer[0]}H{df['head'][0]}" == summary["top_head_resid"]


def test_cycles_stage_after_scores_on_a_tiny_local_model(scored, tmp_path):
    """`successor-heads cycles` reads the scores stage's file and writes the cycles outputs with
    the columns of docs/DESIGN.md; without the scores it fails with a message naming that stage."""
    import shutil

    assert scored[1].returncode == 0, scored[1].stderr[-6000:]
    args = (*TINY, "cycles.n_permutations=20")
    unscored = shutil.copytree(scored[0], tmp_path / "unscored", symlinks=True)
    (unscored / "out" / "tiny-llama" / "successor_scores.h5").unlink()
    proc = _cli("cycles", *args, cwd=unscored)
    assert proc.returncode == 1 and "successor-heads scores model=tiny-llama" in proc.stderr, proc.stderr[-3000:]
    tmp_path = shutil.copytree(scored[0], tmp_path / "project", symlinks=True)
    proc = _cli("cycles", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]
    out = tmp_path / "out" / "tiny-llama" / "cycles"
    for name in ("circles.csv", "rotation.csv", "cycles_summary.json", "circles.png", "rotation_heatmap.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "cycles_summary.json").read_text())
    assert summary["n_permutations"] == 20 and f"successor_head: {summary['successor_head']}" in proc.stdout
    rot = pd.read_csv(out / "rotation.csv")
    assert rot["rotation_score"].between(-1, 1).all() and rot["successor_score"].notna().any()
