"""Architecture-neutral view of a transformers causal LM's weights (docs/DESIGN.md, Architecture facts).

An :class:`Adapter` reads its family's :class:`~successor_heads.core.adapters.spec.FamilySpec`
and yields, with the standard names and shapes,

* ``W_E`` ``[d_vocab, d_model]`` (the raw embedding table; :meth:`Adapter.embed` applies any
  embedding scale, e.g. Gemma3's sqrt(d_model)),
* ``W_U`` ``[d_model, d_vocab]`` and ``b_U`` ``[d_vocab]``,
* ``W_V`` ``[n_layers, n_heads, d_model, d_head]`` and ``b_V`` ``[n_layers, n_heads, d_head]``
  with grouped-query attention mapped (query head h reads KV head ``h // (n_heads // n_kv_heads)``),
* ``W_O`` ``[n_layers, n_heads, d_head, d_model]`` and ``b_O`` ``[n_layers, d_model]`` (times
  Granite's residual multiplier: a head's output as it reaches the residual stream),

and the model's own norm and MLP modules, so the effective OV circuit
``logits_h(t) = W_U · W_OV^h · x_t`` (paper, Section 2) can be computed with layer norms either
skipped (``norms="raw"``) or applied (``norms="applied"``). No family has code of its own: what
differs is declared in :data:`~successor_heads.core.adapters.families.FAMILIES`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from successor_heads.core import NORMS as NORM_OPTIONS
from successor_heads.core.streaming import streamed_of

from .experts import Experts
from .head_weights import HeadWeights
from .readout import Readout
from .parts import Dims, check_norms as _check_norms, module_at as _module
from .spec import FamilySpec


class Adapter(HeadWeights, Experts, Readout):
    """One transformers causal LM seen through its family's spec (module docstring).

    Construct through :func:`successor_heads.core.adapters.get_adapter`, which picks the spec
    from ``model.config.model_type``.

    Args:
        model: the transformers causal LM (any dtype, any device).
        spec: its family's declared architecture facts.

    Attributes:
        model, cfg: the model and its config.
        spec: the :class:`FamilySpec`; ``family``: its name (``"gpt2"``, ``"gemma3"``, ...).
        parallel_attn_mlp: attention and MLP read the same residual (GPT-NeoX/Pythia): MLP0's
            input is the embedding alone.
        dims: the model's :class:`Dims`.
        attention_layers: the decoder-layer index of each of the adapter's ``n_layers`` layers
            (``range(num_hidden_layers)`` except for a hybrid, whose adapter sees its attention
            layers only: layer ``k`` is decoder layer ``attention_layers[k]``).
        is_hybrid: some decoder layers are not attention layers (``FamilySpec.attention_layers``).

    Layer indices: the attention accessors (:meth:`attn`, :meth:`v_proj`, :meth:`o_proj`,
    :meth:`attn_out`, :meth:`attn_in_norm`, :meth:`attn_out_norm`, ``W_V``, ``W_O``, :meth:`ov`)
    take the adapter's layer ``k``; the MLP accessors (:meth:`mlp`, :meth:`mlp_in_norm`,
    :meth:`mlp_out`, :meth:`mlp_out_norm`, ``shared_mlp``, ``router``) and :meth:`layers` take
    decoder-layer indices, so ``mlp(0)`` is the first decoder layer's MLP (the paper's MLP0) in a
    hybrid too. The two agree for every model that is not a hybrid.
    """

    def __init__(self, model: nn.Module, spec: FamilySpec):
        self.model = model
        self.cfg = model.config
        self.spec = spec
        self.family = spec.name
        flag, parallel = spec.parallel_flag, spec.parallel_attn_mlp
        self.parallel_attn_mlp = bool(getattr(self.cfg, flag, parallel)) if flag else parallel
        n_decoder = len(self.layers())
        pick = spec.attention_layers
        self.attention_layers = tuple(int(i) for i in pick(self.cfg)) if pick else tuple(range(n_decoder))
        self.is_hybrid = self.attention_layers != tuple(range(n_decoder))
        if not self.attention_layers:
            raise ValueError(f"this {spec.name} model has no attention layer: there are no heads to score")
        self.dims = self._dims()

    def _dims(self) -> Dims:
        c = self.cfg
        n_heads = c.num_attention_heads
        d_head = getattr(c, "head_dim", None) or c.hidden_size // n_heads
        n_kv = 1 if self.spec.multi_query else getattr(c, self.spec.kv_heads_attr, None) or n_heads
        return Dims(
            n_layers=len(self.attention_layers),
            n_heads=n_heads,
            n_kv_heads=n_kv,
            d_model=c.hidden_size,
            d_head=d_head,
            d_vocab=self.W_E.shape[0],
        )

    # --- the model's modules, where the spec says they are ------------------------------
    def layers(self) -> nn.ModuleList:
        """All the model's decoder layers (for a hybrid, more than ``n_layers``: see
        :attr:`attention_layers`)."""
        return _module(self.model, self.spec.layers)

    def hybrid_notice(self) -> str | None:
        """One line saying which decoder layers a hybrid's layers are, or None (ours)."""
        if not self.is_hybrid:
            return None
        return (f"{self.family} is a hybrid: only its {len(self.attention_layers)} attention layers are scored "
                f"(of {len(self.layers())} decoder layers); layer k means decoder layer attention_layers[k], "
                f"attention_layers={list(self.attention_layers)}")

    def final_norm(self) -> nn.Module:
        """The norm before the unembedding (``ln_f``, ``norm``, ...)."""
        return _module(self.model, self.spec.final_norm)

    def _part(self, layer: int, path: str | None) -> nn.Module | None:
        """A module of decoder layer ``layer`` (a decoder-layer index)."""
        return _module(self.layers()[layer], path)

    def _attn_part(self, layer: int, path: str | None) -> nn.Module | None:
        """A module of the adapter's layer ``layer`` (decoder layer ``attention_layers[layer]``)."""
        return _module(self.layers()[self.attention_layers[layer]], path)

    def attn(self, layer: int) -> nn.Module:
        """The attention module whose output is the sum of head outputs plus ``b_O``."""
        return self._attn_part(layer, self.spec.attn)

    def v_proj(self, layer: int) -> nn.Module:
        """The projection holding ``W_V`` (for fused q/k/v, the fused one; see ``FamilySpec.qkv``)."""
        return _module(self.attn(layer), self.spec.v_proj)

    def o_proj(self, layer: int) -> nn.Module:
        """The output projection; its input ``[batch, pos, n_heads * d_head]`` holds each head's ``z``."""
        return _module(self.attn(layer), self.spec.o_proj)

    def attn_out(self, layer: int) -> nn.Module:
        """The module of the model's forward pass whose output is the sum of head outputs plus
        ``b_O`` (before the residual multiplier and any post-attention norm): :meth:`attn`, or
        :meth:`o_proj` where the attention module also adds the residual (BLOOM)."""
        return self.o_proj(layer) if self.spec.residual_in_modules else self.attn(layer)

    def attn_in_norm(self, layer: int) -> nn.Module | None:
        """The norm on the residual stream before attention; None where the family has none
        (OLMo-2; :meth:`run_f32` reads None as the identity)."""
        return self._attn_part(layer, self.spec.attn_in_norm)

    def mlp_in_norm(self, layer: int) -> nn.Module | None:
        """The norm before the MLP (Gemma3: ``pre_feedforward_layernorm``); None where the family
        has none (OLMo-2)."""
        return self._part(layer, self.spec.mlp_in_norm)

    def mlp(self, layer: int) -> nn.Module:
        """The MLP module (layer 0's gives the effective embedding, :meth:`mlp0`).

        Where the family's MLP is several modules of the layer (``FamilySpec.mlp`` a tuple, OPT)
        this is an ``nn.Sequential`` of them, sharing their parameters, made once per layer; it
        is not called by the model's own forward pass, so hook :meth:`mlp_out` instead.
        """
        if isinstance(self.spec.mlp, str):
            return self._part(layer, self.spec.mlp)
        cache = self.__dict__.setdefault("_mlp_seq", {})
        if layer not in cache:
            cache[layer] = nn.Sequential(*[self._part(layer, p) for p in self.spec.mlp])
        return cache[layer]

    def mlp_out(self, layer: int) -> nn.Module:
        """The module of the model's forward pass whose output is the MLP's output (before any
        post-MLP norm): :meth:`mlp` itself, or the last of its parts (OPT's ``fc2``)."""
        mlp = self.mlp(layer)
        return mlp if isinstance(self.spec.mlp, str) else mlp[-1]

    def attn_out_norm(self, layer: int) -> nn.Module | None:
        """Norm applied to the attention output before the residual add (Gemma 2/3, OLMo-2); else None."""
        return self._attn_part(layer, self.spec.attn_out_norm)

    def mlp_out_norm(self, layer: int) -> nn.Module | None:
        """Norm applied to the MLP output before the residual add (Gemma 2/3, OLMo-2); else None."""
        return self._part(layer, self.spec.mlp_out_norm)

    # --- weights in the standard layout ------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the embedding table (and so the adapter's outputs) live; for a model streamed
        from disk (:mod:`successor_heads.core.streaming`), where its weights are loaded."""
        stream = streamed_of(self.model)
        return stream.device if stream is not None else self.W_E.device

    @property
    def W_E(self) -> torch.Tensor:
        """``[d_vocab, d_model]`` raw embedding table."""
        return self.model.get_input_embeddings().weight

    @property
    def residual_multiplier(self) -> float:
        """The constant each attention and MLP output is multiplied by before the residual add
        (Granite's ``residual_multiplier``; 1.0 for other families). :attr:`W_O` and :attr:`b_O`
        include it, so they give a head's output as it reaches the residual stream (``attn``'s
        own output times this)."""
        key = self.spec.residual_multiplier
        return float(getattr(self.cfg, key, None) or 1.0) if key else 1.0

    # --- the circuits -------------------------------------------------------------------
    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings as the model's first layer sees them (no positions).

        The family's embedding scale (``FamilySpec.embed_scale``) is applied by its own
        embedding module, so it is included; so are the embedding multiplier
        (``FamilySpec.embed_multiplier``, Granite) and the embedding norm where the family has one
        (``FamilySpec.embed_norm``, BLOOM).

        Args:
            token_ids: ``[...]`` integer ids.

        Returns:
            ``[..., d_model]`` in the model's dtype, on :attr:`device`.
        """
        x = self.model.get_input_embeddings()(token_ids.to(self.device))
        if self.spec.embed_multiplier:  # Granite: the model scales the embedding module's output
            x = x * getattr(self.cfg, self.spec.embed_multiplier)
        norm = self.embed_norm()
        return x if norm is None else norm(x)

    def embed_norm(self) -> nn.Module | None:
        """The norm on the token embeddings before the first layer (BLOOM's
        ``word_embeddings_layernorm``), or None."""
        return _module(self.model, self.spec.embed_norm)

    def mlp0(self, x: torch.Tensor, norms: str = "raw") -> torch.Tensor:
        """MLP0's output for residual input ``x`` (paper Section 2: effective embedding ``MLP0(W_E[t])``).

        Args:
            x: ``[..., d_model]`` residual vectors (any dtype).
            norms: ``"applied"`` runs layer 0's MLP input norm first (and the post-MLP
                norm of Gemma 2/3 and OLMo-2 after); ``"raw"`` feeds ``x`` straight in.

        The MLP module's own output (plus the shared MLP's where the family has one, Granite-MoE-Shared),
        before any residual multiplier (Granite's scales what is added to the residual stream).

        Returns:
            float32 ``[..., d_model]``.

        Raises:
            ValueError: ``norms`` is not one of :data:`NORM_OPTIONS`.
        """
        _check_norms(norms)
        x = x.to(self.device, torch.float32)
        h = self.run_f32(self.mlp_in_norm(0), x) if norms == "applied" else x
        if self.spec.moe_router is None:
            out = self.run_f32(self.mlp(0), h)
        else:  # an MoE block reads [batch, pos, d_model]: the tokens as one sequence
            out = self.run_f32(self.mlp(0), h.reshape(1, -1, h.shape[-1])).reshape(h.shape)
        shared = self.shared_mlp(0)
        if shared is not None:  # Granite-MoE-Shared: a dense MLP beside the experts, on the same input
            out = out + self.run_f32(shared, h)
        post = self.mlp_out_norm(0)
        if norms == "applied" and post is not None:
            out = self.run_f32(post, out)
        return out

    def ov(self, layer: int, x: torch.Tensor, norms: str = "raw", heads: torch.Tensor | None = None,
           value_bias: bool = False, input_norm: bool | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Each head's OV output for residual input ``x``, in float32 (paper Section 2: ``W_OV^h = W_V^h W_O^h``).

        ``norm(x) W_V^h W_O^h`` is the head's output when it attends fully to a position holding
        ``x``. ``b_O`` is shared by all heads and always left out. The weights are cast to float32
        whatever dtype the model holds, so near-ties are not decided by bf16 rounding. See
        docs/DESIGN.md, "Norm conventions".

        Args:
            layer: layer index.
            x: ``[n_tokens, d_model]`` residual vectors.
            norms: ``"raw"`` or ``"applied"``; with ``"applied"`` the post-attention norm (Gemma 2/3, OLMo-2) is
                applied to each head's output.
            heads: ``[k]`` head indices (None: all ``n_heads``).
            value_bias: add ``b_V^h W_O^h`` (the same vector for every input; not the paper's
                circuit, option ``scores.value_bias``).
            input_norm: run the layer's attention input norm on ``x`` first (default:
                ``norms == "applied"``).
            out: a contiguous float32 ``[k, n_tokens, d_model]`` tensor to write the result into
                (ours: the batched successor scores reuse one for every layer instead of
                allocating, and page-faulting, ``n_heads * n_tokens * d_model`` floats per layer;
                the values are those computed without it).

        Returns:
            float32 ``[n_heads, n_tokens, d_model]`` (or ``[k, n_tokens, d_model]``); ``out`` when given.

        Raises:
            ValueError: ``norms`` is not one of :data:`NORM_OPTIONS`.
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
        out_HTM = torch.bmm(v_HTD, W_O, out=out)  # per head [n_tokens, d_head] @ [d_head, d_model]
        post = self.attn_out_norm(layer)
        if norms == "applied" and post is not None:
            normed = self.run_f32(post, out_HTM)
            out_HTM = normed if out is None else out.copy_(normed)
        return out_HTM

    def run_f32(self, module: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
        """``module(x)`` computed in float32.

        Norms and MLP0 of a half-precision model run on a float32 copy of the module (made once
        and kept; made per call for a model streamed from disk), so weight-based quantities do
        not depend on the dtype the model was loaded in.

        Args:
            module: a norm or MLP of the model; None (a norm the family lacks) is the identity.
            x: ``[..., d_model]``.

        Returns:
            float32 ``[..., d_model]``.
        """
        if module is None:
            return x.to(self.device, torch.float32)
        p = next(module.parameters(), None)
        if p is not None and p.dtype != torch.float32:
            if streamed_of(self.model) is not None:
                # a streamed module's weights are in memory only while it is resident: a kept copy
                # would hold them (a 13B model's MLP0: 0.85 GB in float32) for the rest of the run
                module = copy.deepcopy(module).float()
            else:
                cache = self.__dict__.setdefault("_f32_modules", {})
                if id(module) not in cache:
                    cache[id(module)] = copy.deepcopy(module).float()
                module = cache[id(module)]
        out = module(x.to(self.device, torch.float32))
        return (out[0] if isinstance(out, tuple) else out).float()  # gpt-oss's MLP: (out, router scores)

    def n_params(self) -> int:
        """The model's parameter count (a streamed model's: from its checkpoint's headers, as its
        tied embeddings come apart on the meta device once either is read)."""
        stream = streamed_of(self.model)
        if stream is not None:
            return stream.tensors.n_params()
        return sum(p.numel() for p in self.model.parameters())
