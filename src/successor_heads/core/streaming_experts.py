"""Parameters that transformers builds from several checkpoint tensors while loading, built the
same way for a streamed model (docs/DESIGN.md, "Large models").

transformers 5 holds the experts of a mixture-of-experts layer (Mixtral, OLMoE, Qwen2-MoE,
Qwen3-MoE, PhiMoE, Jamba) as fused 3-D parameters, e.g. ``mlp.experts.gate_up_proj``
``[n_experts, 2 * d_mlp, d_model]``, while their checkpoints store one tensor per expert
(``...experts.0.w1.weight``, ...). ``from_pretrained`` matches the checkpoint names to the
``WeightConverter`` entries of ``transformers.conversion_mapping.get_model_conversion_mapping``
(``transformers.core_model_loading.rename_source_key``), collects each target parameter's
tensors in natural name order and applies the converter's operations (``MergeModulelist``,
``Concatenate``, ...) through ``WeightConverter.convert``. :func:`conversions` does that
matching once per model, from the checkpoint's names only; :meth:`Conversion.build` hands one
parameter's tensors to a copy of the converter and returns what its ``convert`` makes, so a
streamed decoder layer reads, converts and frees only its own experts. The glue (the grouping
below) is ours because transformers does it only inside ``convert_and_load_state_dict_in_model``,
for a whole state dict at once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable

import torch
from torch import nn


@dataclass
class Conversion:
    """The checkpoint tensors one transformers ``WeightConverter`` turns into model parameters.

    Attributes:
        converter: the conversion mapping's entry (a template: each :meth:`build` converts with a
            copy, as ``from_pretrained`` does, because a converter collects tensors in place).
        first: the first parameter it makes (transformers' ``layer_name``, full model name).
        targets: every parameter it makes (full model names; one for the expert converters).
        sources: source pattern -> checkpoint tensor names, in the order transformers loads them
            (natural order: expert 10 after expert 9).
    """

    converter: object
    first: str
    targets: list[str]
    sources: dict[str, list[str]] = field(default_factory=dict)

    def names(self) -> list[str]:
        """Every checkpoint tensor name it reads."""
        return [k for keys in self.sources.values() for k in keys]

    def build(self, get: Callable[[str], torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """The parameters, made from the tensors ``get(name)`` returns by the converter's operations.

        Args:
            get: checkpoint tensor name -> tensor (e.g. ``CheckpointTensors.get``; tensors on the
                meta device give the shapes without reading any data).
            model: the model the parameters belong to (passed to the operations as transformers does).

        Returns:
            full parameter name -> tensor, e.g. ``{"model.layers.0.mlp.experts.gate_up_proj":
            [n_experts, 2 * d_mlp, d_model]}``, in the tensors' stored dtype.

        Raises:
            ValueError: the operations fail (e.g. experts of different shapes); one line naming
                the parameter.
        """
        conv = copy.deepcopy(self.converter)
        for pattern, keys in self.sources.items():
            for key in keys:
                # a callable is read when the converter materialises its tensors (transformers' sync path)
                conv.add_tensor(self.first, key, pattern, partial(get, key))
        try:
            out = conv.convert(self.first, model=model, config=model.config)
        except Exception as e:  # noqa: BLE001 - the operations raise torch's errors
            raise ValueError(f"{self.first}: transformers' {type(self.converter).__name__} could not build it "
                             f"from {len(self.names())} checkpoint tensors ({e}); re-fetch the model") from e
        return {k: (v[0] if isinstance(v, list) else v) for k, v in out.items()}


def conversions(model: nn.Module, keys: Iterable[str]) -> dict[str, Conversion]:
    """Each parameter of ``model`` that transformers builds from checkpoint tensors ``keys``
    through a ``WeightConverter`` -> its :class:`Conversion` (one object per converter use).

    Args:
        model: a transformers model (parameters may be on the meta device).
        keys: the checkpoint's tensor names.

    Returns:
        parameter name -> :class:`Conversion`; empty for a model without converters (dense
        families, and gpt-oss and Granite-MoE, whose checkpoints store experts fused).
    """
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import (WeightConverter, WeightRenaming, dot_natural_key,
                                                 rename_source_key)

    mapping = get_model_conversion_mapping(model)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    if not converters:
        return {}
    by_pattern = {p: c for c in converters for p in c.source_patterns}
    params = dict(model.state_dict(keep_vars=True))
    groups: dict[str, Conversion] = {}
    for key in sorted(keys, key=dot_natural_key):  # the order from_pretrained collects them in
        renamed, pattern = rename_source_key(key, renamings, converters, model.base_model_prefix, params)
        if pattern is None or renamed not in params:
            continue
        conv = by_pattern[pattern]
        group = groups.get(renamed)
        if group is None:
            targets = [renamed.replace(conv.target_patterns[0], t) for t in conv.target_patterns]
            group = groups[renamed] = Conversion(conv, renamed, targets)
        group.sources.setdefault(pattern, []).append(key)
    return {t: g for g in groups.values() for t in g.targets}
