"""Load a model folder written by the models stage (``results/{model}/model/``): the one reader of
that stage's output for every later stage.

Every stage opens its model with :func:`open_model` (model, tokenizer, adapter and manifest in
one call); :func:`load_model` and :func:`read_manifest` are its two halves.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from successor_heads.core.adapters import Adapter


from successor_heads.core import DTYPES
from successor_heads.core.memory import choose_memory, weights_bytes
from successor_heads.core.weight_refs import check_weight_sources

log = logging.getLogger(__name__)

#: Written last by the models stage: a folder without it is not complete.
MANIFEST = "manifest.json"


class ModelFetchError(RuntimeError):
    """Weights could not be fetched, verified, converted or found; the message says what to do."""


class LoadedModel(NamedTuple):
    """A model folder opened for analysis (:func:`open_model`); unpacks as
    ``model, tokenizer, adapter, manifest = open_model(...)``."""

    #: transformers causal LM, eval mode, eager attention, ``requires_grad`` off.
    model: Any
    #: its tokenizer.
    tokenizer: Any
    #: the family adapter (:func:`successor_heads.core.adapters.get_adapter`): W_E, W_U, W_V, W_O, dims.
    adapter: Adapter
    #: the parsed ``manifest.json`` (source, sha256, quantization, n_params, ...).
    manifest: dict


def open_model(model_dir: str | os.PathLike, dtype: str = "float32", device: str = "cpu", memory: str = "in_memory",
               mem_mb: int | None = None) -> LoadedModel:
    """Open a folder written by :func:`successor_heads.models.fetch.fetch_model` for a stage.

    The one entry point of every analysis stage (scores, features, editing, wild) to the models
    stage's output (docs/DESIGN.md, "Models without a network"): reads ``manifest.json``
    (:func:`read_manifest`), loads the weights (:func:`load_model`) and wraps the model in its
    family's adapter, which gives the paper's matrices (W_E ``[d_vocab, d_model]``, W_U
    ``[d_model, d_vocab]``, W_V ``[n_layers, n_heads, d_model, d_head]``, W_O
    ``[n_layers, n_heads, d_head, d_model]``), the OV circuit and the dims (d_model, d_head,
    n_heads, n_layers, d_vocab).

    Args:
        model_dir: the folder (``results/{model}/model``), which must hold ``manifest.json``.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` (the stored weights are converted).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (see :func:`load_model`).
        memory: ``"in_memory"`` (load every weight), ``"streamed"`` (build the model on the meta
            device and read each module's weights from disk only while it runs or is read:
            :mod:`successor_heads.core.streaming`) or ``"auto"`` (streams when the weights at
            ``dtype`` exceed a share of the memory available or of ``mem_mb``:
            :func:`successor_heads.core.memory.choose_memory`). Which was used:
            :func:`successor_heads.core.streaming.memory_used` of the model.
        mem_mb: the job's memory limit (``model.resources.mem_mb``) for ``memory="auto"``.

    Returns:
        :class:`LoadedModel` ``(model, tokenizer, adapter, manifest)``; ``manifest["memory"]``
        says how the model is held (``"in_memory"`` or ``"streamed"``); for a hybrid (LFM2, Jamba)
        ``manifest["attention_layers"]`` holds the decoder-layer index of each scored layer, and a
        one-line notice is logged.

    Raises:
        ModelFetchError: folder or manifest missing or unreadable (says which command fetches it).
        ValueError: unknown dtype or memory choice, or no adapter for the model's ``model_type``
            (the message lists the supported families).
    """
    from successor_heads.core.adapters import get_adapter
    from successor_heads.core.streaming import memory_used, weight_bytes

    manifest = read_manifest(model_dir)
    size = 0
    if memory == "auto":
        try:
            size = weight_bytes(model_dir, dtype)
        except FileNotFoundError:  # no safetensors (a folder fetched as .bin): nothing to stream from
            pass
    if choose_memory(memory, size, mem_mb) == "streamed":
        model, tokenizer = stream_model(model_dir, dtype, device)
    else:
        model, tokenizer = load_model(model_dir, dtype, device)
    manifest["memory"] = memory_used(model)  # read by every output's provenance
    adapter = get_adapter(model)
    notice = adapter.hybrid_notice()
    if notice:  # a hybrid: say which decoder layers the scored layers are, and record it for provenance
        log.warning(notice)
        manifest["attention_layers"] = list(adapter.attention_layers)
    return LoadedModel(model, tokenizer, adapter, manifest)


def open_for_stage(cfg, manifest: str | os.PathLike, mem_mb: int | None = None) -> LoadedModel:
    """:func:`open_model` as every analysis stage calls it: the folder of ``manifest`` (a
    ``manifest.json`` path), at ``cfg.model.dtype`` on ``cfg.device``, held as ``cfg.model.memory``
    says (``auto``: compared with ``mem_mb``, the job's memory in MB that the workflow passes, else
    ``cfg.model.resources.mem_mb``). Source: ours. Raises: as :func:`open_model`."""
    from successor_heads.core.layout import model_dir

    m = cfg.model
    return open_model(model_dir(manifest), m.dtype, cfg.device, memory=m.memory,
                      mem_mb=m.resources.mem_mb if mem_mb is None else mem_mb)


def stream_model(model_dir: str | os.PathLike, dtype: str = "float32", device: str = "cpu"):
    """As :func:`load_model`, but the model is built on the meta device and each module's weights are
    read from the folder's safetensors only while it runs (:class:`successor_heads.core.streaming.StreamedModel`,
    hooks attached to every decoder layer): a forward pass holds one decoder layer at a time.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        ModelFetchError: folder or manifest missing. ValueError: unknown dtype, a model type with
        no adapter, or a parameter missing from the checkpoint.
    """
    from transformers import AutoTokenizer

    from successor_heads.core.adapters import get_adapter
    from successor_heads.core.streaming import StreamedModel

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: must be one of {', '.join(DTYPES)}")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    stream = StreamedModel(model_dir, dtype, device)
    stream.attach_hooks(get_adapter(stream.model).layers())
    log.info("streaming %s (%s, %s) from %s", manifest.get("model"), dtype, device, model_dir)
    return stream.model, AutoTokenizer.from_pretrained(str(model_dir))


def load_model(model_dir: str | os.PathLike, dtype: str = "float32", device: str = "cpu"):
    """Load a folder written by :func:`successor_heads.models.fetch.fetch_model` for analysis.

    The model uses eager attention (so ``output_attentions=True`` works), is in eval mode and
    has ``requires_grad`` off on every parameter.

    Args:
        model_dir: the folder (``results/{model}/model``), which must hold ``manifest.json``.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (cuda if available, else cpu).
            On cuda, a model whose weights would take more than 90% of the GPU's memory is
            spread with ``device_map="auto"``.

    Returns:
        ``(model, tokenizer)``: a ``PreTrainedModel`` (causal LM) and its tokenizer.

    Raises:
        ModelFetchError: folder or manifest missing (says which command fetches it).
        ValueError: unknown dtype.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: must be one of {', '.join(DTYPES)}")
    torch_dtype = getattr(torch, dtype)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "attn_implementation": "eager"}
    if str(device).startswith("cuda"):
        dev = torch.device(device)
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(idx).total_memory
        n_params = int(manifest.get("n_params") or 0)
        need = weights_bytes(n_params, dtype)
        if need > 0.9 * total:
            log.info("model needs %.1f GiB > 90%% of GPU %d; using device_map='auto'", need / 2**30, idx)
            kwargs["device_map"] = "auto"
        else:
            kwargs["device_map"] = {"": idx}
    elif device != "cpu":
        kwargs["device_map"] = {"": device}
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    model.eval()
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    log.info("loaded %s (%s, %s) in %.2f s", manifest.get("model"), dtype, device, time.time() - t0)
    return model, tokenizer


def read_manifest(model_dir: str | os.PathLike) -> dict:
    """Return the parsed ``manifest.json`` of a folder written by the models stage
    (:func:`successor_heads.models.fetch.fetch_model`), after checking the weight files the folder
    references on another filesystem (:func:`successor_heads.core.weight_refs.check_weight_sources`).

    Raises:
        ModelFetchError: the folder or its manifest is missing or unreadable, or a referenced
            weight file vanished or changed since the fetch (one line; says how to fetch the model).
    """
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    if not model_dir.is_dir() or not path.is_file():
        what = "folder" if not model_dir.is_dir() else f"{MANIFEST} in the folder"
        raise ModelFetchError(
            f"model {what} {model_dir} is missing (not fetched, or the fetch did not finish). "
            f"{fetch_hint(model_dir)}"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelFetchError(f"cannot read {path}: {e}. {fetch_hint(model_dir)}") from e
    try:
        check_weight_sources(model_dir, manifest)
    except (OSError, ValueError) as e:
        raise ModelFetchError(f"{e}. {fetch_hint(model_dir)}") from e
    return manifest


def fetch_hint(model_dir: Path) -> str:
    """The commands that fetch the model of ``model_dir`` (``results/{name}/model``), for error messages."""
    name = model_dir.parent.name if model_dir.name == "model" else "<name>"
    return (
        f"Fetch it with `snakemake results/{name}/model/{MANIFEST}` or "
        f"`successor-heads fetch model={name}`."
    )
