"""Models streamed from disk (successor_heads.core.streaming) against the same folder loaded in
memory, on a tiny model of every declared family: the weights-only scores are equal exactly and
read only the tensors they need; forward passes (resid embeddings, behavioural drops) are equal
within 1e-5 and hold at most two decoder layers' weights at once; ``model.memory`` is resolved
as documented."""

import json

import numpy as np
import pytest
import torch

from successor_heads.core.effective_embedding import effective_embeddings, head_input_norm, neutral_prefix
from successor_heads.core.loading import open_model
from successor_heads.core.streaming import (CheckpointTensors, StreamedModel, memory_used,
                                            streamed_of, weight_bytes)
from successor_heads.core.tasks import build_tasks, ordinal_list_prompts
from successor_heads.scores.behaviour import behavioural_drops
from successor_heads.scores.stage import task_indices
from successor_heads.scores.successor_score import successor_scores
from tests.support.tiny import FAMILIES, MOE, make_model


def _save(family, tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp(family)
    model, tok = make_model(family, tokenizer)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "manifest.json").write_text(json.dumps({"model": f"tiny-{family}"}))
    return path


#: MoE families whose checkpoint holds per-expert tensors that transformers fuses while loading
#: (streamed through transformers' converters); gpt-oss and Granite-MoE(-Shared) store their
#: experts fused already (Granite's under names transformers renames while loading)
FUSED_ON_LOAD = sorted(set(MOE) - {"gpt_oss", "granitemoe", "granitemoeshared"})


@pytest.fixture(scope="module", params=FAMILIES)
def folder(request, tmp_path_factory, tokenizer):
    """A tiny model of the family saved as a fetched folder (safetensors + a manifest)."""
    return _save(request.param, tmp_path_factory, tokenizer)


@pytest.mark.parametrize("family", FUSED_ON_LOAD)
def test_fused_experts_streamed_equal_from_pretrained_reading_one_layer(family, tmp_path_factory, tokenizer):
    """Each fused expert parameter, built from its per-expert tensors by transformers' converter
    when its layer loads, equals what ``from_pretrained`` builds, and reads that layer's tensors only."""
    path = _save(family, tmp_path_factory, tokenizer)
    mem, streamed = _open_both(path)
    stream = streamed_of(streamed.model)
    assert stream._converted and all(".experts." in n for n in stream._converted)
    params = dict(mem.model.named_parameters())
    for layer, module in enumerate(streamed.adapter.model.model.layers):
        fused = [n for n in stream._params_of(module) if n in stream._converted]
        if not fused:
            continue
        stream.tensors.reads.clear()
        with stream.resident([module]):
            for name in fused:
                torch.testing.assert_close(streamed.model.get_parameter(name), params[name], atol=0, rtol=0)
        assert stream.tensors.reads and all(f"layers.{layer}." in r for r in stream.tensors.reads)
        assert len(stream.sources_of(fused[0])) >= streamed.model.get_parameter(fused[0]).shape[0]
    assert not stream.loaded_now


@pytest.mark.parametrize("family, expert_tensor", [("mixtral", ".experts.1.w1."), ("mixtral", ".experts.1.w2."),
                                                   ("jamba", ".experts.1.down_proj.")])
def test_fetch_refuses_a_checkpoint_missing_an_expert_in_one_line(family, expert_tensor, tmp_path_factory, tokenizer):
    """The fused experts' shapes are checked by transformers' converters on meta tensors: a
    missing expert tensor is refused, naming the folder and the fused parameter."""
    from safetensors.torch import load_file, save_file

    from successor_heads.core.loading import ModelFetchError
    from successor_heads.models.weights import check_weights

    path = _save(family, tmp_path_factory, tokenizer)
    assert check_weights(path) == CheckpointTensors(path).n_params()  # the experts counted
    bad = _without_weights(path, tmp_path_factory.mktemp(f"{family}-bad") / "bad")
    state = load_file(str(path / "model.safetensors"))
    del state[next(k for k in state if expert_tensor in k)]
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelFetchError, match=rf"^{bad}: model\.layers\.0\.\w+\.experts\.\w+(, built from \d+ "
                                              r"per-expert tensors .* config.json implies|: transformers' "
                                              r"WeightConverter could not build it .*re-fetch the model)") as e:
        check_weights(bad)
    assert "\n" not in str(e.value)


def _without_weights(folder, dest):
    """``dest`` made with a copy of every file of ``folder`` but its safetensors weights."""
    dest.mkdir()
    for p in folder.iterdir():
        if p.suffix != ".safetensors":
            (dest / p.name).write_bytes(p.read_bytes())
    return dest


def _open_both(folder, dtype="float32"):
    return open_model(folder, dtype, memory="in_memory"), open_model(folder, dtype, memory="streamed")


def _scores(loaded, mode, norms="raw"):
    model, tok, adapter, _ = loaded
    idx, ids = task_indices(build_tasks(tok))
    x = effective_embeddings(adapter, ids, mode, norms, prefix_ids=neutral_prefix(tok))
    return successor_scores(adapter, x, ids, idx, norms, input_norm=head_input_norm(mode, norms))


@pytest.mark.parametrize("norms", ["raw", "applied"])
def test_mlp0_scores_streamed_equal_in_memory_and_read_only_what_they_need(folder, norms):
    mem, streamed = _open_both(folder)
    assert memory_used(mem.model) == "in_memory" and memory_used(streamed.model) == "streamed"
    a, b = _scores(mem, "mlp0", norms), _scores(streamed, "mlp0", norms)
    np.testing.assert_array_equal(a.per_task, b.per_task)
    np.testing.assert_array_equal(a.overall, b.overall)
    stream = streamed_of(streamed.model)
    assert not stream.loaded_now  # everything read was freed
    ad = streamed.adapter
    needed = {ad.model.get_input_embeddings(), ad.embed_norm(), ad.model.get_output_embeddings(), ad.final_norm(),
              ad.mlp_in_norm(0), ad.mlp(0), ad.shared_mlp(0), ad.mlp_out_norm(0)}
    for layer in range(ad.dims.n_layers):
        needed |= {ad.attn_in_norm(layer), ad.v_proj(layer), ad.o_proj(layer), ad.attn_out_norm(layer)}
    allowed = {s for m in needed if m is not None for n in stream._params_of(m) for s in stream.sources_of(n)}
    assert set(stream.tensors.reads) <= allowed
    # the MLPs of later layers are never read (GPT-J's parallel block shares ln_1 with attention)
    later_mlp = {s for n in stream._params_of(ad.mlp(ad.dims.n_layers - 1)) for s in stream.sources_of(n)}
    assert later_mlp and not later_mlp & set(stream.tensors.reads)


def test_forward_passes_streamed_equal_in_memory(folder):
    mem, streamed = _open_both(folder)
    ra, rb = _scores(mem, "resid"), _scores(streamed, "resid")
    np.testing.assert_array_equal(ra.overall, rb.overall)
    tok = mem.tokenizer
    prompts = ordinal_list_prompts(tok, build_tasks(tok), 4, 3)
    heads = [(0, 0), (1, 1)]
    da, ba = behavioural_drops(mem.adapter, tok, prompts, heads=heads)
    db, bb = behavioural_drops(streamed.adapter, tok, prompts, heads=heads)
    np.testing.assert_allclose(db, da, atol=1e-5)
    assert abs(ba - bb) < 1e-5


def test_streamed_behavioural_check_reads_each_layer_once_per_group_and_pass(folder):
    """The ablated batches ride along the clean pass: each decoder layer's tensors are read from
    disk once per prompt-length group for the mean ``z`` and once for the clean pass with every
    ablation (replaying layers L..end per ablated layer read the last layer 1 + 3 per group here)."""
    from successor_heads.scores.behaviour import _group_by_length

    _, streamed = _open_both(folder)
    tok, ad = streamed.tokenizer, streamed.adapter
    stream = streamed_of(streamed.model)
    prompts = ordinal_list_prompts(tok, build_tasks(tok), 4, 3)
    n_groups = len(_group_by_length(tok, prompts))
    heads = [(0, 0), (1, 1), (ad.dims.n_layers - 1, 0)]
    stream.tensors.reads.clear()
    behavioural_drops(ad, tok, prompts, heads=heads)
    layer_tensors = {t for n in stream._params_of(ad.layers()[-1]) for t in stream.sources_of(n)}
    counts = {stream.tensors.reads.count(t) for t in layer_tensors}
    assert counts == {2 * n_groups}, (counts, n_groups)
    assert not stream.loaded_now


def test_a_streamed_module_called_with_its_weights_on_disk_raises(folder):
    """torch's linear map on meta weights returns garbage instead of failing: a module of a
    streamed model called outside a forward pass or a resident block raises, naming it."""
    from successor_heads.core.streaming import resident

    _, streamed = _open_both(folder)
    ad = streamed.adapter
    x = torch.randn(2, 3, ad.dims.d_model)
    with pytest.raises(RuntimeError, match="still on disk"):
        ad.o_proj(0)(torch.randn(2, 3, ad.dims.n_heads * ad.dims.d_head))
    with resident(streamed.model, ad.mlp_in_norm(0)):
        assert torch.isfinite(ad.mlp_in_norm(0)(x)).all() if ad.mlp_in_norm(0) is not None else True
    assert not streamed_of(streamed.model).loaded_now


def test_a_streamed_pass_holds_at_most_two_decoder_layers(folder, monkeypatch):
    _, streamed = _open_both(folder)
    stream = streamed_of(streamed.model)
    layers = streamed.adapter.layers()
    most = []
    real_load = StreamedModel.load

    def spy(self, modules):
        done = real_load(self, modules)
        most.append(sum(any(p.device.type != "meta" for p in layer.parameters()) for layer in layers))
        return done

    monkeypatch.setattr(StreamedModel, "load", spy)
    with torch.no_grad():
        streamed.model(input_ids=torch.tensor([[1, 2, 3, 4]]))
    assert most and max(most) <= 2 and max(most) >= 1
    assert not stream.loaded_now


def test_bf16_streamed_scores_equal_in_memory(folder):
    mem, streamed = _open_both(folder, "bfloat16")
    np.testing.assert_array_equal(_scores(mem, "mlp0").per_task, _scores(streamed, "mlp0").per_task)


def test_parameter_count_from_the_headers(folder):
    mem = open_model(folder, memory="in_memory")
    assert CheckpointTensors(folder).n_params() == sum(p.numel() for p in mem.model.parameters())
    assert weight_bytes(folder, "bfloat16") * 2 == weight_bytes(folder, "float32")


def test_memory_auto_streams_above_the_stated_share():
    from successor_heads.core.memory import choose_memory

    gib = 2**30
    assert choose_memory("auto", 10 * gib, None, available_bytes=16 * gib) == "streamed"
    assert choose_memory("auto", 6 * gib, None, available_bytes=16 * gib) == "in_memory"
    assert choose_memory("auto", 6 * gib, mem_mb=8000, available_bytes=64 * gib) == "streamed"
    assert choose_memory("in_memory", 100 * gib, None, available_bytes=gib) == "in_memory"
    assert choose_memory("streamed", 1, None) == "streamed"
    with pytest.raises(ValueError, match="model.memory='disk'"):
        choose_memory("disk", 1)


def test_open_model_auto_streams_a_model_over_its_memory_limit(folder, monkeypatch):
    from successor_heads.core import memory

    # a tiny model is far below 1 MB: a share of 1 MB smaller than its weights stands in for a big model
    monkeypatch.setattr(memory, "STREAM_SHARE", 0.5 * weight_bytes(folder, "float32") / 2**20)
    assert memory_used(open_model(folder, memory="auto", mem_mb=1).model) == "streamed"
    assert memory_used(open_model(folder, memory="auto", mem_mb=4).model) == "in_memory"


def test_fetch_refuses_a_truncated_safetensors_and_marks_nothing(folder, tmp_path):
    from successor_heads.core.loading import ModelFetchError
    from successor_heads.models.sources import copy_hf_folder

    src = tmp_path / "src"
    src.mkdir()
    for p in folder.iterdir():
        if p.name != "manifest.json":
            (src / p.name).write_bytes(p.read_bytes())
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ModelFetchError, match="model.safetensors: not a complete safetensors file"):
        copy_hf_folder(src, dest, {})
    assert not (dest / "manifest.json").exists()


def test_fetch_links_weights_and_converts_bin_shards(folder, tmp_path):
    from safetensors.torch import load_file

    from successor_heads.models.sources import copy_hf_folder

    manifest = {}
    dest = tmp_path / "linked"
    dest.mkdir()
    copy_hf_folder(folder, dest, manifest)
    assert manifest["weight_files"] == {"model.safetensors": "linked"}
    assert (dest / "model.safetensors").stat().st_ino == (folder / "model.safetensors").stat().st_ino
    assert manifest["n_params"] == CheckpointTensors(folder).n_params()
    # an old checkpoint with only pytorch_model.bin becomes safetensors with the same tensors
    old = _without_weights(folder, tmp_path / "old")
    state = load_file(str(folder / "model.safetensors"))
    torch.save(state, old / "pytorch_model.bin")
    dest2 = tmp_path / "converted"
    dest2.mkdir()
    manifest2 = {}
    copy_hf_folder(old, dest2, manifest2)
    assert not list(dest2.glob("*.bin"))
    back = load_file(str(dest2 / "model.safetensors"))
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    assert manifest2["n_params"] == manifest["n_params"]


def test_fetch_refuses_a_tensor_of_the_wrong_shape(folder, tmp_path):
    from safetensors.torch import load_file, save_file

    from successor_heads.core.loading import ModelFetchError
    from successor_heads.models.weights import check_weights

    bad = _without_weights(folder, tmp_path / "bad")
    state = load_file(str(folder / "model.safetensors"))
    name = next(k for k in state if k.endswith("weight") and state[k].dim() == 2)
    state[name] = state[name][:-1].contiguous()
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelFetchError, match=f"tensor {name} has shape"):
        check_weights(bad)


@pytest.mark.real_model
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_real_default_models_streamed_scores_equal_in_memory(name):
    """The fetched default models (``results/<name>/model``, as the main command writes them):
    weights-only scores streamed == in memory, exactly, and the resid embeddings of the first
    tokens within 1e-5."""
    from pathlib import Path

    folder = Path(f"results/{name}/model")
    if not (folder / "manifest.json").is_file():
        pytest.skip(f"{folder} not fetched (run `successor-heads fetch model={name}`)")
    mem, streamed = _open_both(folder)
    a, b = _scores(mem, "mlp0"), _scores(streamed, "mlp0")
    np.testing.assert_array_equal(a.per_task, b.per_task)
    ids = task_indices(build_tasks(mem.tokenizer))[1][:16]
    prefix = neutral_prefix(mem.tokenizer)
    xa = effective_embeddings(mem.adapter, ids, "resid", prefix_ids=prefix)
    xb = effective_embeddings(streamed.adapter, ids, "resid", prefix_ids=prefix)
    torch.testing.assert_close(xb, xa, atol=1e-5, rtol=0)


def test_scores_stage_bf16_streamed_end_to_end_writes_float32(tmp_path, tokenizer):
    """``successor-heads scores`` on a local folder in bfloat16, streamed and in memory: the same
    CSV, float32 datasets in the HDF5 (never raw bf16), and ``memory`` recorded in both outputs."""
    from pathlib import Path

    from successor_heads.cli import main
    from successor_heads.core.h5io import read_h5

    src = tmp_path / "tiny-llama"
    model, tok = make_model("llama", tokenizer)
    model.save_pretrained(src)
    tok.save_pretrained(src)
    config_dir = Path(__file__).resolve().parents[2] / "config"
    csv = {}
    for memory in ("in_memory", "streamed"):
        results = tmp_path / memory
        assert main(["scores", f"model={src}", "model.dtype=bfloat16", f"model.memory={memory}",
                     f"results_dir={results}", "--config-dir", str(config_dir)]) == 0
        out = results / "local-tiny-llama"
        csv[memory] = (out / "successor_scores.csv").read_text()
        datasets, attrs = read_h5(out / "successor_scores.h5")
        assert attrs["memory"] == memory and attrs["dtype"] == "bfloat16"
        floats = [v for v in datasets.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
        assert floats and all(v.dtype == np.float32 for v in floats)
        assert json.loads((out / "scores_summary.json").read_text())["memory"] == memory
    assert csv["in_memory"] == csv["streamed"]


def test_auto_keeps_a_folder_without_safetensors_in_memory(folder, tmp_path):
    from safetensors.torch import load_file

    old = _without_weights(folder, tmp_path / "bin-only")
    torch.save(load_file(str(folder / "model.safetensors")), old / "pytorch_model.bin")
    assert memory_used(open_model(old, memory="auto", mem_mb=1).model) == "in_memory"
    with pytest.raises(ValueError, match="model.memory='disk'"):
        open_model(folder, memory="disk")


def test_a_streamed_job_asks_for_the_memory_streaming_needs_not_the_weights():
    from successor_heads.core.memory import STREAMED_BASE_MB, job_mem_mb

    gib, n13b = 2**30, 13_000_000_000
    # Llama-2-13B in bf16 (26 GB): streamed asks for the base plus a quarter of the weights
    assert job_mem_mb("streamed", n13b, "bfloat16", 185_000) == STREAMED_BASE_MB + int(0.25 * n13b * 2 / 2**20)
    # auto resolves against the memory available where the run is planned: 24 GB streams it
    assert job_mem_mb("auto", n13b, "bfloat16", 185_000, available_bytes=24 * gib) < 12_000
    assert job_mem_mb("auto", n13b, "bfloat16", 185_000, available_bytes=512 * gib) == 185_000
    assert job_mem_mb("in_memory", n13b, "bfloat16", 185_000, available_bytes=gib) == 185_000
    # never more than the in-memory figure
    assert job_mem_mb("streamed", 100_000_000, "float32", 2_000) == 2_000


@pytest.mark.parametrize("family", ["mixtral", "gpt_oss", "granitemoe"])
def test_scores_stage_of_a_mixture_of_experts_streamed_equals_in_memory(family, tmp_path):
    """``successor-heads scores`` on an MoE folder: every dataset equal streamed and in memory,
    the router's record of layer 0's experts included (its weights are read for that call:
    on the meta device a linear map returns garbage instead of failing)."""
    from pathlib import Path

    from successor_heads.cli import main
    from successor_heads.core.h5io import read_h5
    from tests.support.tiny import save_tiny_model

    src = save_tiny_model(family, tmp_path / f"tiny-{family}")
    config_dir = Path(__file__).resolve().parents[2] / "config"
    out = {}
    for memory in ("in_memory", "streamed"):
        assert main(["scores", f"model={src}", f"model.memory={memory}", f"results_dir={tmp_path / memory}",
                     "--config-dir", str(config_dir)]) == 0
        out[memory], attrs = read_h5(tmp_path / memory / f"local-tiny-{family}" / "successor_scores.h5")
        assert attrs["memory"] == memory
    assert "mlp0_router_experts" in out["streamed"]
    for key, value in out["in_memory"].items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "fi":
            np.testing.assert_array_equal(out["streamed"][key], value, err_msg=key)
