"""Activation cache (activations.py) and the features stage end to end on a tiny model:
row choice, MLP0 parity, exact HDF5 round trip, refusal of truncated/unfinished files, bad
options, and the directions.h5 contract the editing stage reads."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from successor_heads.features.activations import (
    CACHE_DATASETS,
    TokenRows,
    activation_rows,
    read_cache,
    write_cache,
)
from successor_heads.core import layout
from successor_heads.core.adapters import get_adapter
from successor_heads.core.effective_embedding import effective_embeddings, mlp0_embeddings
from successor_heads.core.h5io import IncompleteOutputError, read_h5, write_h5
from successor_heads.config import build
from successor_heads.core.tasks import build_tasks
from tests.support.tiny import make_model, randomize_biases, save_tiny_model


@pytest.fixture(scope="module")
def rows_and_x(tokenizer):
    model, tok = make_model("llama", tokenizer)
    rows = activation_rows(tok, build_tasks(tok, numbers_max=30), numbers_max=40)
    return model, tok, rows, mlp0_embeddings(get_adapter(model), rows.token_ids)


def test_rows_cover_numbers_and_tasks(rows_and_x):
    _, tok, rows, x = rows_and_x
    g = np.asarray(rows.group)
    for spacing, pre in (("spaced", " "), ("unspaced", "")):
        nums = [i for i in range(len(rows)) if g[i] == f"numbers_{spacing}"]
        assert [rows.index[i] for i in nums] == list(range(41))  # 0..40, all single tokens here
        assert all(rows.tokens[i] == f"{pre}{rows.index[i]}" for i in nums)
        assert all(tok.decode([rows.token_ids[i]]) == rows.tokens[i] for i in nums)
        succ = [rows.successor_id[i] for i in nums]
        assert succ[:-1] == [rows.token_ids[i] for i in nums[1:]] and succ[-1] == -1
    # numbers 1..30 of the tasks are not repeated; every other task token is there
    num = [(g[i], rows.index[i]) for i in range(len(rows)) if rows.family[i] == "numbers"]
    assert sum(g == "numbers_spaced") == 41 and len(num) == len(set(num)) == 82
    i = rows.tokens.index(" Monday")
    assert rows.family[i] == "days" and rows.index[i] == 0 and rows.position[i] == 1
    assert rows.token_ids[rows.tokens.index(" Tuesday")] == rows.successor_id[i]
    assert rows.successor_id[rows.tokens.index(" Sunday")] == rows.token_ids[i]  # wraps
    assert rows.residues(7)[i] == 1 and rows.residues(10, "index")[i] == 0
    roman = rows.mask(["roman"], include_held_out=True)
    assert roman.any() and not (rows.mask() & roman).any()
    c = rows.counts()
    assert c["total"] == len(rows) == x.shape[0] and c["numbers"] == 82


def test_mlp0_matches_effective_embeddings(rows_and_x):
    """The activation cache's batched MLP0 outputs equal the scores stage's mlp0 effective embeddings."""
    model, _, rows, x = rows_and_x
    ref = effective_embeddings(get_adapter(model), torch.tensor(rows.token_ids), "mlp0", "raw")[0]
    torch.testing.assert_close(x, ref)
    torch.testing.assert_close(mlp0_embeddings(get_adapter(model), rows.token_ids, batch_size=16), x)  # chunked
    x_applied = mlp0_embeddings(get_adapter(model), rows.token_ids, "applied")
    assert not torch.allclose(x, x_applied)  # tiny models have random norm weights


def test_cache_round_trips_exactly(tmp_path, rows_and_x):
    _, _, rows, x = rows_and_x
    path = write_cache(tmp_path / "a" / "cache.h5", rows, x, {"model": "tiny"}, chunk_rows=64)
    rows2, x2, attrs = read_cache(path)
    assert np.array_equal(x2, x.numpy()) and x2.dtype == np.float32
    for k in rows.__dataclass_fields__:
        assert getattr(rows2, k) == getattr(rows, k), k
    assert attrs["model"] == "tiny" and json.loads(attrs["counts"]) == rows.counts()
    with h5py.File(path) as f:
        assert f["x"].chunks == (64, x.shape[1]) and f["x"].compression == "gzip"
    assert [p.name for p in path.parent.iterdir()] == ["cache.h5"]  # no temporary left behind
    assert set(CACHE_DATASETS) <= set(read_h5(path)[0])


def test_truncated_or_unfinished_cache_is_refused(tmp_path, rows_and_x):
    _, _, rows, x = rows_and_x
    path = write_cache(tmp_path / "cache.h5", rows, x)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IncompleteOutputError, match="cannot be read.*delete"):
        read_cache(path)
    path = write_cache(tmp_path / "cache.h5", rows, x)
    with h5py.File(path, "a") as f:
        del f.attrs["complete"]
    with pytest.raises(IncompleteOutputError, match="no completion marker"):
        read_cache(path)
    d = {k: v for k, v in rows.to_datasets().items() if k != "successor_id"}
    write_h5(tmp_path / "partial.h5", {"x": x, **d})
    with pytest.raises(IncompleteOutputError, match="successor_id"):
        read_cache(tmp_path / "partial.h5")
    with pytest.raises(IncompleteOutputError, match="does not exist"):
        read_cache(tmp_path / "missing.h5")


def test_bad_inputs(tmp_path, rows_and_x, tokenizer):
    _, _, rows, x = rows_and_x
    with pytest.raises(ValueError, match="numbers_max"):
        activation_rows(tokenizer, [], numbers_max=-1)
    empty = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    empty.pre_tokenizer = pre_tokenizers.Whitespace()
    empty = PreTrainedTokenizerFast(tokenizer_object=empty, unk_token="[UNK]")
    with pytest.raises(ValueError, match="empty token set"):
        activation_rows(empty, build_tasks(empty, numbers_max=5), numbers_max=5)
    with pytest.raises(ValueError, match="expected"):
        write_cache(tmp_path / "c.h5", rows, x[:-1])
    with pytest.raises(ValueError, match="empty"):
        mlp0_embeddings(None, [])
    with pytest.raises(ValueError, match="modulus"):
        rows.residues(1)
    bad = rows.to_datasets()
    bad["tokens"] = bad["tokens"][:-1]
    with pytest.raises(ValueError, match="differ in length"):
        TokenRows.from_datasets(bad)


# --- the stage end to end ------------------------------------------------------------------

def _cfg(**features):
    f = dict(numbers_max=30, n_saes=2, d_sae=16, steps=40, batch_size=32, lr=1e-2, cv_folds=3)
    return build({"model": {"name": "tiny-gpt2", "family": "gpt2", "source": {"kind": "local", "path": "unused"}},
                  "device": "cpu", "tasks": {"numbers_max": 20}, "features": f | features})


@pytest.fixture(scope="module")
def stage_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_gpt2")
    save_tiny_model("gpt2", d / "model")
    (d / "model" / "manifest.json").write_text(json.dumps({"model": "tiny-gpt2", "sha256": "0" * 64}))
    overall = np.zeros((2, 4), np.float32)
    overall[1, 2] = 0.9
    write_h5(d / "successor_scores.h5", {"overall_resid": overall}, {"default_mode": "resid"})
    return d


def _paths(stage_dir):
    """The features stage's inputs and outputs for the model folder ``stage_dir``."""
    return (layout.inputs("features", stage_dir.parent, stage_dir.name),
            layout.outputs("features", stage_dir.parent, stage_dir.name))


def test_stage_writes_the_directions_contract(stage_dir):
    from successor_heads.features import stage as features

    cfg = _cfg()
    ins, outs = _paths(stage_dir)
    summary = features.run(cfg, ins, outs, progress=False, rebuild_cache=True)
    for name, path in outs.items():
        assert Path(path).is_file(), name
    data, attrs = read_h5(outs["directions"])
    assert attrs["successor_head"] == "L1H2" == summary["successor_head"]
    assert attrs["space"] == "mlp0" and attrs["norms"] == "raw"
    for m in (10, 7, 12):
        for kind in ("sae", "probe"):
            d = data[f"{kind}_mod{m}"]
            assert d.shape == (m, 32) and d.dtype == np.float32
            ok = np.isfinite(d).all(1)
            np.testing.assert_allclose(np.linalg.norm(d[ok], axis=1), 1.0, rtol=1e-5)
        s = summary["moduli"][str(m)]
        assert 0 <= s["coverage_mean"] <= 1 and s["probe_test_total"] > 0
    assert summary["token_counts"]["numbers"] == 62 and summary["l0_mean"] >= 0
    # health checks: per-SAE dead fraction, probe convergence counted; value bias off by default
    assert len(summary["dead_fraction"]) == 2 and all(0 <= d <= 1 for d in summary["dead_fraction"])
    assert summary["dead_fraction_mean"] == pytest.approx(np.mean(summary["dead_fraction"]))
    assert [s["dead_fraction"] for s in summary["saes"]] == summary["dead_fraction"]
    assert summary["probe_n_fits"] == sum(v["probe_n_fits"] for v in summary["moduli"].values()) > 0
    assert summary["probes_converged"] == (summary["probe_n_not_converged"] == 0)
    assert summary["value_bias"] is False and bool(attrs["value_bias"]) is False
    assert json.loads(Path(outs["summary"]).read_text())["model"] == "tiny-gpt2"
    # a cache built with another config is rebuilt by the CLI path and refused without rebuild_cache
    with pytest.raises(ValueError, match="another config"):
        features.run(_cfg(numbers_max=12), ins, outs, progress=False)
    rows, _, _ = read_cache(ins["activations"])
    assert max(rows.index[i] for i in range(len(rows)) if rows.family[i] == "numbers") == 30


def test_head_score_value_bias(tokenizer):
    """With a nonzero value bias, ``value_bias=True`` shifts each row's score by a per-row
    constant (the bias's logit margin) and leaves ``ov_norm`` (a difference of OV outputs)
    unchanged; the default is the paper's circuit without it."""
    from successor_heads.features.selection import head_score_fn

    model, tok = make_model("gpt2", tokenizer)
    randomize_biases(model, 1.0, ("c_attn.bias",))
    a = get_adapter(model)
    rows = activation_rows(tok, build_tasks(tok, numbers_max=12), numbers_max=12)
    x = mlp0_embeddings(a, rows.token_ids)
    r = torch.arange(len(rows))
    plain, norm0 = head_score_fn(a, 1, 2, rows)
    off, _ = head_score_fn(a, 1, 2, rows, value_bias=False)
    on, norm1 = head_score_fn(a, 1, 2, rows, value_bias=True)
    s0, s1 = off(x, r), on(x, r)
    torch.testing.assert_close(plain(x, r), s0, equal_nan=True)
    has = ~torch.isnan(s0)
    assert has.any() and (s1[has] - s0[has]).abs().max() > 1e-3
    # the shift does not depend on x: the same for the row read from a zero vector
    torch.testing.assert_close(s1[has] - s0[has], (on(0 * x, r) - off(0 * x, r))[has], atol=1e-4, rtol=1e-4)
    C = torch.randn(5, a.dims.d_model)
    torch.testing.assert_close(norm0(C), norm1(C), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("key, value, match", [
    ("d_sae", 0, "d_sae"), ("n_saes", 0, "n_saes"), ("val_fraction", 1.0, "val_fraction"),
    ("moduli", [10, 1], "moduli"), ("residue_of", "value", "residue_of"), ("norms", "none", "norms"),
    ("probe_max_iter", 0, "probe_max_iter"),
])
def test_stage_rejects_bad_options(stage_dir, key, value, match):
    from successor_heads.features import stage as features

    with pytest.raises(ValueError, match=match):
        features.run(_cfg(**{key: value}), *_paths(stage_dir), progress=False)


def test_stage_needs_the_scores(tmp_path, stage_dir):
    from successor_heads.features import stage as features

    from successor_heads.core.handoff import StageInputError

    ins, outs = _paths(stage_dir)
    ins["scores"] = str(tmp_path / "successor_scores.h5")
    with pytest.raises(StageInputError, match="successor_scores.h5.*scores stage"):
        features.run(_cfg(), ins, outs, progress=False)
