"""The per-head value and output weights of a model (paper Section 2: ``W_V^h``, ``W_O^h``), read
through its family's declared q/k/v layout (:class:`~successor_heads.core.adapters.spec.FamilySpec`
``qkv``; docs/DESIGN.md, "Architecture facts"). A base of
:class:`~successor_heads.core.adapters.adapter.Adapter`, which provides ``spec``, ``dims``,
``v_proj``, ``o_proj`` and ``residual_multiplier``."""

from __future__ import annotations

import torch
from torch import nn

from .parts import stacked as _stacked


class HeadWeights:
    """``W_V``, ``b_V``, ``W_O``, ``b_O`` per layer and stacked over layers."""

    def _out_in(self, module: nn.Module) -> torch.Tensor:
        """``module``'s weight as ``[d_out, d_in]`` (a view)."""
        return module.weight.T if self.spec.weights_in_out else module.weight

    def v_rows(self) -> torch.Tensor:
        """``[n_kv_heads, d_head]`` long: which output rows of :meth:`v_proj` (as ``[d_out, d_in]``)
        hold each key/value head's value weights, for the family's ``FamilySpec.qkv`` layout."""
        d, qkv = self.dims, self.spec.qkv
        k, dh, j = d.n_kv_heads, d.d_head, torch.arange(d.d_head)
        kv = torch.arange(k)[:, None]
        if qkv == "separate":
            return kv * dh + j
        if qkv == "fused":
            return (d.n_heads + k) * dh + kv * dh + j
        if qkv == "fused_per_head":  # [n_heads, 3, d_head]; n_kv_heads == n_heads
            return kv * 3 * dh + 2 * dh + j
        if qkv == "fused_grouped":  # [n_kv, group + 2, d_head]: the group's queries, k, v
            group = d.n_heads // k
            return kv * (group + 2) * dh + (group + 1) * dh + j
        # fused_codegen: [4, 3 (q, v, k), local]; value row r of the [n_heads * d_head] value
        # vector sits in block r // local at offset r % local
        local = d.n_heads * dh // 4
        r = kv * dh + j
        return (r // local) * 3 * local + local + r % local

    def _v_weight(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W_V [n_kv_heads, d_model, d_head], b_V [n_kv_heads, d_head] | None)`` of one layer."""
        proj = self.v_proj(layer)
        W, b = self._out_in(proj), proj.bias
        if self.spec.qkv == "separate":  # the value rows are the whole projection: a view, not a copy
            k, dh = self.dims.n_kv_heads, self.dims.d_head
            return W[: k * dh].reshape(k, dh, -1).transpose(1, 2), None if b is None else b[: k * dh].reshape(k, dh)
        rows = self.v_rows().to(W.device)
        return W[rows].transpose(1, 2), None if b is None else b[rows]

    def W_V_layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer's value weights, grouped-query heads expanded (paper Section 2, ``W_V^h``).

        Args:
            layer: layer index in ``[0, n_layers)``.

        Returns:
            ``(W_V [n_heads, d_model, d_head], b_V [n_heads, d_head])`` in the model's dtype;
            ``b_V`` is zeros when the family has no value bias.
        """
        W, b = self._v_weight(layer)
        if b is None:
            b = torch.zeros(W.shape[0], W.shape[2], dtype=W.dtype, device=W.device)
        group = self.dims.n_heads // self.dims.n_kv_heads
        if group > 1:
            W = W.repeat_interleave(group, dim=0)
            b = b.repeat_interleave(group, dim=0)
        return W, b

    def W_O_layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer's output weights (paper Section 2, ``W_O^h``).

        Args:
            layer: layer index in ``[0, n_layers)``.

        Returns:
            ``(W_O [n_heads, d_head, d_model], b_O [d_model])`` in the model's dtype, times the
            family's residual multiplier (Granite; ``Adapter.residual_multiplier``); ``b_O`` is
            zeros when the family has no output bias.
        """
        proj, d = self.o_proj(layer), self.dims
        # As [d_in, d_out]: the input side is n_heads blocks of d_head, head-major.
        W, b = self._out_in(proj).T.reshape(d.n_heads, d.d_head, -1), proj.bias
        if b is None:
            b = torch.zeros(W.shape[-1], dtype=W.dtype, device=W.device)
        r = self.residual_multiplier  # Granite: the layer scales the attention output before the add
        return (W, b) if r == 1.0 else (W * r, b * r)

    # Every layer's weights at once, stacked on a leading n_layers axis.
    W_V = _stacked("W_V_layer", 0, "``[n_layers, n_heads, d_model, d_head]`` (:meth:`W_V_layer` of every layer).")
    b_V = _stacked("W_V_layer", 1, "``[n_layers, n_heads, d_head]``.")
    W_O = _stacked("W_O_layer", 0, "``[n_layers, n_heads, d_head, d_model]`` (:meth:`W_O_layer` of every layer).")
    b_O = _stacked("W_O_layer", 1, "``[n_layers, d_model]``.")
