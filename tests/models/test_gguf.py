"""Tests for successor_heads.models.gguf (docs/DESIGN.md, "Models without a network"): the
header-only tensor-type scan, the faster shared ``gguf.GGUFReader`` and the single parse during
dequantization."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from successor_heads.core.loading import ModelFetchError, load_model, read_manifest
from successor_heads.models import gguf as gguf_mod
from successor_heads.models.fetch import fetch_model
from tests.models.tiny_llama import N_LAYERS, gguf_direct, local_cfg, mixed_gguf, quantization_via_reader


def test_header_scan_gives_the_types_of_a_full_reader_pass(tiny, tmp_path):
    """The header-only scan records what the full GGUFReader pass recorded, on the tiny Llama
    GGUF (Q8_0 blocks, F32 norms, vocabulary and merges) and on files with other types,
    metadata of every kind and big-endian byte order."""
    import gguf

    _, gguf_path, _ = tiny
    got = gguf_mod.gguf_quantization(gguf_path)
    assert got == quantization_via_reader(gguf_path)
    assert got["summary"] == {"F32": 2 * N_LAYERS + 1, "Q8_0": 7 * N_LAYERS + 1}
    mixed = mixed_gguf(tmp_path / "mixed.gguf")
    got = gguf_mod.gguf_quantization(mixed)
    assert got == quantization_via_reader(mixed)
    assert got["summary"] == {"F16": 1, "F32": 1, "Q4_0": 1, "Q8_0": 1} and got["file_type"] == "MOSTLY_Q4_0"
    big = mixed_gguf(tmp_path / "big.gguf", gguf.GGUFEndian.BIG)
    assert gguf_mod.gguf_quantization(big) == quantization_via_reader(big)
    assert gguf_mod.gguf_quantization(big)["summary"] == {"F16": 1, "F32": 1}


def test_header_scan_errors(tiny, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(ValueError, match="no GGUF magic"):
        gguf_mod.gguf_quantization(bad)
    _, gguf_path, _ = tiny
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(gguf_path.read_bytes()[:2000])  # inside the vocabulary
    with pytest.raises(ValueError, match="GGUF header (cut short|unreadable)"):
        gguf_mod.gguf_quantization(cut)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="no GGUF magic"):
        gguf_mod.gguf_quantization(empty)
    v1 = tmp_path / "v1.gguf"
    v1.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(64))
    with pytest.raises(ValueError, match="version 1"):
        gguf_mod.gguf_quantization(v1)
    with pytest.raises(ModelFetchError, match="not a readable GGUF"):
        fetch_model(tmp_path / "bad" / "model", **local_cfg(bad, "bad").model.fetch_args())


def test_fast_reader_reads_what_gguf_reader_reads(tiny, tmp_path):
    """Every field (parts, their dtypes and byte order, data indices, types) and every tensor
    of the shared reader equal gguf.GGUFReader's."""
    import gguf

    _, gguf_path, _ = tiny
    fast_cls = gguf_mod._fast_gguf_reader_class(gguf.GGUFReader)
    for path in (gguf_path, mixed_gguf(tmp_path / "m.gguf"), mixed_gguf(tmp_path / "b.gguf", gguf.GGUFEndian.BIG)):
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
    with gguf_mod._gguf_parsed_once(gguf_path):
        first = gguf.GGUFReader(str(gguf_path))
        assert gguf.GGUFReader(gguf_path) is first  # same file: shared
        other = mixed_gguf(tmp_path / "other.gguf")
        assert gguf.GGUFReader(str(other)) is not gguf.GGUFReader(str(other))  # another file: fresh each time
    assert gguf.GGUFReader is Counting
    opened.clear()
    out = tmp_path / "once" / "model"
    fetch_model(out, **local_cfg(gguf_path, "once").model.fetch_args())
    assert opened == [os.path.realpath(gguf_path)]
    assert gguf.GGUFReader is Counting
    man = read_manifest(out)
    assert man["gguf"]["quantization"] == quantization_via_reader(gguf_path)
    model, _ = load_model(out)
    ref, _ = gguf_direct(gguf_path)  # transformers' own loading, no shared reader
    want = ref.state_dict()
    got = model.state_dict()
    assert got.keys() == want.keys()
    for key in want:  # the same dequantized weights, bit for bit
        assert torch.equal(got[key], want[key]), key


def test_tensor_by_tensor_conversion_equals_the_whole_model_one(tiny, tmp_path, monkeypatch):
    """A GGUF larger than memory is dequantized one tensor at a time into shards
    (models/gguf_stream.py): the same tensors, bit for bit, as transformers' whole-model load, an
    index over several shards, and the fetch chooses it when memory is short."""
    from successor_heads.core import memory
    from successor_heads.models.gguf_stream import convert_gguf_streamed

    _, gguf_path, _ = tiny
    out = tmp_path / "streamed"
    out.mkdir()
    manifest = {}
    convert_gguf_streamed(gguf_path, out, manifest, shard_bytes=64 * 1024)
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    ref, _ = gguf_direct(gguf_path)
    (out / "manifest.json").write_text("{}")
    got = load_model(out)[0].state_dict()
    want = ref.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert manifest["n_params"] == sum(p.numel() for p in ref.parameters())
    # the fetch streams the conversion when the float32 weights exceed the share of memory
    monkeypatch.setattr(memory, "STREAM_SHARE", 1e-12)
    fetched = tmp_path / "fetched" / "model"
    fetch_model(fetched, **local_cfg(gguf_path, "fetched").model.fetch_args())
    assert read_manifest(fetched)["conversion"].startswith("gguf dequantized tensor by tensor")
