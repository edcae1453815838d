"""The stages after the scores, streamed from disk (successor_heads.core.streaming) against the
same folder loaded in memory, on a tiny model of every declared family: the activation cache
(MLP0 outputs), the edit-loss (the MLP0 edit hooks in forward passes over a corpus; over prompts
on Gemma3) and the direct effects (fast and exact paths, corpus and listing prompts) are equal
within 1e-5, and their forward passes hold at most two decoder layers' weights at once; the
cycles stage's measurements and the Python API's direct effects stream too."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from successor_heads.core.effective_embedding import mlp0_embeddings
from successor_heads.core.loading import open_model
from successor_heads.core.streaming import StreamedModel, streamed_of
from successor_heads.core.tasks import build_tasks
from successor_heads.editing import edit_loss as el
from successor_heads.features.activations import activation_rows
from successor_heads.wild.direct_effect import corpus_direct_effects, mean_z
from successor_heads.wild.listings import listing_direct_effects, listing_prompts
from tests.support.tiny import FAMILIES, save_tiny_model

#: every declared family streams, mixtures of experts included (their per-expert checkpoint
#: tensors fused by transformers' converters as each layer loads)
STREAMED_FAMILIES = list(FAMILIES)
TEXT = ("On Monday we counted one two three and then 1 2 3 4 5 in March. The quick brown fox "
        "jumps over the lazy dog, first and second, 12 and 13 on Friday. ")
ATOL = 1e-5


def _folder(family, tmp_path_factory):
    path = save_tiny_model(family, tmp_path_factory.mktemp(f"streamed-{family}"))
    (path / "manifest.json").write_text(json.dumps({"model": f"tiny-{family}"}))
    return path


@pytest.fixture(scope="module", params=STREAMED_FAMILIES)
def both(request, tmp_path_factory):
    """``(in memory, streamed)``: the same tiny folder opened both ways."""
    folder = _folder(request.param, tmp_path_factory)
    return open_model(folder, memory="in_memory"), open_model(folder, memory="streamed")


def _directions(d_model, m=None):
    """Random unit feature directions ``{("probe", 10): [10, d_model]}`` (``m`` given: the ``[m, d_model]`` rows)."""
    g = torch.Generator().manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(m or 10, d_model, generator=g), dim=-1)
    return f if m else {("probe", 10): f}


def _corpus(tok, n_contexts=2, n=12):
    ids = tok(TEXT * 2)["input_ids"]
    return torch.tensor([ids[k * n:(k + 1) * n] for k in range(n_contexts)])


def _layer_count_spy(loaded, monkeypatch) -> list[int]:
    """The number of decoder layers with weights in memory each time a decoder layer is read."""
    layers = list(loaded.adapter.layers())
    counts: list[int] = []
    real_load = StreamedModel.load

    def spy(self, modules):
        modules = list(modules)
        done = real_load(self, modules)
        if any(m is layer for m in modules for layer in layers):
            counts.append(sum(any(p.device.type != "meta" for p in layer.parameters()) for layer in layers))
        return done

    monkeypatch.setattr(StreamedModel, "load", spy)
    return counts


def _corpus_edit_loss(loaded, norms="raw"):
    tok, a = loaded.tokenizer, loaded.adapter
    classes = el.residue_classes(build_tasks(tok, numbers_max=12, include_roman=False), {"numbers": 10})
    return el.corpus_edit_loss(a, _corpus(tok), classes, _directions(a.dims.d_model), shift=3, scale=4.0,
                               norms=norms, batch_size=1)


def _prompt_edit_loss(loaded, norms="raw"):
    tok, a = loaded.tokenizer, loaded.adapter
    tasks = build_tasks(tok, numbers_max=12, include_roman=False)
    cases = el.prompt_cases(tok, tasks, {"numbers": 10, "days": 7}, max_per_family=2, max_targets=1)
    dirs = {("probe", m): f for m in (10, 7) for f in [_directions(a.dims.d_model, m)]}
    return el.prompt_edit_loss(a, cases, dirs, scale=4.0, norms=norms)


def _numeric(df: pd.DataFrame) -> np.ndarray:
    return df.select_dtypes("number").to_numpy(float)


def test_activation_cache_edit_loss_and_direct_effects_streamed_equal_in_memory(both, monkeypatch):
    mem, streamed = both
    tok = mem.tokenizer
    # the activation cache (features.stage.build_cache): MLP0 outputs of number and task tokens
    rows = activation_rows(tok, build_tasks(tok, numbers_max=20), numbers_max=20)
    torch.testing.assert_close(mlp0_embeddings(streamed.adapter, rows.token_ids, "applied", batch_size=1024),
                               mlp0_embeddings(mem.adapter, rows.token_ids, "applied", batch_size=1024),
                               atol=ATOL, rtol=0)
    counts = _layer_count_spy(streamed, monkeypatch)
    # the edit-loss: edit hooks on MLP0 inside forward passes over a corpus (prompts: below)
    ca, cb = _corpus_edit_loss(mem), _corpus_edit_loss(streamed)
    assert len(ca) and list(ca.columns) == list(cb.columns) and len(ca) == len(cb)
    np.testing.assert_allclose(_numeric(cb), _numeric(ca), atol=ATOL, rtol=0)
    # the wild stage's direct effects: mean z, z capture, every head ablated (fast and exact paths)
    ids = _corpus(tok)
    mz = {k: mean_z(x.adapter, ids, batch_size=1, skip_first=False) for k, x in (("a", mem), ("b", streamed))}
    torch.testing.assert_close(mz["b"], mz["a"], atol=ATOL, rtol=0)
    for fast in (None, False):
        da = corpus_direct_effects(mem.adapter, ids, mz["a"], batch_size=1, fast=fast)
        db = corpus_direct_effects(streamed.adapter, ids, mz["a"], batch_size=1, fast=fast)
        assert da.method == db.method == ("exact" if fast is False else da.method)
        for key in ("loss", "target_logit", "base_loss", "base_logit"):
            np.testing.assert_allclose(getattr(db, key), getattr(da, key), atol=ATOL, rtol=0, err_msg=key)
    # the listing prompts: one right-padded pass streamed, one pass per length group in memory
    prompts = listing_prompts(6)
    la, lb = (listing_direct_effects(x.adapter, tok, prompts, mz["a"]) for x in (mem, streamed))
    for key in ("loss", "target_logit", "base_loss", "base_logit"):
        np.testing.assert_allclose(lb[key], la[key], atol=ATOL, rtol=0, err_msg=key)
    # every forward pass held at most two decoder layers; everything read was freed
    assert counts and max(counts) <= 2
    assert not streamed_of(streamed.model).loaded_now


def test_a_streamed_corpus_runs_in_one_pass_per_layer(tmp_path_factory, monkeypatch):
    """A streamed model reads each decoder layer once for the whole corpus (batch_size=1 asked):
    the direct effects' mean z and capture, and the edit-loss over a corpus."""
    loaded = open_model(_folder("llama", tmp_path_factory), memory="streamed")
    first = loaded.adapter.layers()[0]
    reads: list[int] = []
    real_load = StreamedModel.load

    def spy(self, modules):
        modules = list(modules)
        reads.extend(1 for m in modules if m is first)
        return real_load(self, modules)

    monkeypatch.setattr(StreamedModel, "load", spy)
    ids = _corpus(loaded.tokenizer, n_contexts=4)
    mz = mean_z(loaded.adapter, ids, batch_size=1, skip_first=False)
    assert len(reads) == 1
    corpus_direct_effects(loaded.adapter, ids, mz, batch_size=1)
    assert len(reads) == 2
    el.token_losses(loaded.adapter, ids, batch_size=1)
    assert len(reads) == 3


def test_prompt_edit_loss_streamed_equals_in_memory(tmp_path_factory):
    """Gemma3 with ``norms="applied"``: the edit sits on layer 0's post-MLP norm."""
    mem, streamed = (open_model(_folder("gemma3", tmp_path_factory), memory=m) for m in ("in_memory", "streamed"))
    a, b = _prompt_edit_loss(mem, "applied"), _prompt_edit_loss(streamed, "applied")
    assert len(a) and a.drop(columns=a.select_dtypes("number").columns).equals(
        b.drop(columns=b.select_dtypes("number").columns))
    np.testing.assert_allclose(_numeric(b), _numeric(a), atol=ATOL, rtol=0)
    np.testing.assert_allclose(_numeric(_corpus_edit_loss(streamed, "applied")),
                               _numeric(_corpus_edit_loss(mem, "applied")), atol=ATOL, rtol=0)


def test_cycles_measurements_streamed_equal_in_memory(tmp_path_factory):
    from successor_heads.core.effective_embedding import neutral_prefix
    from successor_heads.cycles.measure import measure_cycles

    folder = _folder("gemma3", tmp_path_factory)  # post-attention norms and a tied W_U
    out = []
    for memory in ("in_memory", "streamed"):
        model, tok, a, _ = open_model(folder, memory=memory)
        out.append(measure_cycles(a, tok, build_tasks(tok), periods={"days_spaced_title": 7}, modes=["mlp0", "resid"],
                                  norms="applied", n_permutations=5, seed=0, prefix_ids=neutral_prefix(tok),
                                  successor_head=(1, 0), successor_scores={}, model_name="tiny"))
    mem, streamed = out
    pd.testing.assert_frame_equal(streamed.rotation, mem.rotation, atol=ATOL, rtol=0)
    pd.testing.assert_frame_equal(streamed.circles, mem.circles, atol=ATOL, rtol=0)
    assert streamed.successor.keys() == mem.successor.keys()
    for key, info in mem.successor.items():
        assert streamed.successor[key]["causal_check"] == pytest.approx(info["causal_check"], abs=ATOL, nan_ok=True)


def test_api_direct_effects_on_a_streamed_model(tmp_path_factory):
    import successor_heads as sh

    folder = _folder("qwen2", tmp_path_factory)
    corpus = {"n_contexts": 2, "context_len": 12}
    a = sh.direct_effects(sh.load(folder, memory="in_memory"), corpus=corpus, heads=[(0, 0), (1, 1)])
    b = sh.direct_effects(sh.load(folder, memory="streamed"), corpus=corpus, heads=[(0, 0), (1, 1)])
    assert a.attrs["memory"] == "in_memory" and b.attrs["memory"] == "streamed"
    pd.testing.assert_frame_equal(b, a, atol=ATOL, rtol=0)


def test_weights_only_blocks_of_features_and_editing_streamed_equal_in_memory(tmp_path_factory):
    """The modules the editing stage holds for vector arithmetic and the greater-than bias, and
    the features stage for its head score, are all these read (Gemma3, norms applied: post norms)."""
    from successor_heads.core.streaming import head_circuit, mlp0_circuit, readout_modules, resident
    from successor_heads.editing import greater_than as gt
    from successor_heads.editing import vector_arithmetic as va
    from successor_heads.features.selection import head_score_fn

    folder = _folder("gemma3", tmp_path_factory)
    out = []
    for memory in ("in_memory", "streamed"):
        model, tok, a, _ = open_model(folder, memory=memory)
        tasks = build_tasks(tok, numbers_max=20, include_roman=False)
        rows = activation_rows(tok, tasks, numbers_max=20)
        with resident(model, *mlp0_circuit(a), *head_circuit(a, 1), *readout_modules(a)):
            v = va.vector_arithmetic(a, 1, 0, tasks, _directions(a.dims.d_model), [1.0, 4.0], "applied")
            g = gt.greater_than(a, 1, 0, tasks, "applied")
            score, ov_norm = head_score_fn(a, 1, 0, rows, "applied")
            x = mlp0_embeddings(a, rows.token_ids, "applied")
            s = (score(x, np.arange(len(rows))), ov_norm(x[:8]))
        out.append((v, g, s))
    (va_a, gt_a, (sa, na)), (va_b, gt_b, (sb, nb)) = out
    assert len(va_a) and len(gt_a)
    np.testing.assert_allclose(_numeric(va_b), _numeric(va_a), atol=ATOL, rtol=0)
    np.testing.assert_allclose(_numeric(gt_b), _numeric(gt_a), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(sb, float), np.asarray(sa, float), atol=ATOL, rtol=0)
    torch.testing.assert_close(nb, na, atol=ATOL, rtol=0)
