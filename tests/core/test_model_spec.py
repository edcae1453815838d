"""Model specs: names, hub ids with @revision, folders and GGUF files parse to the right kind and
slug; models without a config file get a derived config; unsupported model types and offline hub
ids fail at once (docs/DESIGN.md, "Model specs")."""

import json
import time

import numpy as np
import pytest

from successor_heads.config import ConfigError, available_models, compose, resolve_zoo
from successor_heads.core.model_derive import resources_for
from successor_heads.core.param_count import count_params
from successor_heads.core.model_spec import expand_zoo, parse_model, step_of, sweeps
from tests.support.tiny import save_tiny_model

KNOWN = available_models()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("w") / "tiny-llama")


def _gguf(path, arch="llama"):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_tensor("token_embd.weight", np.zeros((10, 4), dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((4, 4), dtype=np.float32))
    w.add_token_list(["a", "b"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_names_and_name_revisions():
    s = parse_model("smollm2-135m", KNOWN)
    assert (s.kind, s.slug, s.name, s.revision) == ("name", "smollm2-135m", "smollm2-135m", None)
    s = parse_model("pythia-70m@step1000", KNOWN)
    assert (s.kind, s.slug, s.name, s.revision) == ("name", "pythia-70m@step1000", "pythia-70m", "step1000")
    cfg = compose("pythia-70m@step1000")
    assert cfg.model.name == "pythia-70m@step1000" and cfg.model.source.revision == "step1000"
    assert cfg.model.family == "gpt_neox"
    with pytest.raises(ConfigError, match="source kind hf"):
        compose("smollm2-135m@v2")


def test_hub_ids_with_and_without_revision():
    s = parse_model("EleutherAI/pythia-70m@step1000", KNOWN)
    assert (s.kind, s.repo_id, s.revision, s.slug) == ("hf", "EleutherAI/pythia-70m", "step1000",
                                                       "EleutherAI--pythia-70m@step1000")
    s = parse_model("openai-community/gpt2", KNOWN)
    assert (s.kind, s.revision, s.slug) == ("hf", None, "openai-community--gpt2")


def test_unknown_value_lists_names_and_syntax():
    with pytest.raises(ConfigError, match=r"unknown model 'gpt5'.*smollm2-135m.*Hugging Face id"):
        parse_model("gpt5", KNOWN)
    with pytest.raises(ConfigError, match="no such file or folder"):
        parse_model("./no/such/folder", KNOWN)


def test_folder_gets_a_derived_config(tiny_folder):
    s = parse_model(str(tiny_folder), KNOWN)
    assert (s.kind, s.slug, s.path) == ("folder", "local-tiny-llama", str(tiny_folder.resolve()))
    cfg = compose(None, [f"model={tiny_folder}", "model.resources.cpus=1"])
    m = cfg.model
    assert (m.name, m.family, m.dtype, m.source.kind, m.source.path) == (
        "local-tiny-llama", "llama", "float32", "local", str(tiny_folder.resolve()))
    assert m.resources.cpus == 1 and m.resources.mem_mb == 2000 and m.resources.gpu == 0
    from transformers import AutoModelForCausalLM

    exact = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_folder).parameters())
    assert abs(m.n_params - exact) / exact < 0.05  # norms are left out of the estimate


def test_gguf_file_gets_a_derived_config(tmp_path):
    f = _gguf(tmp_path / "My-Model.Q4_K_M.gguf")
    s = parse_model(str(f), KNOWN)
    assert (s.kind, s.slug) == ("gguf", "local-My-Model.Q4_K_M")
    cfg = compose(s)
    assert (cfg.model.family, cfg.model.n_params, cfg.model.source.kind) == ("llama", 56, "local")
    with pytest.raises(ConfigError, match=r"model_type='mamba' is not supported.*gpt2.*llama"):
        compose(str(_gguf(tmp_path / "m.gguf", arch="mamba")))


def test_unsupported_model_type_lists_the_supported_ones(tmp_path):
    (tmp_path / "ssm").mkdir()
    (tmp_path / "ssm" / "config.json").write_text(json.dumps({"model_type": "mamba", "hidden_size": 8}))
    with pytest.raises(ConfigError, match=r"model_type='mamba' is not supported; supported model types: .*gpt_neox.*llama"):
        compose(str(tmp_path / "ssm"))
    with pytest.raises(ConfigError, match="mamba"):  # at Snakefile parse too
        resolve_zoo([str(tmp_path / "ssm")], [])


def test_hub_id_offline_fails_within_seconds(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 at the library's import
    t0 = time.time()
    with pytest.raises(ConfigError, match="cannot reach the Hugging Face hub.*no-such-org/no-such-model@step1"):
        compose("no-such-org/no-such-model@step1")
    assert time.time() - t0 < 10


def test_hub_id_with_config_json_in_the_hf_cache_derives_offline(monkeypatch, tmp_path, tiny_folder):
    """A job re-parsing the Snakefile offline finds the hub model's config.json in the HF cache."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--some-org--tiny-llama"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text((tiny_folder / "config.json").read_text())
    (repo / "refs").mkdir()
    (repo / "refs" / "step1").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # a cache miss would fail
    model = compose("some-org/tiny-llama@step1").model
    assert (model.name, model.family, model.source.repo_id, model.source.revision) == (
        "some-org--tiny-llama@step1", "llama", "some-org/tiny-llama", "step1")
    with pytest.raises(ConfigError, match="cannot reach the Hugging Face hub"):
        compose("some-org/tiny-llama@step2")


def test_resources_scale_with_parameters():
    assert resources_for(135e6) == ("float32", {"mem_mb": 4000, "runtime": 30, "cpus": 2, "gpu": 0})
    dtype, res = resources_for(6.7e9)
    assert dtype == "bfloat16" and res["gpu"] == 1 and res["mem_mb"] == 96000
    assert resources_for(70e9)[1]["mem_mb"] >= 900000
    gpt2 = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257}
    assert abs(count_params(gpt2)[0] - 124e6) / 124e6 < 0.05  # the meta-device count of the architecture


def test_steps_and_sweeps(tmp_path, tiny_folder):
    assert [step_of(x) for x in ("step1000", "checkpoint-500", "ckpt_7", "final", "abc123")] == [1000, 500, 7, None, None]
    ckpts = tmp_path / "run"
    for name in ("step20", "step3", "step100"):
        (ckpts / name).mkdir(parents=True)
        (ckpts / name / "config.json").write_text((tiny_folder / "config.json").read_text())
    specs = expand_zoo([str(ckpts), "EleutherAI/pythia-70m@step1", "EleutherAI/pythia-70m@step2", "smollm2-135m"], KNOWN)
    assert [s.slug for s in specs] == ["local-run@step100", "local-run@step20", "local-run@step3",
                                       "EleutherAI--pythia-70m@step1", "EleutherAI--pythia-70m@step2", "smollm2-135m"]
    out = sweeps(specs)
    assert [m["step"] for m in out["local-run"]] == [3, 20, 100]
    assert [m["model"] for m in out["EleutherAI--pythia-70m"]] == ["EleutherAI--pythia-70m@step1",
                                                                     "EleutherAI--pythia-70m@step2"]
    (ckpts / "final").mkdir()
    (ckpts / "final" / "config.json").write_text("{}")
    assert [m["step"] for m in sweeps(expand_zoo([str(ckpts)], KNOWN))["local-run"]] == [0, 1, 2, 3]  # zoo order


def test_model_file_revisions_form_a_sweep(tmp_path):
    zoo = resolve_zoo(["pythia-70m"], ["model.revisions=[step1000,step143000]"])
    assert list(zoo.models) == ["pythia-70m@step1000", "pythia-70m@step143000"]
    assert [m["step"] for m in zoo.sweeps["pythia-70m"]] == [1000, 143000]
    assert zoo.models["pythia-70m@step1000"].model.source.revision == "step1000"
    assert zoo.name == "zoo-pythia-70m@step1000+pythia-70m@step143000"  # not the default zoo's folder


def test_a_zoo_given_on_the_command_line_never_takes_the_default_zoos_folder():
    """results/zoo/ is the default zoo's (config.yaml); another zoo's tables go to a folder named
    after its members (a hash when long), or to an explicit zoo_name."""
    from successor_heads.config import zoo_name

    assert resolve_zoo(["smollm2-135m", "gemma3-270m"], []).name == "zoo"
    assert resolve_zoo(["smollm2-135m"], []).name == "zoo-smollm2-135m"
    assert resolve_zoo(["gemma3-270m", "smollm2-135m"], []).name == "zoo-gemma3-270m+smollm2-135m"
    assert resolve_zoo(["smollm2-135m"], [], explicit_name="mine").name == "mine"
    long = [f"local-checkpoint-{k:05d}" for k in range(8)]
    assert zoo_name(long, False) == zoo_name(long, False) != zoo_name(long[:-1], False)
    assert len(zoo_name(long, False)) == len("zoo-") + 10


@pytest.mark.parametrize("spelling", ["null", "Null", "NULL", "~", "None", ""])
def test_a_null_zoo_name_from_the_command_line_means_none(spelling):
    """``snakemake --config zoo_name=null`` reaches the workflow as the string "null" (Snakemake
    reads only numbers and booleans in a scalar): it means no name, not results/null/."""
    from successor_heads.config import zoo_name

    assert zoo_name(["smollm2-135m"], False, spelling) == "zoo-smollm2-135m"
    assert zoo_name(["smollm2-135m"], True, spelling) == "zoo"
    assert zoo_name(["smollm2-135m"], False, "nullable") == "nullable"


def test_a_null_override_is_none():
    """An override ``key=null`` (``--config 'overrides=[editing.head_mode=null]'``) sets None."""
    assert compose("smollm2-135m", ["editing.head_mode=mlp0"]).editing.head_mode == "mlp0"
    assert compose("smollm2-135m", ["editing.head_mode=mlp0", "editing.head_mode=null"]).editing.head_mode is None
