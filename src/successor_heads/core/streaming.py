"""Models larger than memory: weights read from the folder's safetensors tensor by tensor, only
while a module needs them (ours; docs/DESIGN.md, "Large models").

A streamed model is the family's own transformers module built on the meta device (accelerate's
``init_empty_weights``: parameters take no memory; the small non-persistent buffers such as the
rotary frequencies are built as usual). Parameters are materialised by
``accelerate.utils.set_module_tensor_to_device`` from a memory-mapped ``safetensors`` file when a
module needs them, and put back on the meta device afterwards:

* :func:`resident` keeps given modules' weights in memory inside a ``with`` block (the
  weights-only scores read ``W_E``, the first MLP, each layer's value/output projections and
  norms, the final norm and ``W_U`` this way, layer by layer; nothing else is read);
* :meth:`StreamedModel.attach_hooks` loads each decoder layer (and the embedding, final norm and
  unembedding) just before its forward call and frees it just after, so a forward pass over a
  whole batch holds one decoder layer's weights at a time while the model's own modules run.
  accelerate's ``AlignDevicesHook`` does the same for a weights map keyed by module-local names;
  ours reads checkpoint names through :class:`CheckpointTensors` (with the base-model prefix and
  tied embeddings resolved once) and the same loader serves :func:`resident`.

Checkpoint tensor names are not declared per family: they are the streamed model's own
parameter names (its module paths, which the family's declared table points into), matched to
the checkpoint's names with or without the base model's prefix (``transformer.``, ``model.``);
a tied unembedding reads the embedding's tensor. Fused mixture-of-experts parameters are built
from their per-expert tensors by transformers' own converters (:mod:`.streaming_experts`).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import torch
from torch import nn

from successor_heads.core.memory import weights_bytes
from successor_heads.core.streaming_experts import Conversion, conversions

#: Attribute a streamed transformers model carries: its :class:`StreamedModel`.
STREAM_ATTR = "_successor_heads_stream"


class CheckpointTensors:
    """The tensors of a transformers folder's safetensors files, read lazily by name.

    The name -> file map comes from ``model.safetensors.index.json`` when the folder is sharded,
    else from the headers of its ``*.safetensors`` files; files are memory-mapped
    (``safetensors.safe_open``), so reading one tensor reads only its bytes.

    Args:
        folder: a transformers folder holding ``*.safetensors`` weights.

    Attributes:
        files: tensor name -> file path. ``reads``: names read so far, in order (tests check
            that only the needed tensors are read).

    Raises:
        FileNotFoundError: the folder has no safetensors weights (one line saying so).
    """

    def __init__(self, folder: str | Path):
        from safetensors import safe_open

        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: self.folder / f for name, f in weight_map.items()}
        else:
            self.files = {}
            for path in sorted(self.folder.glob("*.safetensors")):
                with safe_open(str(path), "pt") as f:
                    self.files.update({k: path for k in f.keys()})
        if not self.files:
            raise FileNotFoundError(f"{self.folder}: no safetensors weights to stream (fetch the model first)")
        self.reads: list[str] = []

    def shapes(self) -> dict[str, list[int]]:
        """Every tensor's shape, from the file headers (no tensor data is read)."""
        from safetensors import safe_open

        out: dict[str, list[int]] = {}
        by_file: dict[Path, list[str]] = defaultdict(list)
        for name, path in self.files.items():
            by_file[path].append(name)
        for path, names in by_file.items():
            with safe_open(str(path), "pt") as f:
                out.update({n: list(f.get_slice(n).get_shape()) for n in names})
        return out

    def n_params(self) -> int:
        """The parameter count: elements of every stored tensor (tied tensors are stored once)."""
        return sum(math.prod(s) for s in self.shapes().values())

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name`` as stored (its own dtype), read from its file.

        The file is opened for this read only: an open file stays memory-mapped, and every page
        read through it so far stays counted in the process's resident memory after the tensors
        are freed (5.6 GB in the weights-only scores of a 13B model, benchmarks/bench_streaming.py).

        Raises:
            KeyError: no such tensor in the checkpoint.
        """
        from safetensors import safe_open

        path = self.files[name]
        self.reads.append(name)
        with safe_open(str(path), "pt") as f:
            return f.get_tensor(name)


class StreamedModel:
    """A transformers causal LM on the meta device whose weights come from disk on demand (module docstring).

    Args:
        model_dir: transformers folder (``config.json`` and safetensors weights).
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``: the run's dtype; stored tensors are
            cast to it as they are read, as ``from_pretrained(dtype=...)`` does.
        device: where loaded weights go (``"cpu"``, ``"cuda"``, ...).

    Attributes:
        model: the transformers model (eval mode, eager attention, ``requires_grad`` off); it
            carries this object as attribute :data:`STREAM_ATTR`.
        tensors: its :class:`CheckpointTensors`.
        device, dtype: as given (torch objects).

    Raises:
        FileNotFoundError: no safetensors weights in ``model_dir``.
        ValueError: a parameter of the model has no tensor in the checkpoint (names it).
    """

    def __init__(self, model_dir: str | Path, dtype: str = "float32", device: str = "cpu"):
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        self.dtype = getattr(torch, dtype)
        self.device = torch.device(device)
        self.tensors = CheckpointTensors(model_dir)
        config = AutoConfig.from_pretrained(str(model_dir))
        with init_empty_weights(include_buffers=False):
            model = AutoModelForCausalLM.from_config(config, dtype=self.dtype, attn_implementation="eager")
        model.tie_weights()  # from_config under init_empty_weights leaves tied embeddings apart
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self._module_name = {id(m): n for n, m in model.named_modules()}
        self._converted = conversions(model, self.tensors.files)  # fused experts: built from per-expert tensors
        self._source = checkpoint_names(model, self.tensors, self._converted)
        self.loaded_now: set[str] = set()
        setattr(model, STREAM_ATTR, self)

    def _params_of(self, module: nn.Module) -> list[str]:
        """Full parameter names of ``module`` (a module of the model, or a container of them,
        e.g. the adapter's ``nn.Sequential`` of OPT's MLP parts)."""
        name = self._module_name.get(id(module))
        if name is None:
            return [n for child in module.children() for n in self._params_of(child)]
        return [f"{name}.{p}" if name else p for p, _ in module.named_parameters()]

    def load(self, modules: Iterable[nn.Module | None]) -> list[str]:
        """Read the weights of ``modules`` (None entries skipped) that are not in memory yet.

        Returns:
            the parameter names this call materialised (pass them to :meth:`free`).
        """
        from accelerate.utils import set_module_tensor_to_device

        done = []
        for module in modules:
            if module is None:
                continue
            for name in self._params_of(module):
                if name in self.loaded_now:
                    continue
                conv = self._converted.get(name)
                values = (conv.build(self.tensors.get, self.model) if conv is not None
                          else {name: self.tensors.get(self._source[name])})
                for target, value in values.items():
                    if target not in self.loaded_now:
                        set_module_tensor_to_device(self.model, target, self.device, value=value, dtype=self.dtype)
                        self.loaded_now.add(target)
                        done.append(target)
        return done

    def sources_of(self, name: str) -> list[str]:
        """The checkpoint tensor names parameter ``name`` is read from (several for fused experts)."""
        conv = self._converted.get(name)
        return conv.names() if conv is not None else [self._source[name]]

    def free(self, names: Iterable[str]) -> None:
        """Put parameters ``names`` back on the meta device (their memory is released)."""
        from accelerate.utils import set_module_tensor_to_device

        for name in names:
            if name in self.loaded_now:
                set_module_tensor_to_device(self.model, name, "meta")
                self.loaded_now.discard(name)

    @contextlib.contextmanager
    def resident(self, modules: Iterable[nn.Module | None]) -> Iterator[None]:
        """``modules``' weights in memory inside the block; those this block read are freed on exit."""
        names = self.load(modules)
        try:
            yield
        finally:
            self.free(names)

    def attach_hooks(self, layers: nn.ModuleList) -> None:
        """Load each of ``layers`` (the decoder layers), and every module with parameters of its
        own outside them (embeddings, final norm, unembedding), just before its forward call and
        free it just after. Weights made resident by :meth:`resident` are left in place."""
        in_layers = {id(m) for layer in layers for m in layer.modules()}
        targets = list(layers) + [m for m in self.model.modules()
                                  if id(m) not in in_layers and next(m.parameters(recurse=False), None) is not None]
        for module in targets:
            loaded: list[list[str]] = []

            def pre(mod, _args, loaded=loaded):
                loaded.append(self.load([mod]))

            def post(_mod, _args, _out, loaded=loaded):
                self.free(loaded.pop())

            module.register_forward_pre_hook(pre)
            module.register_forward_hook(post)
        # after the loading hooks: torch's linear map on meta weights returns garbage, not an error
        for module in self.model.modules():
            if next(module.parameters(recurse=False), None) is not None:
                module.register_forward_pre_hook(self._refuse_unloaded)

    def _refuse_unloaded(self, module: nn.Module, _args) -> None:
        if any(p.is_meta for p in module.parameters(recurse=False)):
            raise RuntimeError(f"{self._module_name.get(id(module))} of a streamed model was called with its weights "
                               "still on disk; read them first (core.streaming.resident(model, module))")


def checkpoint_names(model: nn.Module, tensors: CheckpointTensors,
                     converted: Mapping[str, Conversion] | None = None) -> dict[str, str]:
    """Each parameter of ``model`` read as stored -> the name of its tensor in the checkpoint (ours).

    The model's own parameter names (its module paths), matched to the checkpoint's after
    transformers' checkpoint renamings for the model class, with or without the base model's
    prefix; tied parameters (a tied unembedding) resolve to the one tensor stored.

    Args:
        converted: the parameters transformers builds from several checkpoint tensors
            (:func:`successor_heads.core.streaming_experts.conversions`; computed when None):
            left out of the map.

    Raises:
        ValueError: a parameter has neither a tensor in the checkpoint nor a conversion (names
            up to five; says to re-fetch).
    """
    if converted is None:
        converted = conversions(model, tensors.files)
    prefix = getattr(model, "base_model_prefix", "") or ""
    tied: dict[int, list[str]] = defaultdict(list)
    for name, p in model.named_parameters(remove_duplicate=False):
        tied[id(p)].append(name)
    # the checkpoint's names as the model calls them: transformers' own renamings (GPT-NeoX's
    # embed_out -> lm_head, old LayerNorm gamma/beta, ...), applied as from_pretrained does
    as_model = {_renamed(key, model): key for key in tensors.files}

    def stored(name: str) -> str | None:
        candidates = [name]
        if prefix and name.startswith(prefix + "."):
            candidates.append(name[len(prefix) + 1:])
        elif prefix:
            candidates.append(f"{prefix}.{name}")
        return next((as_model[c] for c in candidates if c in as_model), None)

    out, missing = {}, []
    for names in tied.values():
        if names[0] in converted:
            continue
        src = next((s for s in map(stored, names) if s is not None), None)
        if src is None:
            missing.append(names[0])
        out.update({n: src for n in names})
    if missing:
        raise ValueError(f"{tensors.folder}: the checkpoint has no tensor for {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}; re-fetch the model")
    return out


def _renamed(key: str, model: nn.Module) -> str:
    """Checkpoint tensor name ``key`` under the model's naming: transformers' checkpoint renamings
    for this model class (``transformers.conversion_mapping``) applied in order."""
    import re

    from transformers.conversion_mapping import WeightRenaming, get_model_conversion_mapping

    cache = model.__dict__.setdefault("_successor_heads_renamings", [])
    if not cache:
        for r in get_model_conversion_mapping(model):
            if isinstance(r, WeightRenaming):
                targets = list(r.target_patterns)
                for i, src in enumerate(r.source_patterns):
                    cache.append((re.compile(src), targets[min(i, len(targets) - 1)]))
        cache.append((None, None))  # built: an empty mapping is still built
    for pattern, target in cache:
        if pattern is not None:
            key = pattern.sub(target, key)
    return key


def weight_bytes(model_dir: str | Path, dtype: str) -> int:
    """Bytes the weights of ``model_dir`` take at ``dtype`` (``"float32"``, ...): the parameter count
    from the safetensors headers times the dtype's size. Raises FileNotFoundError without safetensors."""
    return weights_bytes(CheckpointTensors(model_dir).n_params(), dtype)


def memory_used(model: nn.Module) -> str:
    """``"streamed"`` for a model streamed from disk, else ``"in_memory"``: what outputs record."""
    return "streamed" if streamed_of(model) is not None else "in_memory"


def streamed_of(model: nn.Module) -> StreamedModel | None:
    """The :class:`StreamedModel` behind ``model``, or None for a model held in memory."""
    return getattr(model, STREAM_ATTR, None)


def hold(model: nn.Module, *modules: nn.Module | None) -> None:
    """Read ``modules``' weights into memory for the rest of the model's life (a no-op for a model
    held in memory): for a stage that reads one head's circuit and the unembedding many times and
    runs no forward pass (the features stage). Ours."""
    stream = streamed_of(model)
    if stream is not None:
        stream.load(modules)


def head_circuit(adapter, layer: int) -> list[nn.Module | None]:
    """The modules the weights-only OV circuit of ``layer`` reads (paper Section 2): the attention
    input norm, the value and output projections and the post-attention norm (None where the
    family has none). ``adapter``: the model's :class:`~successor_heads.core.adapters.Adapter`. Ours."""
    return [adapter.attn_in_norm(layer), adapter.v_proj(layer), adapter.o_proj(layer), adapter.attn_out_norm(layer)]


def readout_modules(adapter) -> list[nn.Module | None]:
    """The modules between the residual stream and the logits: the final norm and the unembedding
    (``W_U``, and ``b_U`` where the family has one). Ours."""
    return [adapter.final_norm(), adapter.model.get_output_embeddings()]


def mlp0_circuit(adapter) -> list[nn.Module | None]:
    """The modules of the paper's effective embedding ``MLP0(W_E[t])`` (Section 2): the token
    embedding and its norm (BLOOM), and layer 0's MLP with its input and output norms and the dense
    MLP beside its experts (Granite-MoE-Shared). Ours."""
    return [adapter.model.get_input_embeddings(), adapter.embed_norm(), adapter.mlp_in_norm(0), adapter.mlp(0),
            adapter.shared_mlp(0), adapter.mlp_out_norm(0)]


def sequence_mb(adapter, n_pos: int, logits: bool = False) -> float:
    """Rough float32 activations (MB) of one sequence of ``n_pos`` tokens inside a decoder layer
    (eager attention's scores and probabilities ``[n_heads, n_pos, n_pos]`` twice, and about eight
    ``d_model`` vectors per position), plus its logits ``[n_pos, d_vocab]`` when ``logits``: the
    ``item_mb`` of :func:`pass_size`. Ours."""
    d = adapter.dims
    per_pos = 2 * d.n_heads * n_pos + 8 * d.d_model + (2 * d.d_vocab if logits else 0)
    return n_pos * per_pos * 4 / 2**20


def pass_size(model: nn.Module, batch_size: int, n: int, item_mb: float = 0.0, max_mb: float = 2048) -> int:
    """Sequences per forward pass (ours): ``batch_size`` for a model held in memory; for a streamed
    one as many of the ``n`` as fit ``max_mb`` of per-pass activations (``item_mb`` each, e.g. one
    sequence's float32 logits; 0: all ``n``), never fewer than ``batch_size``, so each decoder
    layer is read from disk once per pass over the whole batch instead of once per small batch.

    Raises: ValueError for a ``batch_size`` below 1.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size}: must be at least 1")
    if streamed_of(model) is None:
        return int(batch_size)
    fit = int(max_mb // item_mb) if item_mb > 0 else n
    return max(int(batch_size), min(int(n), fit))


@contextlib.contextmanager
def resident(model: nn.Module, *modules: nn.Module | None) -> Iterator[None]:
    """Within the block, ``modules``' weights are in memory: a no-op for a model held in memory,
    a read from disk (freed on exit) for a streamed one (:meth:`StreamedModel.resident`).

    Args:
        model: the transformers model the modules belong to.
        modules: its modules (None entries, a norm the family lacks, are skipped).
    """
    stream = streamed_of(model)
    if stream is None:
        yield
        return
    with stream.resident(modules):
        yield
