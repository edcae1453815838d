"""A local folder on another filesystem is referenced, not copied (successor_heads.core.weight_refs):
the fetch links each weight file to its source and records the source's sha256; loading and
streaming read the source and refuse, in one line, a source that changed or vanished. A
cross-device link is simulated by making ``os.link`` fail with EXDEV."""

import errno
import hashlib
import os
import shutil

import pytest
import torch

from successor_heads.core.loading import ModelFetchError, load_model, open_model, read_manifest
from successor_heads.models.fetch import fetch_model
from tests.models.tiny_llama import PROMPT, local_cfg, logits


def _cross_device(*_args, **_kwargs):
    raise OSError(errno.EXDEV, "Invalid cross-device link")


@pytest.fixture
def referenced(tiny, tmp_path, monkeypatch):
    """(source folder, fetched folder, original model): a private copy of the tiny folder fetched
    with hard links failing as they do across filesystems."""
    folder, _, original = tiny
    src = tmp_path / "elsewhere"
    shutil.copytree(folder, src)
    (src / "model.safetensors").chmod(0o640)
    monkeypatch.setattr(os, "link", _cross_device)
    out = tmp_path / "tiny" / "model"
    fetch_model(out, **local_cfg(src).model.fetch_args())
    monkeypatch.undo()
    return src, out, original


def test_cross_device_fetch_references_the_source_with_its_sha256(referenced):
    src, out, original = referenced
    man = read_manifest(out)
    weights = src / "model.safetensors"
    assert man["weight_files"] == {"model.safetensors": "referenced"}
    record = man["weight_sources"]["model.safetensors"]
    assert record["path"] == str(weights.resolve())
    assert record["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert record["size_bytes"] == weights.stat().st_size
    # stored once: the folder holds a link to the source, not a second copy
    assert (out / "model.safetensors").is_symlink() and (out / "model.safetensors").resolve() == weights.resolve()
    assert weights.stat().st_mode & 0o777 == 0o640  # the fetch's chmod left the source alone
    model, tok = load_model(out)
    ids, got = logits(model, tok)
    with torch.no_grad():
        torch.testing.assert_close(got, original(ids).logits, rtol=0, atol=1e-6)
    streamed = open_model(out, memory="streamed")
    assert streamed.manifest["memory"] == "streamed"
    ids = streamed.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(streamed.model(ids).logits, original(ids).logits, rtol=0, atol=1e-5)


def test_a_touched_but_unchanged_source_still_loads(referenced):
    src, out, _ = referenced
    weights = src / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert read_manifest(out)["weight_sources"]["model.safetensors"]["mtime_ns"] != weights.stat().st_mtime_ns
    load_model(out)  # the sha256 is recomputed and matches


@pytest.mark.parametrize("memory", ["in_memory", "streamed", "auto"])
def test_a_changed_source_is_refused_in_one_line(referenced, memory):
    src, out, _ = referenced
    weights = src / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of the last tensor; the header still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFetchError, match="changed since the fetch: sha256 .* recorded; fetch the model again") as e:
        open_model(out, memory=memory)
    assert "\n" not in str(e.value) and str(weights.resolve()) in str(e.value)


@pytest.mark.parametrize("memory", ["in_memory", "streamed"])
def test_a_vanished_source_or_link_is_refused_in_one_line(referenced, memory):
    src, out, _ = referenced
    (out / "model.safetensors").unlink()
    with pytest.raises(ModelFetchError, match="should link to .* but is missing; fetch the model again") as e:
        open_model(out, memory=memory)
    assert "\n" not in str(e.value)
    (src / "model.safetensors").unlink()
    with pytest.raises(ModelFetchError, match="which no longer exists; restore it or fetch the model again") as e:
        open_model(out, memory=memory)
    assert "\n" not in str(e.value)


def test_same_filesystem_is_still_a_hard_link(tiny, tmp_path):
    folder, _, _ = tiny
    out = tmp_path / "tiny" / "model"
    fetch_model(out, **local_cfg(folder).model.fetch_args())
    man = read_manifest(out)
    assert man["weight_files"] == {"model.safetensors": "linked"} and "weight_sources" not in man
    assert (out / "model.safetensors").stat().st_ino == (folder / "model.safetensors").stat().st_ino
