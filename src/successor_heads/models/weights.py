"""What the fetch checks and writes about a folder's weights before marking it fetched (ours;
docs/DESIGN.md, "Models without a network", "Large models").

* :func:`check_weights`: every safetensors header parses and covers its file, and every tensor
  the model needs is there with the shape its ``config.json`` implies; the parameter count is
  read from the headers. A bad folder is refused with one line naming the file and the fault.
* :func:`bin_to_safetensors`: ``pytorch_model*.bin`` shards (old checkpoints have nothing else)
  become safetensors shard by shard (each loaded memory-mapped), so every stage can read
  tensors lazily (:mod:`successor_heads.core.streaming`).
* :func:`link_or_reference`: a weight file is hard-linked into the model folder where the
  filesystem allows, else referenced (a symbolic link, with the source's sha256 recorded and
  checked on every load), so a model is never stored twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from successor_heads.core.loading import ModelFetchError
from successor_heads.core.weight_refs import reference_record

log = logging.getLogger(__name__)


def check_weights(folder: str | os.PathLike) -> int:
    """Check a transformers folder's safetensors weights against its ``config.json``.

    Args:
        folder: the folder (``config.json`` and ``*.safetensors``, sharded or not).

    Returns:
        The parameter count, from the headers: elements of the stored tensors the model's
        parameters read (tied tensors once; stored buffers such as old attention masks left out).

    Raises:
        ModelFetchError: one line naming the file or tensor and what is wrong: a header that
            does not parse or does not cover its file (truncated), an index naming a missing
            file, a tensor the model needs missing, or one whose shape differs from the
            shape ``config.json`` implies.
    """
    import torch
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    from successor_heads.core.streaming import CheckpointTensors, checkpoint_names
    from successor_heads.core.streaming_experts import conversions

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        missing = sorted({f for f in json.loads(index.read_text())["weight_map"].values()
                          if not (folder / f).is_file()})
        if missing:
            raise ModelFetchError(f"{index}: names shard(s) not in the folder: {', '.join(missing)}")
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt") as f:
                f.keys()
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise ModelFetchError(f"{path}: not a complete safetensors file ({e}); fetch or copy it again") from e
    try:
        tensors = CheckpointTensors(folder)
    except FileNotFoundError as e:
        raise ModelFetchError(str(e)) from e
    config = AutoConfig.from_pretrained(str(folder))
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()
    shapes = tensors.shapes()
    converted = conversions(model, tensors.files)
    try:
        names = checkpoint_names(model, tensors, converted)
    except ValueError as e:
        raise ModelFetchError(str(e)) from e
    try:
        # an MoE's fused expert parameters: transformers' converters run on meta tensors of the
        # stored per-expert shapes (no data read), giving the fused shapes to check
        built = {k: v for conv in {id(c): c for c in converted.values()}.values()
                 for k, v in conv.build(lambda key: torch.empty(shapes[key], device="meta"), model).items()}
    except ValueError as e:
        raise ModelFetchError(f"{tensors.folder}: {e}") from e
    for name, p in model.named_parameters():
        if name in converted:
            sources = converted[name].names()
            if list(built[name].shape) != list(p.shape):
                raise ModelFetchError(f"{tensors.folder}: {name}, built from {len(sources)} per-expert tensors "
                                      f"({sources[0]} ...), has shape {list(built[name].shape)}, config.json implies "
                                      f"{list(p.shape)}; the weights do not match the config")
            continue
        stored = shapes[names[name]]
        if list(p.shape) != stored:
            raise ModelFetchError(f"{tensors.files[names[name]]}: tensor {names[name]} has shape {stored}, "
                                  f"config.json implies {list(p.shape)}; the weights do not match the config")
    read = set(names.values()) | {k for conv in converted.values() for k in conv.names()}
    return sum(math.prod(shapes[n]) for n in read)


def link_or_reference(src: Path, dest: Path) -> tuple[str, dict | None]:
    """Put weight file ``src`` (hub-cache symlinks followed) at ``dest`` without storing it twice:
    a hard link where the filesystem allows (same device), else a symbolic link to the source
    with the source's sha256, size and modification time recorded
    (:func:`successor_heads.core.weight_refs.reference_record`), which every later load checks.

    Returns:
        ``("linked", None)`` or ``("referenced", record)``: the record goes into the manifest's
        ``weight_sources``.

    Raises:
        OSError: neither link can be made (e.g. a filesystem without symbolic links), or the
            source cannot be read.
    """
    src = Path(src).resolve()
    try:
        os.link(src, dest)
        return "linked", None
    except OSError as e:
        log.info("cannot hard-link %s into %s (%s): referencing it", src, dest.parent, e.strerror or e)
    record = reference_record(src)
    os.symlink(src, dest)
    return "referenced", record


def bin_to_safetensors(folder: Path, dest: Path) -> list[str]:
    """Write ``folder``'s ``pytorch_model*.bin`` shards into ``dest`` as safetensors, one shard at a
    time (``torch.load(weights_only=True, mmap=True)``: a shard is never read whole into memory
    before it is written); ``pytorch_model.bin.index.json`` becomes ``model.safetensors.index.json``.
    Tensors sharing storage (tied embeddings) are written once.

    Returns:
        The names of the files written.

    Raises:
        ModelFetchError: a shard cannot be read as a weights-only torch file.
    """
    import torch
    from safetensors.torch import save_file

    written, renamed = [], {}
    for path in sorted(folder.glob("pytorch_model*.bin")):
        out_name = path.name.replace("pytorch_model", "model").replace(".bin", ".safetensors")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001
            raise ModelFetchError(f"{path}: not a readable weights-only torch file ({type(e).__name__}: {e})") from e
        seen: set[tuple[int, int]] = set()
        kept = {}
        for name, t in state.items():
            key = (t.untyped_storage().data_ptr(), t.storage_offset())
            if key in seen:
                continue
            seen.add(key)
            kept[name] = t.contiguous()
        save_file(kept, str(dest / out_name), metadata={"format": "pt"})
        renamed[path.name] = out_name
        written.append(out_name)
        log.info("converted %s -> %s (%d tensors)", path.name, out_name, len(kept))
        del state, kept
    index = folder / "pytorch_model.bin.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {k: renamed[v] for k, v in data["weight_map"].items() if v in renamed}
        (dest / "model.safetensors.index.json").write_text(json.dumps(data, indent=2) + "\n")
        written.append("model.safetensors.index.json")
    return written
