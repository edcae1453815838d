"""The mixture-of-experts parts of a model's first MLP (docs/DESIGN.md, "Architecture facts"): the
router of a layer's MoE block (``FamilySpec.moe_router``), the dense MLP beside it
(``FamilySpec.shared_mlp``, Granite-MoE-Shared) and the experts the router picks for each token of
the ``mlp0`` effective embedding. A base of :class:`~successor_heads.core.adapters.adapter.Adapter`,
which provides ``spec``, ``dims``, ``device``, ``mlp``, ``mlp_in_norm``, ``run_f32`` and ``_part``."""

from __future__ import annotations

import torch
from torch import nn

from .parts import check_norms as _check_norms, module_at as _module


class Experts:
    """A layer's router and shared MLP, and layer 0's routing of the ``mlp0`` inputs."""

    def shared_mlp(self, layer: int) -> nn.Module | None:
        """The dense MLP beside layer ``layer``'s mixture of experts (``FamilySpec.shared_mlp``,
        Granite-MoE-Shared), or None (none declared, or the checkpoint has none)."""
        return self._part(layer, self.spec.shared_mlp)

    def router(self, layer: int) -> nn.Module | None:
        """The router of layer ``layer``'s mixture-of-experts MLP, or None (a dense family or a
        dense layer of an MoE model)."""
        path = self.spec.moe_router
        if path is None:
            return None
        try:
            return _module(self.mlp(layer), path)
        except AttributeError:
            return None

    @torch.no_grad()
    def mlp0_experts(self, x: torch.Tensor, norms: str = "raw") -> torch.Tensor | None:
        """The experts layer 0's router picks for each input of :meth:`mlp0` (ours: the record of
        which experts make a token's ``mlp0`` effective embedding in a mixture-of-experts model).

        Args:
            x: ``[n_tokens, d_model]`` residual vectors (the token embeddings).
            norms: as in :meth:`mlp0` (``"applied"`` routes the normed input, as the model does).

        Returns:
            long ``[n_tokens, top_k]`` expert indices in the router's order, or None where layer
            0's MLP is dense.

        Raises:
            ValueError: ``norms`` is not one of :data:`NORM_OPTIONS`.
        """
        _check_norms(norms)
        router = self.router(0)
        if router is None:
            return None
        x = x.to(self.device, torch.float32).reshape(-1, self.dims.d_model)
        h = self.run_f32(self.mlp_in_norm(0), x) if norms == "applied" else x
        return router(h.to(next(router.parameters()).dtype))[-1].long()
