"""Any model, any checkpoint, end to end offline on tiny random models: a transformers folder with
no model file runs through the command line and through the workflow, and three local checkpoints
(the last one planted with a successor head) give the over-training table and figure that show
the planted head (docs/DESIGN.md, "Model specs")."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from successor_heads.core import layout
from successor_heads.core.h5io import read_h5
from tests.support.tiny import CHECKPOINT_VARIANTS, DENSE, FAMILIES, HYBRID, MOE, NEW_FAMILIES, VARIANTS, make_model, make_tokenizer, plant_readout, save_tiny_model
from tests.support.workflow_project import REPO, TINY_OVERRIDES, snakemake

pytestmark = pytest.mark.dag

DAYS = [" Monday", " Tuesday", " Wednesday", " Thursday", " Friday", " Saturday", " Sunday"]
PLANTED = (1, 0)  # layer, head


def _project(tmp):
    shutil.copytree(REPO / "config", tmp / "config")
    return tmp


def test_cli_scores_on_a_folder(tmp_path):
    folder = save_tiny_model("gpt2", tmp_path / "weights" / "tiny-gpt2")
    _project(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "successor_heads.cli", "scores", f"model={folder}",
                           *TINY_OVERRIDES], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = tmp_path / "results"
    summary = json.loads((results / "local-tiny-gpt2" / "scores_summary.json").read_text())
    assert summary["model"] == "local-tiny-gpt2" and summary["family"] == "gpt2"
    assert "kind: local" in (results / "local-tiny-gpt2" / "config.yaml").read_text()


#: The first wave of added families (each through its own process and the workflow); the second
#: wave (tests.support.tiny.DENSE) runs the same command in this process, which costs far less.
FIRST_WAVE = [f for f in NEW_FAMILIES if f not in DENSE] + [v for v in VARIANTS if v not in CHECKPOINT_VARIANTS]


@pytest.mark.parametrize("family", FIRST_WAVE)
def test_cli_scores_on_a_folder_of_each_new_family(family, tmp_path):
    """`successor-heads scores model=<folder>` derives the family from config.json and runs offline."""
    folder = save_tiny_model(family, tmp_path / "weights" / f"tiny-{family}")
    _project(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "successor_heads.cli", "scores", f"model={folder}",
                           *TINY_OVERRIDES], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "results" / f"local-tiny-{family}" / "scores_summary.json").read_text())
    assert summary["family"] == VARIANTS.get(family, family)


#: Every other declared family (Llama, Qwen2, Gemma 3, the second wave, mixture-of-experts; GPT-2
#: and GPT-NeoX run through a process and the workflow above) and the checkpoint variants run the
#: same command in this process, which costs far less.
IN_PROCESS = [f for f in FAMILIES if f not in FIRST_WAVE + ["gpt2", "gpt_neox"]] + list(CHECKPOINT_VARIANTS)


def test_every_declared_family_runs_the_scores_command():
    from successor_heads.core.adapters import FAMILIES as SPECS

    assert set(SPECS) <= {VARIANTS.get(f, f) for f in FIRST_WAVE + IN_PROCESS + ["gpt2", "gpt_neox"]}


@pytest.mark.parametrize("family", IN_PROCESS)
def test_cli_scores_in_process_on_a_folder_of_each_dense_family(family, tmp_path, monkeypatch):
    """`successor-heads scores model=<folder>` (the CLI's own ``main``) on a tiny folder of each
    family not run through its own process above, and of each checkpoint variant: the family is
    derived from config.json and the scores are written."""
    from successor_heads.cli import main

    folder = save_tiny_model(family, tmp_path / "weights" / f"tiny-{family}")
    monkeypatch.chdir(_project(tmp_path))
    assert main(["scores", f"model={folder}", *TINY_OVERRIDES]) == 0
    summary = json.loads((tmp_path / "results" / f"local-tiny-{family}" / "scores_summary.json").read_text())
    assert summary["family"] == VARIANTS.get(family, family)
    h5 = layout.outputs("scores", tmp_path / "results", f"local-tiny-{family}")["h5"]
    data, attrs = read_h5(h5)
    # a hybrid says which decoder layer each scored layer is, in the summary and the provenance
    layers = [1, 3] if VARIANTS.get(family, family) in HYBRID else None
    assert summary.get("attention_layers") == layers
    assert (json.loads(attrs["attention_layers"]) if "attention_layers" in attrs else None) == layers
    assert ("layer_index" in summary) == ("layer_index" in attrs) == (layers is not None)
    moe = VARIANTS.get(family, family) in MOE
    assert ("mlp0_router_experts" in data) == moe  # the router's choice per task token
    if moe:
        assert data["mlp0_router_experts"].shape == (len(data["mlp0_token_ids"]), 2)


def test_workflow_on_a_folder_of_each_new_family(tmp_path):
    """One zoo of tiny folders, one per new family (and the Llama 3 variant), through the workflow."""
    names = FIRST_WAVE
    folders = [save_tiny_model(f, tmp_path / "weights" / f"tiny-{f}") for f in names]
    snakemake(_project(tmp_path), models=tuple(str(f) for f in folders), config=("stages=[scores]",), timeout=1800)
    results = tmp_path / "results"
    zoo = pd.read_csv(layout.zoo_outputs("zoo_table", results, "zoo")["csv"])
    assert sorted(zoo.model) == sorted(f"local-tiny-{f}" for f in names)
    for f in names:
        for path in layout.targets("scores", results, f"local-tiny-{f}"):
            assert Path(path).is_file(), path
        summary = json.loads(Path(layout.outputs("scores", results, f"local-tiny-{f}")["summary"]).read_text())
        assert summary["family"] == VARIANTS.get(f, f)


def test_workflow_on_a_folder(tmp_path):
    folder = save_tiny_model("gpt_neox", tmp_path / "weights" / "tiny-neox")
    snakemake(_project(tmp_path), models=(str(folder),), config=("stages=[scores]",))
    results = tmp_path / "results"
    for path in layout.targets("scores", results, "local-tiny-neox"):
        assert Path(path).is_file(), path
    log = (results / "logs" / "local-tiny-neox" / "successor_scores.log").read_text()  # the job's params
    assert "'family': 'gpt_neox'" in log and f"'path': '{folder.resolve()}'" in log
    zoo = pd.read_csv(layout.zoo_outputs("zoo_table", results, "zoo")["csv"])
    assert list(zoo.model) == ["local-tiny-neox"]
    assert not (results / "zoo" / "over_training.csv").exists()  # no sweep, no over-training outputs


def _planted_checkpoint(path, tok, seed):
    from successor_heads.core.adapters import get_adapter
    from successor_heads.core.effective_embedding import effective_embeddings

    model, _ = make_model("llama", tok, seed=seed)
    a = get_adapter(model)
    ids = torch.tensor([tok(s, add_special_tokens=False)["input_ids"][0] for s in DAYS])
    x_TM = effective_embeddings(a, ids, "mlp0", "raw")[PLANTED[0]]
    target_TT = torch.zeros(7, 7)
    target_TT[torch.arange(7), (torch.arange(7) + 1) % 7] = 10.0
    plant_readout(a, *PLANTED, x_TM, ids, target_TT)  # the successor's one-hot on the days
    model.save_pretrained(path)
    tok.save_pretrained(path)


def test_sweep_over_three_local_checkpoints(tmp_path):
    tok = make_tokenizer()
    ckpts = tmp_path / "weights" / "run"
    for k, step in enumerate((100, 200)):
        model, _ = make_model("llama", tok, seed=10 + k)
        model.save_pretrained(ckpts / f"step{step}")
        tok.save_pretrained(ckpts / f"step{step}")
    _planted_checkpoint(ckpts / "step300", tok, seed=12)
    snakemake(_project(tmp_path), models=(str(ckpts),), config=("stages=[scores]",))
    results = tmp_path / "results"
    out = layout.zoo_outputs("over_training", results, "zoo")
    df = pd.read_csv(out["csv"])
    assert Path(out["fig"]).stat().st_size > 0
    assert list(df.step) == [100, 200, 300] and set(df.sweep) == {"local-run"}
    assert list(df.model) == ["local-run@step100", "local-run@step200", "local-run@step300"]
    last = df.iloc[-1]
    assert set(df.tracked_head) == {last.best_head} and last.tracked_score == last.best_score
    assert df.agrees.dtype == bool and df.best_score.between(0, 1).all()
    # the planted checkpoint shows the planted head: a perfect successor on its task, the others do not
    days = []
    for model in df.model:
        data, _ = read_h5(layout.outputs("scores", results, model)["h5"])
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in data["task_names"]]
        days.append(float(data["scores_mlp0"][PLANTED[0], PLANTED[1], names.index("days_spaced_title")]))
    assert days[-1] == 1.0 and max(days[:-1]) < 1.0, days
