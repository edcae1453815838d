"""The public Python API (successor_heads.api) on a tiny fetched model with a planted successor
head: the same numbers as the library functions and the scores stage, the documented shapes."""

from dataclasses import asdict
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import successor_heads
from successor_heads import api
from successor_heads.config import build as validate
from successor_heads.core.corpus import load_corpus
from successor_heads.core.effective_embedding import effective_embeddings, head_input_norm, neutral_prefix
from successor_heads.core.h5io import read_h5
from successor_heads.core.loading import ModelFetchError
from successor_heads.core.tasks import TasksConfig
from successor_heads.core.tasks import build_tasks, ordinal_list_prompts
from successor_heads.models.fetch import fetch_model
from successor_heads.scores import stage as scores_stage
from successor_heads.scores.behaviour import behavioural_drops
from successor_heads.scores.successor_score import successor_scores
from successor_heads.wild.direct_effect import corpus_direct_effects, mean_z
from tests.support.tiny import make_model, plant_readout

REPO = Path(__file__).resolve().parents[1]
PLANTED = (1, 0)
DAYS_TASK = "days_spaced_title"
SMALL_CORPUS = {"n_contexts": 2, "context_len": 16}


def _plant_successor(adapter, tok):
    """Plant head L1H0 as a perfect successor on the spaced, title-case days under ``mlp0``/``raw``
    (as in tests/scores/test_scores.py): ``x_t W_V W_O W_U[:, days]`` puts 10 on the next day."""
    days = next(t for t in build_tasks(tok) if t.name == DAYS_TASK)
    ids = torch.tensor(days.token_ids)
    x = effective_embeddings(adapter, ids, "mlp0", "raw")[PLANTED[0]]
    target = torch.zeros(len(ids), len(ids))
    target[torch.arange(len(ids)), torch.tensor(days.successor)] = 10.0
    plant_readout(adapter, *PLANTED, x, ids, target)


@pytest.fixture(scope="module")
def project(tmp_path_factory, tokenizer):
    """A project folder: ``config/`` (the repo's plus ``model/tiny.yaml``, a local source) and
    ``results/tiny/model``, a tiny GPT-2 with the planted head fetched from ``weights/``."""
    from successor_heads.core.adapters import get_adapter

    tmp = tmp_path_factory.mktemp("api")
    model, tok = make_model("gpt2", tokenizer)
    _plant_successor(get_adapter(model), tok)
    model.save_pretrained(tmp / "weights")
    tok.save_pretrained(tmp / "weights")
    shutil.copytree(REPO / "config", tmp / "config")
    (tmp / "config" / "model" / "tiny.yaml").write_text(
        f"name: tiny\nfamily: gpt2\nn_params: 0\ndtype: float32\nsource:\n  kind: local\n  path: {tmp / 'weights'}\n")
    cfg = validate({"model": {"name": "tiny", "family": "gpt2", "source": {"kind": "local", "path": str(tmp / "weights")}}})
    fetch_model(tmp / "results" / "tiny" / "model", **cfg.model.fetch_args())
    return tmp


@pytest.fixture(scope="module")
def loaded(project):
    return api.load(project / "results" / "tiny" / "model")


def _by_head(df):
    return df.sort_values(["layer", "head"]).reset_index(drop=True)


def test_package_exports_the_api_lazily():
    assert successor_heads.load is api.load and successor_heads.direct_effects is api.direct_effects
    code = "import sys, successor_heads; assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError):
        successor_heads.no_such_thing  # noqa: B018


def test_load(loaded):
    model, tok, adapter, manifest = loaded
    assert manifest["model"] == "tiny" and tok is loaded.tokenizer and adapter.model is model
    assert adapter.dims.n_layers == 2 and adapter.dims.n_heads == 4
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_load_missing_folder_says_how_to_fetch(tmp_path):
    with pytest.raises(ModelFetchError, match="successor-heads fetch"):
        api.load(tmp_path / "nothing" / "model")


@pytest.mark.parametrize("mode", ["mlp0", "resid"])
def test_scores_equal_the_library(loaded, mode):
    df = api.successor_scores(loaded, mode=mode)
    d = loaded.adapter.dims
    tasks = build_tasks(loaded.tokenizer)
    idx, ids = scores_stage.task_indices(tasks)
    x = effective_embeddings(loaded.adapter, ids, mode, "raw", prefix_ids=neutral_prefix(loaded.tokenizer))
    ref = successor_scores(loaded.adapter, x, ids, idx, "raw", input_norm=head_input_norm(mode, "raw"))
    assert len(df) == d.n_layers * d.n_heads
    assert list(df.columns) == ["layer", "head", "label", "score", *ref.task_names]
    assert df.score.is_monotonic_decreasing
    by_head = _by_head(df)
    np.testing.assert_array_equal(by_head.score.to_numpy(), ref.overall.ravel())
    np.testing.assert_array_equal(by_head[ref.task_names].to_numpy(), ref.per_task.reshape(-1, len(ref.task_names)))
    assert by_head.label[5] == f"L{5 // d.n_heads}H{5 % d.n_heads}"
    assert df.attrs["mode"] == mode and 0 < df.attrs["chance_level"] < 1


def test_planted_successor_head_ranks_first(loaded):
    days = [t for t in build_tasks(loaded.tokenizer) if t.name == DAYS_TASK]
    df = api.successor_scores(loaded, mode="mlp0", tasks=days)
    assert df.label[0] == "L1H0" and df.score[0] == 1.0 and df[DAYS_TASK][0] == 1.0
    assert df.score[1] < 1.0
    assert list(df.columns) == ["layer", "head", "label", "score", DAYS_TASK]


def test_tasks_config_section_and_bad_options(loaded):
    df = api.successor_scores(loaded, mode="mlp0", tasks={"numbers_max": 20, "include_roman": False})
    assert "numbers_spaced" in df.columns and "roman_spaced" not in df.columns
    assert df.attrs["n_pairs"]["numbers_spaced"] == 19
    with pytest.raises(ValueError, match="mode="):
        api.successor_scores(loaded, mode="embed")
    with pytest.raises(ValueError, match="norms="):
        api.successor_scores(loaded, norms="folded")


def test_api_equals_the_scores_stage(loaded, project):
    """``successor-heads scores`` with the default config writes the API's numbers (float32 in
    the HDF5): the scores of both modes and the behavioural drops."""
    from successor_heads import cli

    rc = cli.main(["scores", "model=tiny", "device=cpu", f"results_dir={project / 'results'}",
                   "--config-dir", str(project / "config")])
    assert rc == 0
    data, _ = read_h5(project / "results" / "tiny" / "successor_scores.h5")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in data["task_names"]]
    for mode in ("mlp0", "resid"):
        by_head = _by_head(api.successor_scores(loaded, mode=mode))
        np.testing.assert_allclose(by_head.score.to_numpy(), data[f"overall_{mode}"].ravel(), rtol=0, atol=1e-7)
        np.testing.assert_allclose(by_head[names].to_numpy(), data[f"scores_{mode}"].reshape(-1, len(names)),
                                   rtol=0, atol=1e-7)
    drops = _by_head(api.behavioural_check(loaded))
    np.testing.assert_allclose(drops.logprob_drop.to_numpy(), data["behaviour_logprob_drop"].ravel(), rtol=0, atol=1e-6)


def test_behavioural_check_equals_the_library(loaded):
    tok, d = loaded.tokenizer, loaded.adapter.dims
    prompts = ordinal_list_prompts(tok, build_tasks(tok), 3, 4)
    ref, base = behavioural_drops(loaded.adapter, tok, prompts, "mean")
    df = api.behavioural_check(loaded)
    assert len(df) == d.n_layers * d.n_heads and list(df.columns) == ["layer", "head", "label", "logprob_drop"]
    assert df.logprob_drop.is_monotonic_decreasing
    np.testing.assert_array_equal(_by_head(df).logprob_drop.to_numpy(), ref.ravel())
    assert df.attrs["baseline_logprob"] == base and df.attrs["n_prompts"] == len(prompts)
    heads = [(1, 0), (0, 3)]
    sub = api.behavioural_check(loaded, heads=heads)
    assert sorted(zip(sub["layer"], sub["head"])) == sorted(heads)
    for layer, head, drop in zip(sub["layer"], sub["head"], sub["logprob_drop"]):
        assert drop == pytest.approx(ref[layer, head], abs=1e-4)
    with pytest.raises(ValueError, match="ablation="):
        api.behavioural_check(loaded, ablation="resample")


def test_direct_effects_equal_the_library(loaded):
    a, tok, d = loaded.adapter, loaded.tokenizer, loaded.adapter.dims
    corpus = load_corpus(tok, **SMALL_CORPUS)
    mz = mean_z(a, corpus.tokens, 16, skip_first=corpus.has_bos)
    ref = corpus_direct_effects(a, corpus.tokens, mz, 16, 1024, final_norm="frozen")
    df = api.direct_effects(loaded, SMALL_CORPUS)
    n_tokens = corpus.n_contexts * (corpus.context_len - 1)
    labels = [f"L{layer}H{head}" for layer in range(d.n_layers) for head in range(d.n_heads)]
    assert df.shape == (n_tokens, 4 + len(labels))
    assert list(df.columns) == ["context_index", "position", "target_id", "base_loss", *labels]
    np.testing.assert_array_equal(df.target_id.to_numpy(), corpus.tokens[:, 1:].reshape(-1).numpy())
    np.testing.assert_array_equal(df.base_loss.to_numpy(), ref.base_loss)
    np.testing.assert_array_equal(df[labels].to_numpy().T, (ref.loss - ref.base_loss).reshape(len(labels), -1))
    assert df.attrs["final_norm"] == "frozen" and df.attrs["method"] == ref.method

    one = api.direct_effects(loaded, corpus.tokens, heads=[PLANTED])
    assert list(one.columns) == ["context_index", "position", "target_id", "base_loss", "L1H0"]
    np.testing.assert_allclose(one["L1H0"].to_numpy(), df["L1H0"].to_numpy(), rtol=0, atol=1e-6)

    rec = api.direct_effects(loaded, corpus, heads=[PLANTED], final_norm="recomputed")
    assert rec.attrs["final_norm"] == "recomputed"
    with pytest.raises(ValueError, match="final_norm"):
        api.direct_effects(loaded, corpus, final_norm="none")
    with pytest.raises(ValueError, match="out of range"):
        api.direct_effects(loaded, corpus, heads=[(d.n_layers, 0)])
