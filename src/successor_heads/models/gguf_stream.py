"""A GGUF larger than memory, dequantized tensor by tensor into safetensors shards (ours;
docs/DESIGN.md, "Large models").

:func:`successor_heads.models.gguf.convert_gguf` lets transformers load the whole model, which
needs the dense float32 weights in memory at once. :func:`convert_gguf_streamed` runs the same
steps as transformers' ``load_gguf_checkpoint`` (its config and tokenizer parsing, its
per-architecture tensor processor, its GGUF -> transformers name map and gguf's ``dequantize``)
but one tensor at a time, writing each shard of at most ``shard_bytes`` as soon as it is full, so
memory holds one shard. The numbers are those of the whole-model conversion (tests compare every
tensor on the real SmolLM2 GGUF).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from successor_heads.core.loading import ModelFetchError

log = logging.getLogger(__name__)

#: Largest safetensors shard written (bytes of float32 data).
SHARD_BYTES = 2 * 2**30


def convert_gguf_streamed(gguf_path: Path, dest: Path, manifest: dict, shard_bytes: int = SHARD_BYTES) -> None:
    """Dequantize ``gguf_path`` to float32 safetensors shards in ``dest``, one tensor at a time.

    Args:
        gguf_path: the GGUF file.
        dest: an existing, empty folder (the fetch's temporary folder).
        manifest: updated in place: ``gguf.quantization``, ``conversion``, ``dtype``, ``n_params``
            (from the written headers), ``n_params_method``, ``load_seconds_gguf`` (seconds).
        shard_bytes: largest shard, bytes.

    Raises:
        ModelFetchError: not a readable GGUF, or an architecture transformers cannot read.
    """
    import numpy as np
    import torch
    from accelerate import init_empty_weights
    from gguf import GGUFReader, dequantize
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import (TENSOR_PROCESSORS, TensorProcessor,
                                                          get_gguf_hf_weights_map, load_gguf_checkpoint,
                                                          read_field)

    from successor_heads.models.gguf import gguf_quantization
    from successor_heads.models.weights import check_weights

    gguf_path = Path(gguf_path).resolve()
    t0 = time.time()
    try:
        manifest.setdefault("gguf", {})["quantization"] = gguf_quantization(gguf_path)
        parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=False)  # config and tokenizer only
        config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except Exception as e:  # noqa: BLE001
        raise ModelFetchError(f"{gguf_path}: transformers cannot read this GGUF ({type(e).__name__}: {e})") from e
    reader = GGUFReader(str(gguf_path))
    architecture = read_field(reader, "general.architecture")[0]
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    names = get_gguf_hf_weights_map(model, processor)

    shard: dict[str, torch.Tensor] = {}
    files: list[tuple[str, list[str]]] = []

    def flush() -> None:
        if shard:
            name = f"model-{len(files) + 1:05d}.safetensors"
            save_file(shard, str(dest / name), metadata={"format": "pt"})
            files.append((name, list(shard)))
            shard.clear()

    size = 0
    for tensor in reader.tensors:
        result = processor.process(weights=dequantize(tensor.data, tensor.tensor_type), name=tensor.name,
                                   tensor_key_mapping=names, parsed_parameters=parsed)
        if result.name not in names:
            continue
        t = torch.from_numpy(np.copy(result.weights)).to(torch.float32)
        if size + t.numel() * 4 > shard_bytes:
            flush()
            size = 0
        shard[names[result.name]] = t
        size += t.numel() * 4
    flush()
    # one shard keeps transformers' single-file name; several get an index, as save_pretrained writes
    if len(files) == 1:
        (dest / files[0][0]).rename(dest / "model.safetensors")
    else:
        total = {"total_size": sum((dest / f).stat().st_size for f, _ in files)}
        index = {"metadata": total, "weight_map": {k: f for f, keys in files for k in keys}}
        (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config.architectures = [type(model).__name__]
    config.dtype = torch.float32
    config.save_pretrained(str(dest))
    if model.can_generate():
        model.generation_config.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    manifest["conversion"] = "gguf dequantized tensor by tensor (transformers' tensor processors), saved as safetensors"
    manifest["dtype"] = "float32"
    manifest["n_params"] = check_weights(dest)
    manifest["n_params_method"] = "elements of the stored tensors (safetensors headers)"
    manifest["load_seconds_gguf"] = round(time.time() - t0, 2)
