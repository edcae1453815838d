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

All heads come from one forward pass per batch: hooks capture each head's ``z`` (input of the
attention output projection), Gemma3's attention output and ``resid``; the per-head logits are
then recomputed for every head. Fast path (no post-attention norm, LayerNorm or RMSNorm final
norm, verified on the batch): with ``U0 = (P(resid) * w) @ W_U``, ``c = b @ W_U + b_U`` and
``K_h = (P(W_O^h) * w) @ W_U [d_head, d_vocab]``,

    frozen:      logits_h = U0 * inv_sigma(resid) + c + ((mean_z_h - z_h) @ K_h) * inv_sigma(resid)
    recomputed:  logits_h = (U0 + (mean_z_h - z_h) @ K_h) * inv_sigma(resid + delta_h) + c,

so each head costs a rank-``d_head`` product instead of a full unembedding (frozen needs no
per-head scale). Otherwise (Gemma3, unrecognised norms) the exact path unembeds
``resid + delta_h`` in full: through the final norm module (recomputed) or through
``P(resid + delta_h) * inv_sigma(resid) * w + b`` from :func:`norm_spec` (frozen; a final norm
that :func:`norm_spec` does not recognise cannot be frozen and raises ValueError).
Memory is bounded by ``max_chunk_mb`` (tokens and heads are chunked). Losses are in nats.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .adapters import Adapter

log = logging.getLogger(__name__)

#: Values of the ``final_norm`` option (config key ``wild.final_norm``; module docstring).
FINAL_NORMS = ("frozen", "recomputed")


def check_final_norm(final_norm: str) -> str:
    """Return ``final_norm`` when it is one of :data:`FINAL_NORMS`.

    Raises: ValueError naming the key ``wild.final_norm`` and the allowed values.
    """
    if final_norm not in FINAL_NORMS:
        raise ValueError(f"wild.final_norm={final_norm!r}: must be one of {', '.join(FINAL_NORMS)} "
                         "(frozen: final norm scale of the clean run, the paper's direct effect; "
                         "recomputed: final norm recomputed on the ablated residual)")
    return final_norm


def _unsupported(module: nn.Module, why: str = "is not a recognised LayerNorm/RMSNorm") -> str:
    return (f"final norm {type(module).__name__} {why}: its scale cannot be frozen at the clean run "
            "(wild.final_norm=frozen); use wild.final_norm=recomputed")


@dataclass
class Capture:
    """Clean activations at the scored positions (``N`` of them), float32.

    ``z [N, n_layers, n_heads, d_head]``, ``resid [N, d_model]`` (input of the final norm),
    ``attn_out [N, n_layers, d_model]`` (output of the attention projection; only for models
    with a post-attention norm, else None).
    """

    z: torch.Tensor
    resid: torch.Tensor
    attn_out: torch.Tensor | None


@dataclass
class DirectEffects:
    """Per-token direct-effect results, all in nats except logits (raw logit units).

    ``loss [n_layers, n_heads, n_tokens]`` and ``target_logit [n_layers, n_heads, n_tokens]``
    with each head's direct effect mean-ablated; ``base_loss [n_tokens]``, ``base_logit
    [n_tokens]`` clean; ``target_ids [n_tokens]``; ``context_index`` and ``position
    [n_tokens]`` (position of the token that predicts the target); ``method``: the path used
    (both are exact; "fast" is the rank-``d_head`` form); ``final_norm``: "frozen" or
    "recomputed" (module docstring).
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


def _compute_device(adapter: Adapter) -> torch.device:
    return adapter.model.get_output_embeddings().weight.device


@contextlib.contextmanager
def _hooks(pairs):
    handles = []
    try:
        for module, kind, fn in pairs:
            reg = module.register_forward_pre_hook if kind == "pre" else module.register_forward_hook
            handles.append(reg(fn, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _first_input(args, kwargs):
    return args[0] if args else next(iter(kwargs.values()))


def _norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` as float32 on ``x``'s device, with ``x`` cast to the module's own dtype and
    device first (half-precision or multi-GPU models)."""
    p = next(module.parameters(), None)
    y = module(x.to(p.device, p.dtype)) if p is not None else module(x)
    return y.to(x.device, torch.float32)


@torch.no_grad()
def capture(adapter: Adapter, input_ids: torch.Tensor, select: torch.Tensor | None = None) -> Capture:
    """One forward pass of ``input_ids [batch, pos]`` (through the base model: no unembedding),
    keeping the activations of :class:`Capture` at positions ``select [batch, pos]`` (bool;
    None = all), flattened batch-major to ``N`` rows. Source: module docstring.
    """
    d, dev = adapter.dims, _compute_device(adapter)
    post = adapter.attn_out_norm(0) is not None
    got: dict[str, list] = {"z": [None] * d.n_layers, "a": [None] * d.n_layers, "resid": []}

    def pick(x):
        x = x.detach()
        x = x[select.to(x.device)] if select is not None else x.reshape(-1, x.shape[-1])
        return x.to(dev, torch.float32)

    def z_hook(layer):
        return lambda _m, args, kwargs: got["z"].__setitem__(layer, pick(_first_input(args, kwargs)))

    def a_hook(layer):
        return lambda _m, args, kwargs, out: got["a"].__setitem__(layer, pick(out[0] if isinstance(out, tuple) else out))

    pairs = [(adapter.o_proj(i), "pre", z_hook(i)) for i in range(d.n_layers)]
    if post:
        pairs += [(adapter.o_proj(i), "fwd", a_hook(i)) for i in range(d.n_layers)]
    pairs.append((adapter.final_norm(), "pre", lambda _m, args, kwargs: got["resid"].append(pick(_first_input(args, kwargs)))))
    base = adapter.model.base_model
    with _hooks(pairs):
        base(input_ids=input_ids.to(adapter.device), use_cache=False)
    z = torch.stack(got["z"], 1).reshape(-1, d.n_layers, d.n_heads, d.d_head)
    return Capture(z, got["resid"][-1], torch.stack(got["a"], 1) if post else None)


@torch.no_grad()
def mean_z(adapter: Adapter, tokens: torch.Tensor, batch_size: int = 8, skip_first: bool = True,
           progress: bool = False) -> torch.Tensor:
    """Mean ``z`` of every head over the corpus ``tokens [n_contexts, context_len]``, leaving out
    position 0 when ``skip_first`` (the BOS token). Returns ``[n_layers, n_heads, d_head]`` float32.
    """
    d = adapter.dims
    total = torch.zeros(d.n_layers, d.n_heads, d.d_head, dtype=torch.float64)
    count = 0
    for s in tqdm(range(0, len(tokens), batch_size), desc="mean head outputs", disable=not progress):
        ids = tokens[s:s + batch_size]
        sel = torch.ones_like(ids, dtype=torch.bool)
        if skip_first:
            sel[:, 0] = False
        z = _z_only(adapter, ids, sel)
        total += z.double().sum(0).cpu()
        count += int(sel.sum())
    return (total / max(count, 1)).float()


def _z_only(adapter: Adapter, ids: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    d = adapter.dims
    zs = [None] * d.n_layers

    def hook(layer):
        def f(_m, args, kwargs):
            x = _first_input(args, kwargs)
            zs[layer] = x[sel.to(x.device)].float()
        return f

    with _hooks([(adapter.o_proj(i), "pre", hook(i)) for i in range(d.n_layers)]):
        adapter.model.base_model(input_ids=ids.to(adapter.device), use_cache=False)
    return torch.stack([z.to(zs[0].device) for z in zs], 1).reshape(-1, d.n_layers, d.n_heads, d.d_head)


@dataclass
class NormSpec:
    """A final norm written as ``P(x) / sigma(x) * w + b`` (``P``: centring for LayerNorm)."""

    center: bool
    w: torch.Tensor
    b: torch.Tensor | None
    eps: float

    def P(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True) if self.center else x

    def inv_sigma(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rsqrt(self.P(x).pow(2).mean(-1, keepdim=True) + self.eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.P(x) * self.inv_sigma(x) * self.w
        return out + self.b if self.b is not None else out


def norm_spec(module: nn.Module, dev: torch.device) -> NormSpec | None:
    """Recognise ``nn.LayerNorm`` and ``*RMSNorm`` modules (Gemma's ``1 + weight`` included) as a
    float32 :class:`NormSpec` on ``dev``; None for anything else (then the recomputed final norm
    takes the exact path through the module, and the frozen one is not available)."""
    name = type(module).__name__
    w = getattr(module, "weight", None)
    if isinstance(module, nn.LayerNorm):
        d = module.normalized_shape[-1]
        w = torch.ones(d) if w is None else w
        b = None if module.bias is None else module.bias.detach().to(dev, torch.float32)
        return NormSpec(True, w.detach().to(dev, torch.float32), b, float(module.eps))
    if "RMSNorm" in name and w is not None:
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        if eps is None:
            return None
        w = w.detach().to(dev, torch.float32)
        return NormSpec(False, 1.0 + w if "Gemma" in name else w, None, float(eps))
    return None


class DirectEffectAblator:
    """Computes every head's direct-effect mean ablation for captured batches (module docstring).

    Args:
        adapter: the model's :class:`~successor_heads.adapters.Adapter`.
        mean_z: ``[n_layers, n_heads, d_head]`` mean ``z`` over the corpus (:func:`mean_z`).
        max_chunk_mb: memory cap of the float32 ``[tokens, d_vocab]`` blocks (and of the head
            batches of the exact path).
        fast: None = the fast path when the model allows it; False forces the exact path.
        final_norm: "frozen" (final norm scale of the clean run, paper Section 4.3) or
            "recomputed" (final norm applied to the ablated residual); both paths obey it.

    Raises: ValueError for an unknown ``final_norm``, or "frozen" with a final norm that
    :func:`norm_spec` does not recognise.
    """

    def __init__(self, adapter: Adapter, mean_z: torch.Tensor, max_chunk_mb: int = 1024, fast: bool | None = None,
                 final_norm: str = "frozen"):
        self.a, self.d = adapter, adapter.dims
        self.dev = _compute_device(adapter)
        self.W_U = adapter.W_U.detach().to(self.dev, torch.float32)
        b = adapter.b_U
        self.b_U = None if b is None else b.detach().to(self.dev, torch.float32)
        self.cap = getattr(adapter.cfg, "final_logit_softcapping", None)
        self.mean_z = mean_z.to(self.dev, torch.float32)
        self.post = adapter.attn_out_norm(0) is not None
        self.final_norm = check_final_norm(final_norm)
        self.frozen = final_norm == "frozen"
        self.spec = norm_spec(adapter.final_norm(), self.dev)
        if self.frozen and self.spec is None:
            raise ValueError(_unsupported(adapter.final_norm()))
        self.use_fast = fast is not False and not self.post and self.spec is not None
        self.block_rows = max(1, int(max_chunk_mb * 2**20 // (2 * 4 * self.d.d_vocab)))

    @property
    def fast(self) -> bool:
        return self.use_fast

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
            y = _norm(self.a.final_norm(), x)
        else:
            s = self.spec
            y = s.P(x) * inv_sigma * s.w
            if s.b is not None:
                y = y + s.b
        L = y @ self.W_U
        return L + self.b_U if self.b_U is not None else L

    @torch.no_grad()
    def run(self, cap: Capture, targets: torch.Tensor, bar=None) -> tuple[torch.Tensor, ...]:
        """Ablate every head's direct effect for captured positions with next tokens ``targets [N]``.

        ``bar``: an optional tqdm bar, advanced by one per layer and token chunk.

        Returns: ``(loss, target_logit)`` each ``[n_layers, n_heads, N]`` and ``(base_loss,
        base_logit)`` each ``[N]``, float32 on the CPU; losses in nats.
        Raises: ValueError when ``targets`` and the capture disagree in length, or with
        ``final_norm="frozen"`` when the final norm does not match its recognised form.
        """
        N = cap.resid.shape[0]
        if targets.shape != (N,):
            raise ValueError(f"targets has shape {tuple(targets.shape)}; the capture has {N} positions")
        tol = 1e-4 if self.W_U.dtype == self.a.W_U.dtype else 1e-2  # looser for half-precision models
        if self.spec is not None and not torch.allclose(
                self.spec(cap.resid), _norm(self.a.final_norm(), cap.resid), rtol=tol, atol=tol):
            if self.frozen:
                raise ValueError(_unsupported(self.a.final_norm(), "does not match its LayerNorm/RMSNorm form"))
            log.warning("final norm %s does not match its recognised form; using the exact path",
                        type(self.a.final_norm()).__name__)
            self.spec, self.use_fast = None, False
        tg = targets.to(self.dev)
        out = [torch.empty(self.d.n_layers, self.d.n_heads, N) for _ in range(2)]
        base = [torch.empty(N) for _ in range(2)]
        rows = self.block_rows
        for s in range(0, N, rows):
            sl = slice(s, min(N, s + rows))
            fn = self._fast_chunk if self.use_fast else self._exact_chunk
            lo, lg, bl, bg = fn(cap, sl, tg[sl], bar)
            out[0][:, :, sl], out[1][:, :, sl], base[0][sl], base[1][sl] = lo, lg, bl, bg
        return out[0], out[1], base[0], base[1]

    def _fast_chunk(self, cap: Capture, sl: slice, tg: torch.Tensor, bar):
        spec, d = self.spec, self.d
        x_NM = cap.resid[sl]
        n = x_NM.shape[0]
        inv_N1 = spec.inv_sigma(x_NM)
        c_V = None if spec.b is None else spec.b @ self.W_U
        if self.b_U is not None:
            c_V = self.b_U if c_V is None else c_V + self.b_U
        U0_NV = (spec.P(x_NM) * spec.w) @ self.W_U
        L = U0_NV * inv_N1
        if c_V is not None:
            L += c_V
        if self.frozen:
            U0_NV = L.clone()  # frozen: clean logits before the soft-cap, U0 * inv_sigma + c
        base_loss, base_logit = self._finish(L, tg)
        del L
        loss = torch.empty(d.n_layers, d.n_heads, n)
        logit = torch.empty_like(loss)
        use_K = n * (d.d_model - d.d_head) > d.d_head * d.d_model
        for layer in range(d.n_layers):
            W_O_HDM = self._W_O(layer)
            dz_NHD = self.mean_z[layer][None] - cap.z[sl, layer]
            for h in range(d.n_heads):
                delta_NM = None if (use_K and self.frozen) else dz_NHD[:, h] @ W_O_HDM[h]
                if use_K:
                    L = dz_NHD[:, h] @ ((spec.P(W_O_HDM[h]) * spec.w) @ self.W_U)
                else:
                    L = (spec.P(delta_NM) * spec.w) @ self.W_U
                if self.frozen:
                    L.mul_(inv_N1).add_(U0_NV)
                else:
                    L.add_(U0_NV).mul_(spec.inv_sigma(x_NM + delta_NM))
                    if c_V is not None:
                        L += c_V
                lo, lg = self._finish(L, tg)
                loss[layer, h], logit[layer, h] = lo.cpu(), lg.cpu()
            if bar is not None:
                bar.update()
        return loss, logit, base_loss.cpu(), base_logit.cpu()

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
                dout_KNM = torch.einsum("nkd,kdm->knm", dz_NHD[:, hs], W_O_HDM[hs])
                if self.post:
                    a_NM = cap.attn_out[sl, layer]
                    norm = self.a.attn_out_norm(layer)
                    dout_KNM = _norm(norm, a_NM[None] + dout_KNM) - _norm(norm, a_NM)[None]
                lo, lg = self._finish(self._unembed(x_NM[None] + dout_KNM, inv), tg)
                loss[layer, hs], logit[layer, hs] = lo.cpu(), lg.cpu()
            if bar is not None:
                bar.update()
        return loss, logit, base_loss.cpu(), base_logit.cpu()


def corpus_direct_effects(adapter: Adapter, tokens: torch.Tensor, mean_z_LHD: torch.Tensor, batch_size: int = 16,
                          max_chunk_mb: int = 1024, fast: bool | None = None, progress: bool = False,
                          final_norm: str = "frozen") -> DirectEffects:
    """Every head's direct-effect mean ablation on every next-token prediction of the corpus.

    ``tokens [n_contexts, context_len]``: position ``p`` of context ``c`` predicts
    ``tokens[c, p + 1]``; ``n_tokens = n_contexts * (context_len - 1)``, batch-major.
    ``mean_z_LHD [n_layers, n_heads, d_head]`` from :func:`mean_z`. One forward pass per batch
    of ``batch_size`` contexts (fewer when the captured activations, about ``batch_size *
    context_len * n_layers * (n_heads * d_head [+ d_model for Gemma3]) * 4`` bytes, would exceed
    ``2 * max_chunk_mb``). ``final_norm``: "frozen" (default; final norm scale of the clean
    run, paper Section 4.3) or "recomputed" (module docstring). Returns :class:`DirectEffects`
    (losses in nats).
    Raises: ValueError for contexts shorter than 2 tokens, an unknown ``final_norm``, or a
    frozen final norm that :func:`norm_spec` does not recognise.
    """
    n_ctx, P = tokens.shape
    if P < 2:
        raise ValueError(f"contexts of {P} token(s): need at least 2 to score a next-token prediction")
    ab = DirectEffectAblator(adapter, mean_z_LHD, max_chunk_mb, fast, final_norm)
    d = adapter.dims
    per_ctx = (P - 1) * 4 * (d.n_layers * d.n_heads * d.d_head + d.d_model + (d.n_layers * d.d_model if ab.post else 0))
    fit = max(1, int(2 * max_chunk_mb * 2**20 // per_ctx))  # captured activations stay under 2 x max_chunk_mb
    if fit < batch_size:
        log.info("batch of %d contexts would capture %.0f MB; using %d per forward pass", batch_size,
                 batch_size * per_ctx / 2**20, fit)
        batch_size = fit
    parts: list[tuple] = []
    starts = range(0, n_ctx, batch_size)
    n_chunks = sum(-(-min(batch_size, n_ctx - s) * (P - 1) // ab.block_rows) for s in starts)
    bar = tqdm(total=n_chunks * adapter.dims.n_layers,
               desc=f"direct effects, all heads ({'fast' if ab.fast else 'exact'}, final norm {final_norm})",
               unit="layer", disable=not progress)
    for s in starts:
        ids = tokens[s:s + batch_size]
        sel = torch.ones_like(ids, dtype=torch.bool)
        sel[:, -1] = False
        cap = capture(adapter, ids, sel)
        parts.append(ab.run(cap, ids[:, 1:].reshape(-1), bar))
    bar.close()
    loss, logit, bl, bg = (torch.cat([p[i] for p in parts], -1).numpy() for i in range(4))
    ctx = np.repeat(np.arange(n_ctx), P - 1)
    pos = np.tile(np.arange(P - 1), n_ctx)
    return DirectEffects(loss, logit, bl, bg, tokens[:, 1:].reshape(-1).numpy(), ctx, pos,
                         "fast" if ab.fast else "exact", final_norm)


@torch.no_grad()
def reference_per_head(adapter: Adapter, input_ids: torch.Tensor, mean_z_LHD: torch.Tensor,
                       heads: list[tuple[int, int]] | None = None, progress: bool = False,
                       final_norm: str = "frozen") -> np.ndarray:
    """Slow reference: one full forward pass per head, the head's direct path patched by a hook.

    For each head, its ``delta`` (module docstring; from a clean pass) enters at the final norm
    and the model's own unembedding and soft-cap give the logits. ``final_norm="recomputed"``:
    a pre-hook adds ``delta`` to the final norm's input (the model's norm recomputes its scale);
    ``"frozen"``: a forward hook adds ``P(delta) * inv_sigma(clean input) * w`` to the norm's
    clean output (scale of the clean run). ``input_ids [batch, pos]``; returns the per-token
    loss ``[len(heads), batch * (pos - 1)]`` in nats (batch-major, as
    :func:`corpus_direct_effects`). ``heads`` default: all.
    Raises: ValueError for an unknown ``final_norm`` or a frozen unrecognised final norm.
    """
    check_final_norm(final_norm)
    fnorm = adapter.final_norm()
    spec = norm_spec(fnorm, adapter.device) if final_norm == "frozen" else None
    if final_norm == "frozen" and spec is None:
        raise ValueError(_unsupported(fnorm))
    d = adapter.dims
    heads = heads or [(i, h) for i in range(d.n_layers) for h in range(d.n_heads)]
    cap = capture(adapter, input_ids)
    B, P = input_ids.shape
    z = cap.z.reshape(B, P, d.n_layers, d.n_heads, d.d_head)
    tgt = input_ids[:, 1:].to(adapter.device)
    out = np.zeros((len(heads), B * (P - 1)), dtype=np.float32)
    for i, (layer, h) in enumerate(tqdm(heads, desc="reference: one forward per head", disable=not progress)):
        W_O = adapter.W_O_layer(layer)[0][h].float()
        delta = (mean_z_LHD[layer, h].to(W_O.device) - z[:, :, layer, h].to(W_O.device)) @ W_O
        if cap.attn_out is not None:
            a = cap.attn_out.reshape(B, P, d.n_layers, -1)[:, :, layer].to(W_O.device)
            norm = adapter.attn_out_norm(layer)
            delta = _norm(norm, a + delta) - _norm(norm, a)

        def hook(_m, args, kwargs, delta=delta):
            if args:
                return (args[0] + delta.to(args[0].device, args[0].dtype), *args[1:]), kwargs
            key = next(iter(kwargs))
            return args, {**kwargs, key: kwargs[key] + delta.to(kwargs[key].device, kwargs[key].dtype)}

        def frozen_hook(_m, args, kwargs, out, delta=delta):
            x = _first_input(args, kwargs).to(spec.w.device, torch.float32)
            add = spec.P(delta.to(x.device)) * spec.inv_sigma(x) * spec.w
            return out + add.to(out.device, out.dtype)

        with _hooks([(fnorm, "fwd", frozen_hook) if spec is not None else (fnorm, "pre", hook)]):
            logits = adapter.model(input_ids=input_ids.to(adapter.device), use_cache=False).logits.float()
        lp = logits[:, :-1].log_softmax(-1).gather(-1, tgt[..., None])[..., 0]
        out[i] = (-lp).reshape(-1).cpu().numpy()
    return out
