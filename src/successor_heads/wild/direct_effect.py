"""Direct-effect mean ablation of every head on natural text, from one forward pass per batch
(paper Section 4.3, "Successor heads in the wild": per-token loss when a head's direct effect
is mean-ablated; a head "wins" a token when its ablation hurts most).

Direct effect of head h (layer l) at a position: its output ``head_out_h = z_h @ W_O^h`` reaches
the logits straight through the residual stream. Ablating it *directly* replaces that path by
the head's mean output over the corpus while every later layer still sees the clean
activations. With ``resid [N, d_model]`` the residual stream entering the final norm,

    delta_h  = mean_out_h - head_out_h                       (GPT-2, GPT-NeoX, Llama, Qwen2)
    delta_h  = post(a - head_out_h + mean_out_h) - post(a)   (Gemma3)

where ``mean_out_h = mean_z_h @ W_O^h`` (``mean_z_h``: the head's mean ``z`` over all
non-BOS corpus positions), ``a`` is the layer's attention output (sum of heads plus ``b_O``)
and ``post`` is Gemma3's ``post_attention_layernorm``, which normalises the *sum* of the heads:
a single head's contribution to the residual is not linear there, so it is taken as the
difference of the norm with and without the head's ablation (this is the layer's own norm and
is the same for both options below).

The final norm, written ``norm(x) = P(x) * inv_sigma(x) * w + b`` (``P``: centring for
LayerNorm, identity for RMSNorm; ``inv_sigma(x) = 1 / sqrt(mean(P(x)^2) + eps)``; ``w``: its
weight, Gemma's ``1 + weight``; ``b``: LayerNorm's bias), is treated in one of two ways
(option ``final_norm``, config key ``wild.final_norm``):

* ``"frozen"`` (default): the final norm's scale is frozen at the clean run, as in the paper's
  Section 4.3 direct effect: only the linear part of the norm sees ``delta_h``,

      logits_h = softcap( (P(resid + delta_h) * inv_sigma(resid) * w + b) @ W_U + b_U );

* ``"recomputed"``: the final norm is recomputed on the modified residual,

      logits_h = softcap( (P(resid + delta_h) * inv_sigma(resid + delta_h) * w + b) @ W_U + b_U ),

  i.e. the model's own final norm module applied to ``resid + delta_h``.

``softcap`` is the model's final logit soft-cap (Gemma3) when its config has one. Both are
exact for their definition.

All heads come from one forward pass per batch of contexts: hooks capture each head's ``z``
(input of the attention output projection), Gemma3's attention output and ``resid``;
consecutive batches are pooled (up to ``max_chunk_mb`` of captured activations) and every head
is then ablated at once. Fast path (:mod:`successor_heads.wild.direct_effect_fast`; every family,
Gemma3 included, both ``final_norm`` options; used when the final norm and any post-attention
norm are recognised LayerNorm/RMSNorm forms, verified on the batch): each head's logit change
is a rank-``d_head`` product plus per-position scalars, contracted block by block with a
streamed log-sum-exp over the vocabulary. Exact path (``fast=False``, unrecognised norms):
``resid + delta_h`` is unembedded in full, through the final norm module (recomputed) or
through ``P(resid + delta_h) * inv_sigma(resid) * w + b`` from :func:`norm_spec` (frozen; a
final norm that :func:`norm_spec` does not recognise cannot be frozen and raises ValueError).
Both agree within float32 rounding (tests/wild/test_direct_effect.py). ``compute_dtype="bfloat16"``
(config ``wild.compute_dtype``, fast path only) computes the head-dependent product in
bfloat16. Memory is bounded by ``max_chunk_mb``. Losses are in nats.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from successor_heads.core import hooks
from successor_heads.core.adapters import Adapter
from successor_heads.core.streaming import pass_size, readout_modules, resident, sequence_mb
from successor_heads.wild.capture import Capture, capture, compute_device, concat_captures
from successor_heads.wild.direct_effect_fast import FastContraction, check_compute_dtype
from successor_heads.wild.direct_effect_norms import (FINAL_NORMS, NormSpec, check_final_norm, norm_spec,  # noqa: F401
                                                      run_norm, unsupported_final_norm)

log = logging.getLogger(__name__)

@dataclass
class DirectEffects:
    """Per-token direct-effect results, all in nats except logits (raw logit units).

    ``loss [n_layers, n_heads, n_tokens]`` and ``target_logit [n_layers, n_heads, n_tokens]``
    with each head's direct effect mean-ablated; ``base_loss [n_tokens]``, ``base_logit
    [n_tokens]`` clean; ``target_ids [n_tokens]``; ``context_index`` and ``position
    [n_tokens]`` (position of the token that predicts the target); ``method``: the path used
    (both are exact; "fast" is the rank-``d_head`` form); ``final_norm``: "frozen" or
    "recomputed" (module docstring); ``compute_dtype``: "float32", or "bfloat16" when the fast
    path computed the per-head logit change in bfloat16; ``profile``: wall seconds of the
    forward passes (``forward``) and, on the fast path, seconds and flops per phase
    (:class:`~successor_heads.wild.direct_effect_fast.FastContraction`; for benchmarks).
    """

    loss: np.ndarray
    target_logit: np.ndarray
    base_loss: np.ndarray
    base_logit: np.ndarray
    target_ids: np.ndarray
    context_index: np.ndarray
    position: np.ndarray
    method: str = "fast"
    final_norm: str = "frozen"
    compute_dtype: str = "float32"
    profile: dict = field(default_factory=dict)


def mean_z(adapter: Adapter, tokens: torch.Tensor, batch_size: int = 8, skip_first: bool = True,
           progress: bool = False) -> torch.Tensor:
    """Mean ``z`` of every head over the corpus ``tokens [n_contexts, context_len]`` (the value
    the direct effect is mean-ablated to), ``batch_size`` contexts per forward pass, leaving out
    position 0 when ``skip_first`` (the BOS token): :func:`successor_heads.core.hooks.mean_z`
    with float64 sums. Returns ``[n_layers, n_heads, d_head]`` float32.
    """
    # a streamed model: the whole corpus in one pass, so each decoder layer is read once
    batch_size = pass_size(adapter.model, batch_size, len(tokens), sequence_mb(adapter, tokens.shape[1]))
    return hooks.mean_z(adapter, tokens.split(batch_size), int(skip_first), torch.float64, progress)


class DirectEffectAblator:
    """Computes every head's direct-effect mean ablation for captured batches (module docstring).

    Args:
        adapter: the model's :class:`~successor_heads.core.adapters.Adapter`.
        mean_z: ``[n_layers, n_heads, d_head]`` mean ``z`` over the corpus (:func:`mean_z`).
        max_chunk_mb: memory cap of the float32 logit blocks (exact path: ``[tokens, d_vocab]``
            pairs and the head batches; fast path: the ``[tokens, width]`` clean logits of a
            vocabulary chunk and the ``[heads, rows, width]`` blocks).
        fast: None = the fast path when the model allows it; False forces the exact path.
        final_norm: "frozen" (final norm scale of the clean run, paper Section 4.3) or
            "recomputed" (final norm applied to the ablated residual); both paths obey it.
        compute_dtype: "float32" (default) or "bfloat16" (the fast path's per-head logit
            change; the exact path is always float32).
        rows, width, workers: fast-path block shape (positions, vocabulary columns) and
            threads (:class:`~successor_heads.wild.direct_effect_fast.FastContraction`); None = defaults.

    Raises: ValueError for an unknown ``final_norm`` or ``compute_dtype``, or "frozen" with a
    final norm that :func:`norm_spec` does not recognise.
    """

    def __init__(self, adapter: Adapter, mean_z: torch.Tensor, max_chunk_mb: float = 1024, fast: bool | None = None,
                 final_norm: str = "frozen", compute_dtype: str = "float32", rows: int | None = None,
                 width: int | None = None, workers: int | None = None):
        # a streamed model (core.streaming) reads the readout and every layer's W_O and post-attention
        # norm while the ablator is built and while it runs, and frees them in between (forward passes)
        self.weights = readout_modules(adapter) + [m for i in range(adapter.dims.n_layers)
                                           for m in (adapter.o_proj(i), adapter.attn_out_norm(i))]
        with resident(adapter.model, *self.weights):
            self._build(adapter, mean_z, max_chunk_mb, fast, final_norm, compute_dtype, rows, width, workers)

    def _build(self, adapter, mean_z, max_chunk_mb, fast, final_norm, compute_dtype, rows, width, workers):
        self.a, self.d = adapter, adapter.dims
        self.dev = compute_device(adapter)
        dtype = check_compute_dtype(compute_dtype)
        self.W_U = adapter.W_U.detach().to(self.dev, torch.float32)
        b = adapter.b_U
        self.b_U = None if b is None else b.detach().to(self.dev, torch.float32)
        self.cap = adapter.logit_softcap
        self.mean_z = mean_z.to(self.dev, torch.float32)
        self.post = adapter.attn_out_norm(0) is not None
        self.final_norm = check_final_norm(final_norm)
        self.frozen = final_norm == "frozen"
        self.spec = norm_spec(adapter.final_norm(), self.dev)
        if self.frozen and self.spec is None:
            raise ValueError(unsupported_final_norm(adapter.final_norm()))
        self.max_chunk_mb = max_chunk_mb
        self.block_rows = max(1, int(max_chunk_mb * 2**20 // (2 * 4 * self.d.d_vocab)))
        posts = [norm_spec(adapter.attn_out_norm(i), self.dev) for i in range(self.d.n_layers)] if self.post else None
        ok = fast is not False and self.spec is not None and (posts is None or all(p is not None for p in posts))
        self.fastc = FastContraction(
            dims=self.d, spec=self.spec, device=self.dev, W_U=self.W_U, b_U=self.b_U, cap=self.cap,
            W_O=[tuple(t.detach().to(self.dev, torch.float32) for t in adapter.W_O_layer(i)) for i in range(self.d.n_layers)],
            post_norms=[adapter.attn_out_norm(i) for i in range(self.d.n_layers)] if self.post else None, posts=posts,
            mean_z=self.mean_z, frozen=self.frozen, block_rows=self.block_rows, max_chunk_mb=max_chunk_mb, dtype=dtype,
            rows=rows, width=width, workers=workers) if ok else None
        self.compute_dtype = compute_dtype if ok else "float32"
        if compute_dtype != "float32" and not ok:
            log.warning("wild.compute_dtype=%s applies to the fast path only; the exact path runs in float32",
                        compute_dtype)

    @property
    def fast(self) -> bool:
        return self.fastc is not None

    def n_steps(self, n: int) -> int:
        """Progress steps of :meth:`run` for ``n`` positions (layers x vocabulary chunks, or
        layers x token chunks on the exact path)."""
        chunks = self.fastc.n_chunks(n) if self.fast else -(-n // self.block_rows)
        return chunks * self.d.n_layers

    def _W_O(self, layer: int) -> torch.Tensor:
        return self.a.W_O_layer(layer)[0].detach().to(self.dev, torch.float32)

    def _finish(self, L: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """In place on logits ``L [..., n, d_vocab]``: soft-cap, then ``(loss, target logit)`` ``[..., n]``."""
        if self.cap:
            L.div_(self.cap).tanh_().mul_(self.cap)
        t = tgt.expand(*L.shape[:-1])[..., None]
        logit = L.gather(-1, t)[..., 0]
        m = L.amax(-1, keepdim=True)
        lse = L.sub_(m).exp_().sum(-1).log_() + m[..., 0]
        return lse - logit, logit

    def _unembed(self, x: torch.Tensor, inv_sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``x [..., d_model]``: the final norm module, or with ``inv_sigma [..., 1]``
        given, the norm's form with that scale (frozen)."""
        if inv_sigma is None:
            y = run_norm(self.a.final_norm(), x)
        else:
            s = self.spec
            y = s.P(x) * inv_sigma * s.w
            if s.b is not None:
                y = y + s.b
        L = y @ self.W_U
        return L + self.b_U if self.b_U is not None else L

    def _check(self, cap: Capture) -> None:
        """Verify the recognised norm forms on the batch; drop to the exact path (recomputed) or
        raise (frozen, final norm) when one does not hold."""
        tol = 1e-4 if self.W_U.dtype == self.a.W_U.dtype else 1e-2  # looser for half-precision models
        if self.spec is not None and not torch.allclose(
                self.spec(cap.resid), run_norm(self.a.final_norm(), cap.resid), rtol=tol, atol=tol):
            if self.frozen:
                raise ValueError(unsupported_final_norm(self.a.final_norm(), "does not match its LayerNorm/RMSNorm form"))
            log.warning("final norm %s does not match its recognised form; using the exact path",
                        type(self.a.final_norm()).__name__)
            self.spec, self.fastc, self.compute_dtype = None, None, "float32"
        why = self.fastc.applicable(cap, tol) if self.fast else None
        if why:
            log.warning("%s; using the exact path", why)
            self.fastc, self.compute_dtype = None, "float32"

    @torch.no_grad()
    def run(self, cap: Capture, targets: torch.Tensor, bar=None) -> tuple[torch.Tensor, ...]:
        """Every head's direct effect for ``cap`` (:meth:`_run`), with the weights it reads in memory."""
        with resident(self.a.model, *self.weights):
            return self._run(cap, targets, bar)

    def _run(self, cap: Capture, targets: torch.Tensor, bar=None) -> tuple[torch.Tensor, ...]:
        """Ablate every head's direct effect for captured positions with next tokens ``targets [N]``.

        ``bar``: an optional tqdm bar, advanced :meth:`n_steps` times in all.

        Returns: ``(loss, target_logit)`` each ``[n_layers, n_heads, N]`` and ``(base_loss,
        base_logit)`` each ``[N]``, float32 on the CPU; losses in nats.
        Raises: ValueError when ``targets`` and the capture disagree in length, or with
        ``final_norm="frozen"`` when the final norm does not match its recognised form.
        """
        N = cap.resid.shape[0]
        if targets.shape != (N,):
            raise ValueError(f"targets has shape {tuple(targets.shape)}; the capture has {N} positions")
        self._check(cap)
        tg = targets.to(self.dev)
        if self.fast:
            return self.fastc.run(cap, tg, bar)
        out = [torch.empty(self.d.n_layers, self.d.n_heads, N) for _ in range(2)]
        base = [torch.empty(N) for _ in range(2)]
        rows = self.block_rows
        for s in range(0, N, rows):
            sl = slice(s, min(N, s + rows))
            lo, lg, bl, bg = self._exact_chunk(cap, sl, tg[sl], bar)
            out[0][:, :, sl], out[1][:, :, sl], base[0][sl], base[1][sl] = lo, lg, bl, bg
        return out[0], out[1], base[0], base[1]

    def _exact_chunk(self, cap: Capture, sl: slice, tg: torch.Tensor, bar):
        d = self.d
        x_NM = cap.resid[sl]
        n = x_NM.shape[0]
        base_loss, base_logit = self._finish(self._unembed(x_NM), tg)
        loss = torch.empty(d.n_layers, d.n_heads, n)
        logit = torch.empty_like(loss)
        k = max(1, min(d.n_heads, self.block_rows // n))  # heads per block
        inv = self.spec.inv_sigma(x_NM)[None] if self.frozen else None  # frozen: clean scale
        for layer in range(d.n_layers):
            W_O_HDM = self._W_O(layer)
            dz_NHD = self.mean_z[layer][None] - cap.z[sl, layer]
            for h0 in range(0, d.n_heads, k):
                hs = slice(h0, min(d.n_heads, h0 + k))
                dout_HNM = torch.einsum("nkd,kdm->knm", dz_NHD[:, hs], W_O_HDM[hs])
                if self.post:
                    a_NM = cap.attn_out[sl, layer]
                    norm = self.a.attn_out_norm(layer)
                    dout_HNM = run_norm(norm, a_NM[None] + dout_HNM) - run_norm(norm, a_NM)[None]
                lo, lg = self._finish(self._unembed(x_NM[None] + dout_HNM, inv), tg)
                loss[layer, hs], logit[layer, hs] = lo.cpu(), lg.cpu()
            if bar is not None:
                bar.update()
        return loss, logit, base_loss.cpu(), base_logit.cpu()


def corpus_direct_effects(adapter: Adapter, tokens: torch.Tensor, mean_z_LHD: torch.Tensor, batch_size: int = 16,
                          max_chunk_mb: float = 1024, fast: bool | None = None, progress: bool = False,
                          final_norm: str = "frozen", compute_dtype: str = "float32") -> DirectEffects:
    """Every head's direct-effect mean ablation on every next-token prediction of the corpus.

    ``tokens [n_contexts, context_len]``: position ``p`` of context ``c`` predicts
    ``tokens[c, p + 1]``; ``n_tokens = n_contexts * (context_len - 1)``, batch-major.
    ``mean_z_LHD [n_layers, n_heads, d_head]`` from :func:`mean_z`. One forward pass per batch
    of ``batch_size`` contexts; consecutive batches are pooled and ablated together while their
    captured activations (about ``n_contexts * context_len * (n_layers * n_heads * d_head +
    d_model [+ n_layers * d_model for Gemma3]) * 4`` bytes) stay under ``max_chunk_mb``
    (twice that while they are joined): the fast path forms each layer's rank-``d_head``
    unembedding once per pool, so larger pools cost less per token. ``final_norm``: "frozen"
    (default; final norm scale of the clean run, paper Section 4.3) or "recomputed";
    ``compute_dtype``: "float32" (default) or "bfloat16" (module docstring). Returns
    :class:`DirectEffects` (losses in nats).
    Raises: ValueError for contexts shorter than 2 tokens, an unknown ``final_norm`` or
    ``compute_dtype``, or a frozen final norm that :func:`norm_spec` does not recognise.
    """
    n_ctx, P = tokens.shape
    if P < 2:
        raise ValueError(f"contexts of {P} token(s): need at least 2 to score a next-token prediction")
    ab = DirectEffectAblator(adapter, mean_z_LHD, max_chunk_mb, fast, final_norm, compute_dtype)
    d = adapter.dims
    per_ctx = (P - 1) * 4 * (d.n_layers * d.n_heads * d.d_head + d.d_model + (d.n_layers * d.d_model if ab.post else 0))
    fit = max(1, int(max_chunk_mb * 2**20 // per_ctx))
    # streamed: as many contexts per pass as fit, so each decoder layer is read once per pass
    batch_size = pass_size(adapter.model, batch_size, n_ctx, sequence_mb(adapter, P))
    if fit < batch_size:
        log.info("batch of %d contexts would capture %.0f MB; using %d per forward pass", batch_size,
                 batch_size * per_ctx / 2**20, fit)
        batch_size = fit
    pool = max(batch_size, fit // batch_size * batch_size)  # contexts ablated together
    starts = range(0, n_ctx, pool)
    bar = tqdm(total=sum(ab.n_steps(min(pool, n_ctx - s) * (P - 1)) for s in starts),
               desc=f"direct effects, all heads ({'fast' if ab.fast else 'exact'}, final norm {final_norm})",
               unit="step", disable=not progress)
    parts: list[tuple] = []
    t_fwd = 0.0
    for s in starts:
        ids = tokens[s:s + pool]
        sel = torch.ones_like(ids[:batch_size], dtype=torch.bool)
        sel[:, -1] = False
        t0 = time.perf_counter()
        cap = concat_captures([capture(adapter, ids[b:b + batch_size], sel[:len(ids[b:b + batch_size])])
                               for b in range(0, len(ids), batch_size)])
        t_fwd += time.perf_counter() - t0
        parts.append(ab.run(cap, ids[:, 1:].reshape(-1), bar))
        del cap
    bar.close()
    profile = {"forward": t_fwd, "pools": len(starts)}
    if ab.fast:
        rows, width = ab.fastc.blocking(min(pool, n_ctx) * (P - 1))
        profile.update(seconds=dict(ab.fastc.timings), flops=dict(ab.fastc.flops), rows=rows, width=width,
                       workers=ab.fastc.n_workers())
    loss, logit, bl, bg = (torch.cat([p[i] for p in parts], -1).numpy() for i in range(4))
    ctx = np.repeat(np.arange(n_ctx), P - 1)
    pos = np.tile(np.arange(P - 1), n_ctx)
    return DirectEffects(loss, logit, bl, bg, tokens[:, 1:].reshape(-1).numpy(), ctx, pos,
                         "fast" if ab.fast else "exact", final_norm, ab.compute_dtype, profile)
