"""Architecture-neutral view of a transformers causal LM's weights (DESIGN.md, Architecture facts).

An :class:`Adapter` yields, with the standard names and shapes,

* ``W_E`` ``[d_vocab, d_model]`` (the raw embedding table; :meth:`Adapter.embed` applies any
  embedding scale, e.g. Gemma3's sqrt(d_model)),
* ``W_U`` ``[d_model, d_vocab]`` and ``b_U`` ``[d_vocab]``,
* ``W_V`` ``[n_layers, n_heads, d_model, d_head]`` and ``b_V`` ``[n_layers, n_heads, d_head]``
  with grouped-query attention mapped (query head h reads KV head ``h // (n_heads // n_kv_heads)``),
* ``W_O`` ``[n_layers, n_heads, d_head, d_model]`` and ``b_O`` ``[n_layers, d_model]``,

and the model's own norm and MLP modules, so the effective OV circuit
``logits_h(t) = W_U · W_OV^h · x_t`` (paper, Section 2) can be computed with layer norms either
skipped (``norms="raw"``) or applied (``norms="applied"``). Subclasses (one per family) only
say where the weights live.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

NORM_OPTIONS = ("raw", "applied")


def _check_norms(norms: str) -> None:
    if norms not in NORM_OPTIONS:
        raise ValueError(f"norms={norms!r}: must be one of {NORM_OPTIONS}")


@dataclass(frozen=True)
class Dims:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int


class Adapter:
    """Base class; see module docstring. Construct through :func:`successor_heads.core.adapters.get_adapter`."""

    family: str = "?"
    #: GPT-NeoX/Pythia run attention and MLP in parallel: MLP0's input is the embedding alone.
    parallel_attn_mlp: bool = False

    def __init__(self, model: nn.Module):
        self.model = model
        self.cfg = model.config
        self.dims = self._dims()

    # --- what subclasses provide -------------------------------------------------------
    def _dims(self) -> Dims:
        c = self.cfg
        n_heads = c.num_attention_heads
        d_head = getattr(c, "head_dim", None) or c.hidden_size // n_heads
        return Dims(
            n_layers=c.num_hidden_layers,
            n_heads=n_heads,
            n_kv_heads=getattr(c, "num_key_value_heads", None) or n_heads,
            d_model=c.hidden_size,
            d_head=d_head,
            d_vocab=self.W_E.shape[0],
        )

    def layers(self) -> nn.ModuleList:
        raise NotImplementedError

    def attn(self, layer: int) -> nn.Module:
        """The attention module whose output is the sum of head outputs plus ``b_O``."""
        raise NotImplementedError

    def o_proj(self, layer: int) -> nn.Module:
        """The output projection; its input ``[batch, pos, n_heads * d_head]`` holds each head's ``z``."""
        raise NotImplementedError

    def attn_in_norm(self, layer: int) -> nn.Module:
        raise NotImplementedError

    def mlp_in_norm(self, layer: int) -> nn.Module:
        raise NotImplementedError

    def mlp(self, layer: int) -> nn.Module:
        raise NotImplementedError

    def attn_out_norm(self, layer: int) -> nn.Module | None:
        """Norm applied to the attention output before the residual add (Gemma3); else None."""
        return None

    def mlp_out_norm(self, layer: int) -> nn.Module | None:
        return None

    def final_norm(self) -> nn.Module:
        raise NotImplementedError

    def _v_weight(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W_V [n_kv_heads, d_model, d_head], b_V [n_kv_heads, d_head] | None)`` of one layer."""
        raise NotImplementedError

    def _o_weight(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W_O [n_heads, d_head, d_model], b_O [d_model] | None)`` of one layer."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.W_E.device

    @property
    def W_E(self) -> torch.Tensor:
        """``[d_vocab, d_model]`` raw embedding table."""
        return self.model.get_input_embeddings().weight

    @property
    def W_U(self) -> torch.Tensor:
        """``[d_model, d_vocab]`` unembedding (W_E transposed when embeddings are tied)."""
        return self.model.get_output_embeddings().weight.T

    @property
    def b_U(self) -> torch.Tensor | None:
        return getattr(self.model.get_output_embeddings(), "bias", None)

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings as the model's first layer sees them (scale included, no positions).

        ``token_ids [...]`` -> ``[..., d_model]``.
        """
        return self.model.get_input_embeddings()(token_ids.to(self.device))

    def W_V_layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_V [n_heads, d_model, d_head], b_V [n_heads, d_head])`` for one layer, GQA expanded."""
        W, b = self._v_weight(layer)
        if b is None:
            b = torch.zeros(W.shape[0], W.shape[2], dtype=W.dtype, device=W.device)
        group = self.dims.n_heads // self.dims.n_kv_heads
        if group > 1:
            W = W.repeat_interleave(group, dim=0)
            b = b.repeat_interleave(group, dim=0)
        return W, b

    def W_O_layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_O [n_heads, d_head, d_model], b_O [d_model])`` for one layer."""
        W, b = self._o_weight(layer)
        if b is None:
            b = torch.zeros(W.shape[-1], dtype=W.dtype, device=W.device)
        return W, b

    @property
    def W_V(self) -> torch.Tensor:
        """``[n_layers, n_heads, d_model, d_head]``."""
        return torch.stack([self.W_V_layer(i)[0] for i in range(self.dims.n_layers)])

    @property
    def b_V(self) -> torch.Tensor:
        """``[n_layers, n_heads, d_head]``."""
        return torch.stack([self.W_V_layer(i)[1] for i in range(self.dims.n_layers)])

    @property
    def W_O(self) -> torch.Tensor:
        """``[n_layers, n_heads, d_head, d_model]``."""
        return torch.stack([self.W_O_layer(i)[0] for i in range(self.dims.n_layers)])

    @property
    def b_O(self) -> torch.Tensor:
        """``[n_layers, d_model]``."""
        return torch.stack([self.W_O_layer(i)[1] for i in range(self.dims.n_layers)])

    def mlp0(self, x: torch.Tensor, norms: str = "raw") -> torch.Tensor:
        """MLP0's output for residual input ``x [..., d_model]`` -> float32 ``[..., d_model]``.

        ``norms="applied"`` runs layer 0's MLP input norm first (and Gemma3's post-MLP norm
        after); ``"raw"`` feeds ``x`` straight in. Source: the paper's effective embedding
        ``MLP0(W_E[t])`` (Section 2).
        """
        _check_norms(norms)
        x = x.to(self.device, torch.float32)
        h = self.run_f32(self.mlp_in_norm(0), x) if norms == "applied" else x
        out = self.run_f32(self.mlp(0), h)
        post = self.mlp_out_norm(0)
        if norms == "applied" and post is not None:
            out = self.run_f32(post, out)
        return out

    def ov(self, layer: int, x: torch.Tensor, norms: str = "raw", heads: torch.Tensor | None = None,
           value_bias: bool = False, input_norm: bool | None = None) -> torch.Tensor:
        """Each head's OV output for residual input ``x [n_tokens, d_model]``, in float32.

        Returns ``[n_heads, n_tokens, d_model]`` (or ``[len(heads), ...]``): ``norm(x) W_V^h W_O^h``,
        i.e. the head's output when it attends fully to a position holding ``x`` (paper Section 2:
        ``W_OV^h = W_V^h W_O^h``, no bias). ``value_bias=True`` adds ``b_V^h W_O^h`` (the same vector
        for every input; not the paper's circuit, option ``scores.value_bias``). ``b_O`` is shared by
        all heads and always left out. ``input_norm`` (default: ``norms == "applied"``) runs the
        layer's attention input norm on ``x`` first; with ``norms="applied"`` Gemma3's
        post-attention norm is applied to each head's output. The weights are cast to float32
        whatever dtype the model holds, so near-ties are not decided by bf16 rounding.
        See docs/METHOD.md, "Norm conventions". Raises: ValueError for an unknown ``norms``.
        """
        _check_norms(norms)
        input_norm = norms == "applied" if input_norm is None else input_norm
        W_V, b_V = self.W_V_layer(layer)
        W_O, _ = self.W_O_layer(layer)
        if heads is not None:
            W_V, b_V, W_O = W_V[heads], b_V[heads], W_O[heads]
        W_V, b_V, W_O = W_V.float(), b_V.float(), W_O.float()
        x = x.to(self.device, torch.float32)
        h = self.run_f32(self.attn_in_norm(layer), x) if input_norm else x
        v_HTD = torch.einsum("tm,hmd->htd", h, W_V)
        if value_bias:
            v_HTD = v_HTD + b_V[:, None, :]
        out_HTM = torch.einsum("htd,hdm->htm", v_HTD, W_O)
        post = self.attn_out_norm(layer)
        if norms == "applied" and post is not None:
            out_HTM = self.run_f32(post, out_HTM)
        return out_HTM

    def run_f32(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``module(x)`` computed in float32: ``x [..., d_model]`` -> float32 ``[..., d_model]``.

        Norms and MLP0 of a half-precision model run on a float32 copy of the module (made once
        and kept), so weight-based quantities do not depend on the dtype the model was loaded in.
        """
        p = next(module.parameters(), None)
        if p is not None and p.dtype != torch.float32:
            cache = self.__dict__.setdefault("_f32_modules", {})
            if id(module) not in cache:
                import copy
                cache[id(module)] = copy.deepcopy(module).float()
            module = cache[id(module)]
        return module(x.to(self.device, torch.float32)).float()

    def unembed(self, x: torch.Tensor, norms: str = "raw", token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 logits for residual vectors ``x [..., d_model]`` -> ``[..., d_vocab]`` (or ``[..., len(token_ids)]``).

        ``norms="applied"`` runs the final norm first. Gemma's final logit soft-cap is monotone,
        so it is left out (it cannot change which token is largest).
        """
        W_U, b_U = self.unembed_columns(token_ids)
        out = self.unembed_input(x, norms) @ W_U.float()
        return out if b_U is None else out + b_U.float()

    def unembed_input(self, x: torch.Tensor, norms: str = "raw") -> torch.Tensor:
        """What the unembedding multiplies: ``x [..., d_model]`` as float32, final-normed when ``norms="applied"``
        (the ``W_U`` end of the effective OV circuit, paper Section 2). Raises: ValueError for an
        unknown ``norms``."""
        _check_norms(norms)
        return self.run_f32(self.final_norm(), x) if norms == "applied" else x.float()

    def unembed_columns(self, token_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W_U [d_model, n], b_U [n] or None)`` (the model's dtype) for ``token_ids [n]`` (all of ``d_vocab`` when None),
        gathered once so that callers scoring many heads against the same tokens reuse them
        (paper Section 2, effective OV circuit). Raises: IndexError for an id outside ``d_vocab``."""
        if token_ids is None:
            return self.W_U, self.b_U
        ids = torch.as_tensor(token_ids, dtype=torch.long).to(self.device)
        b = self.b_U
        return self.W_U[:, ids], None if b is None else b[ids]

    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
