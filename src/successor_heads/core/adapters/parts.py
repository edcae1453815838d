"""Small pieces the generic :class:`~successor_heads.core.adapters.adapter.Adapter` is built
from (docs/DESIGN.md, "Architecture facts"): a model's sizes, module lookup by the dotted paths of
a :class:`~successor_heads.core.adapters.spec.FamilySpec`, and per-layer weights stacked over layers."""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

import torch
from torch import nn

from successor_heads.core import NORMS as NORM_OPTIONS


def check_norms(norms: str) -> None:
    """Raise ValueError unless ``norms`` is one of :data:`successor_heads.core.NORMS`."""
    if norms not in NORM_OPTIONS:
        raise ValueError(f"norms={norms!r}: must be one of {NORM_OPTIONS}")


def module_at(root: nn.Module, path: str | None) -> nn.Module | None:
    """The submodule at dotted ``path`` below ``root`` (None for a norm the family lacks)."""
    return None if path is None else attrgetter(path)(root)


def stacked(per_layer: str, part: int, doc: str) -> property:
    """A property stacking part ``part`` of method ``per_layer``'s result over all layers."""
    def get(self) -> torch.Tensor:
        return torch.stack([getattr(self, per_layer)(i)[part] for i in range(self.dims.n_layers)])
    return property(get, doc=doc)


@dataclass(frozen=True)
class Dims:
    """A model's sizes: ``n_layers``, ``n_heads`` (query heads), ``n_kv_heads`` (key/value heads,
    fewer under grouped-query attention), ``d_model``, ``d_head``, ``d_vocab``."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int
