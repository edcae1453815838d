"""Fast path of the direct-effect mean ablation, for every family (paper Section 4.3; the exact
path and the definitions are in :mod:`successor_heads.wild.direct_effect`).

Notation (per layer; ``N`` scored positions, ``H`` heads, ``dh`` = d_head, ``M`` = d_model,
``V`` = d_vocab). The final norm is ``f(x) = P_f(x) * inv_f(x) * w_f + b_f`` (``P``: centring
for LayerNorm, identity for RMSNorm); its linear part is ``Lf(x) = P_f(x) * w_f``. Gemma3's
post-attention norm ``p`` has the same form. ``dz_h = mean_z_h - z_h``, ``d_h = dz_h @ W_O^h``.

The residual change of ablating head ``h`` is ``delta_h = d_h`` without a post-attention norm,
and with one (``a``: the attention output, ``s(.) = inv_p(.)`` a per-position scalar)

    delta_h = p(a + d_h) - p(a) = P_p(a) * w_p * (s(a + d_h) - s(a)) + P_p(d_h) * w_p * s(a + d_h),

which is linear in ``d_h`` once the two scalars are known. With ``U = Lf(resid) @ W_U``,
``c = b_f @ W_U + b_U``, ``K_h = Lf(P_p(W_O^h) * w_p) @ W_U [dh, V]`` (no ``P_p``, ``w_p``
without a post norm), ``D_h = dz_h @ K_h`` and ``A = Lf(P_p(a) * w_p) @ W_U`` the logits are

    logits_h = gamma * U + c + alpha_h * A + beta_h * D_h        (then the soft-cap, Gemma)

with per-(head, position) scalars ``gamma = inv_f(resid)`` (frozen; ``inv_f(resid + delta_h)``
when recomputed), ``beta_h = gamma * s(a + d_h)``, ``alpha_h = gamma * (s(a + d_h) - s(a))``
(``alpha = 0``, ``beta = gamma`` without a post norm). Since ``a = sum_h z_h @ W_O^h + b_O``,
``A = A_0 - sum_h D_h`` with the constant ``A_0 = Lf(P_p(sum_h mean_z_h @ W_O^h + b_O) * w_p)
@ W_U``: one batched product ``[H, N, dh] x [H, dh, V]`` per layer gives every head, Gemma3
included, and each head costs ``dh`` multiply-adds per logit instead of ``M``. For very few
positions (``N * (M - dh) < dh * M``) forming ``K`` costs more than it saves, and ``D_h`` is
taken as ``(dz_h @ Lf(P_p(W_O^h) * w_p)) @ W_U`` instead ("direct" form; same numbers).

Contraction (why it is fast): the vocabulary is cut in chunks of ``width`` columns and the
positions in blocks of ``rows``; each ``[H, rows, width]`` block is produced, exponentiated and
summed while it is in cache, and only ``[H, N]`` log-sum-exps are kept (no ``[N, V]`` block per
head). The clean logits of a chunk are computed once and shared by every layer and head, and
each layer's ``K`` once per chunk and pool of positions. In the common case (frozen, no post
norm) the block is one ``baddbmm``: the base ``(clean - shift) * log2(e)`` (shift: the chunk's
clean row maximum) plus ``(dz * beta * log2(e)) @ K``, so only ``exp2`` and a sum follow
(``exp2`` is about 3x cheaper than ``exp`` on the CPU). With a soft-cap, ``cap * tanh(x / cap)
- cap = -2 cap * sigmoid(-2 x / cap)`` lies in ``[-2 cap, 0]``, so the shift is ``cap`` and
``sigmoid`` (vectorised) replaces ``tanh``. A (head, position) whose shifted sum leaves the safe
float range (a logit change of more than ~88 nats) is recomputed for that block with a
max-shifted ``logsumexp``. The layers run on a few Python threads with single-threaded torch
ops (:meth:`FastContraction.run`).

``compute_dtype="bfloat16"`` (config ``wild.compute_dtype``): only the head-dependent product
``D_h`` (``dz``, ``K``) is bfloat16; the clean logits, the scalars, the exponentials and the
target logits stay float32, so the logit criterion is unchanged. Measured against float32 with
benchmarks/bench_wild.py on a 2-core AVX-512 CPU: SmolLM2-135M (16 x 128 tokens) up to 1.0e-2
nats of loss error, 1.3% of tokens with another winning head (loss criterion), 1.3x faster;
Gemma3-270m (8 x 128) 2.3e-2 nats, 0.6% of tokens, 1.7x faster. Not negligible, hence opt-in
(default float32).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import torch

from successor_heads.wild import COMPUTE_DTYPE_NAMES
from successor_heads.wild.direct_effect_norms import run_norm

LOG2E = 1.0 / math.log(2.0)
#: ``wild.compute_dtype`` name -> torch dtype of the per-head logit change
COMPUTE_DTYPES = {name: getattr(torch, name) for name in COMPUTE_DTYPE_NAMES}
#: A shifted sum of exponentials outside [_TINY, inf) is recomputed with a max shift.
_TINY = 2.0 ** -100
#: Most vocabulary columns per chunk and rows per block (the [H, rows, width] float32 block
#: stays a few MB, i.e. in the last-level cache; measured with benchmarks/bench_wild.py).
MAX_WIDTH, MAX_ROWS = 1024, 128


def check_compute_dtype(name: str) -> torch.dtype:
    """The torch dtype of ``name`` (one of :data:`COMPUTE_DTYPES`).

    Raises: ValueError naming the key ``wild.compute_dtype`` and the allowed values.
    """
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"wild.compute_dtype={name!r}: must be one of {', '.join(COMPUTE_DTYPES)} "
                         "(bfloat16: the per-head logit change in bfloat16, everything else float32)")
    return COMPUTE_DTYPES[name]


class FastContraction:
    """Every head's direct-effect loss from rank-``dh`` products (module docstring).

    Built by :class:`~successor_heads.wild.direct_effect.DirectEffectAblator` when its final norm
    (and every post-attention norm) has a recognised :class:`~successor_heads.wild.direct_effect_norms.NormSpec`. ``rows``/``width``:
    block shape (None: :data:`MAX_ROWS`, :data:`MAX_WIDTH`, less under ``max_chunk_mb``);
    ``workers``: threads of the contraction (None: ``torch.get_num_threads()``; 1 off the CPU).
    ``timings`` accumulates wall seconds per phase (``prep``, ``clean``, ``layers``) and thread
    seconds of ``K`` (forming the right factor) and ``contraction`` (the blocks); ``flops``
    counts 2 x multiply-adds of ``K`` and ``contraction``.
    """

    def __init__(self, *, dims, spec, device: torch.device, W_U: torch.Tensor, b_U: torch.Tensor | None,
                 cap: float | None, W_O: list[tuple[torch.Tensor, torch.Tensor]], post_norms: list | None,
                 posts: list | None, mean_z: torch.Tensor, frozen: bool, block_rows: int, max_chunk_mb: float,
                 dtype: torch.dtype, rows: int | None = None, width: int | None = None, workers: int | None = None):
        """``dims``: the model's :class:`~successor_heads.core.adapters.Dims`; ``spec``: the final
        norm's :class:`~successor_heads.wild.direct_effect_norms.NormSpec`; ``W_U [d_model,
        d_vocab]`` and ``b_U [d_vocab]`` (or None) float32 on ``device``; ``cap``: the final logit
        soft-cap (None: none); ``W_O``: per layer ``(W_O [n_heads, d_head, d_model], b_O
        [d_model])``; ``post_norms``: per layer the post-attention norm module and ``posts`` its
        NormSpec (both None without one); ``mean_z [n_layers, n_heads, d_head]``; ``frozen``:
        ``final_norm == "frozen"``; ``block_rows``, ``max_chunk_mb``: the memory bound."""
        self.d, self.f, self.posts, self.dtype = dims, spec, posts, dtype
        self.dev, self.cap, self.mean_z, self.frozen = device, cap, mean_z, frozen
        self.post_norms, self.block_rows, self.max_chunk_mb = post_norms, block_rows, max_chunk_mb
        self.max_rows, self.max_width, self.workers = rows or MAX_ROWS, width or MAX_WIDTH, workers
        d, f, dev = dims, spec, device
        self.W_U = W_U
        self.W_Uc = self.W_U if dtype == torch.float32 else self.W_U.to(dtype)
        c = None if f.b is None else f.b @ self.W_U
        self.c = c if b_U is None else (b_U if c is None else c + b_U)
        self.g = -2.0 / cap if cap else LOG2E  # log2 units; with a cap, -2 / cap before sigmoid
        self.W_O, self.b_O, self.KW, self.a0 = [W for W, _ in W_O], [b for _, b in W_O], [], []
        for layer in range(d.n_layers):
            W, b = W_O[layer]
            G, bp = W, b
            if posts is not None:  # the post norm's linear part, applied per head and to b_O
                p = posts[layer]
                G, bp = p.P(W) * p.w, p.P(b) * p.w
            KW = f.P(G) * f.w  # Lf(G) [H, dh, M]
            self.KW.append(KW)
            if posts is not None:
                self.a0.append(torch.einsum("hd,hdm->m", mean_z[layer], KW) + f.P(bp) * f.w)
        self.KWc = [k.to(dtype) for k in self.KW]
        self.timings: dict[str, float] = defaultdict(float)
        self.flops: dict[str, int] = defaultdict(int)

    # -- checks and shapes ----------------------------------------------------------------
    def applicable(self, cap, tol: float) -> str | None:
        """None when the captured batch obeys the forms used here; else the reason (the caller
        then takes the exact path): each post norm equals its NormSpec and the attention output
        equals ``sum_h z_h @ W_O^h + b_O``."""
        if self.posts is None:
            return None
        for layer, p in enumerate(self.posts):
            a = cap.attn_out[:, layer]
            if not torch.allclose(p(a), run_norm(self.post_norms[layer], a), rtol=tol, atol=tol):
                return f"post-attention norm of layer {layer} does not match its RMSNorm/LayerNorm form"
            W, b = self.W_O[layer], self.b_O[layer].to(a.device)
            a_hat = torch.einsum("nhd,hdm->nm", cap.z[:, layer], W) + b
            if not torch.allclose(a_hat, a, rtol=tol, atol=tol * float(a.abs().max())):
                return f"attention output of layer {layer} is not the sum of its heads' outputs"
        return None

    def blocking(self, N: int) -> tuple[int, int]:
        """``(rows, width)``: positions per block and vocabulary columns per chunk, so that the
        chunk's ``[N, width]`` clean logits (two) and the blocks (``[H, rows, width]``, a few
        per worker) stay within ``max_chunk_mb``."""
        d = self.d
        rows = max(1, min(N, self.max_rows, self.block_rows))
        per_col = 4 * (2 * N + 3 * d.n_heads * rows * self.n_workers() + d.n_heads * d.d_head)
        width = int(self.max_chunk_mb * 2**20 // per_col)
        width = width // 128 * 128 if width >= 256 else max(8, width)
        return rows, min(width, self.max_width, d.d_vocab)

    def n_chunks(self, N: int) -> int:
        return -(-self.d.d_vocab // self.blocking(N)[1])

    def n_workers(self) -> int:
        if self.dev.type != "cpu":
            return 1
        return max(1, self.workers or torch.get_num_threads())

    def _cap(self, x: torch.Tensor) -> torch.Tensor:
        cap = self.cap
        return torch.tanh(x / cap) * cap if cap else x

    # -- the computation ------------------------------------------------------------------
    @torch.no_grad()
    def run(self, cap, tg: torch.Tensor, bar=None):
        """Loss and target logit of every head's ablation at the captured positions.

        ``cap``: a :class:`~successor_heads.wild.direct_effect.Capture` of ``N`` positions, ``tg [N]``
        their next tokens. Returns ``(loss, target_logit)`` ``[n_layers, n_heads, N]`` and
        ``(base_loss, base_logit)`` ``[N]``, float32 on the CPU; losses in nats. ``bar`` is
        advanced once per vocabulary chunk and layer.

        On the CPU the layers of a chunk run on ``workers`` Python threads, each with
        single-threaded torch ops (torch's thread count is set to 1 meanwhile and restored):
        the blocks are small, and splitting every small op across threads costs more in
        synchronisation than it gains (5-20x slower on a busy 2-core machine).
        """
        d, f = self.d, self.f
        t0 = time.perf_counter()
        x = cap.resid
        N = x.shape[0]
        inv = f.inv_sigma(x)[:, 0]
        Xf = f.P(x) * f.w
        Wt = self.W_U[:, tg]  # [M, N]: each position's target column
        Ut = (Xf * Wt.T).sum(-1)
        ct = torch.zeros(N, device=x.device) if self.c is None else self.c[tg]
        base_logit = self._cap(inv * Ut + ct)
        self.direct = N * (d.d_model - d.d_head) < d.d_head * d.d_model
        scal, Lt = self._prep(cap, inv, Wt, Ut, ct)
        rows, width = self.blocking(N)
        acc = torch.full((d.n_layers, d.n_heads, N), -math.inf, device=x.device)
        lse0 = torch.full((N,), -math.inf, device=x.device)
        self.timings["prep"] += time.perf_counter() - t0
        workers, threads = self.n_workers(), torch.get_num_threads()
        try:
            if workers > 1:
                torch.set_num_threads(1)
            with ThreadPoolExecutor(workers) as pool:
                for v0 in range(0, d.d_vocab, width):
                    t0 = time.perf_counter()
                    cols = slice(v0, min(d.d_vocab, v0 + width))
                    ch = self._clean_chunk(Xf, inv, cols, lse0, pool, workers)
                    t1 = time.perf_counter()
                    jobs = pool.map(lambda i: self._layer_chunk(cap, i, scal[i], ch, cols, rows, acc[i]),
                                    range(d.n_layers))
                    for secs, flops in jobs:
                        for k in secs:
                            self.timings[k] += secs[k]
                            self.flops[k] += flops[k]
                    self.timings["clean"] += t1 - t0
                    self.timings["layers"] += time.perf_counter() - t1
                    if bar is not None:
                        bar.update(d.n_layers)
        finally:
            torch.set_num_threads(threads)
        return (acc - Lt).cpu(), Lt.cpu(), (lse0 - base_logit).cpu(), base_logit.cpu()

    def _prep(self, cap, inv, Wt, Ut, ct):
        """Per layer: the scalars ``gamma`` (None when frozen: ``inv`` shared by the heads),
        ``alpha`` (None without a post norm), ``beta`` ``[H, N]``, the left factor ``E`` of the
        direct form, and the exact float32 target logits ``[n_layers, H, N]``."""
        d, f = self.d, self.f
        N, x = cap.resid.shape[0], cap.resid
        Lt = torch.empty(d.n_layers, d.n_heads, N, device=x.device)
        out = []
        step = max(1, int(2**26 // (4 * d.n_heads * d.d_model)))  # [H, step, M] temporaries of 64 MB
        new = lambda: torch.empty(d.n_heads, N, device=x.device)  # noqa: E731
        for layer in range(d.n_layers):
            s = {"gamma": None if self.frozen else new(), "alpha": None if self.posts is None else new(), "beta": new(),
                 "E": torch.empty(d.n_heads, N, d.d_model, dtype=self.dtype, device=x.device) if self.direct else None}
            for p0 in range(0, N, step):
                r = slice(p0, min(N, p0 + step))
                dzT = self._dz(cap, layer, r)
                E = torch.bmm(dzT, self.KW[layer])  # Lf(post-linear part of d_h) [H, n, M]
                Dt = (E * Wt[:, r].T).sum(-1)
                gamma = inv[r][None]
                if self.posts is not None or not self.frozen:
                    delta = dd = torch.bmm(dzT, self.W_O[layer])  # d_h [H, n, M]
                if self.posts is not None:
                    p, a = self.posts[layer], cap.attn_out[r, layer]
                    s0, sd = p.inv_sigma(a)[:, 0], p.inv_sigma(a[None] + dd)[..., 0]
                    if not self.frozen:
                        delta = p.P(a) * p.w * (sd - s0)[..., None] + p.P(dd) * p.w * sd[..., None]
                if not self.frozen:
                    s["gamma"][:, r] = gamma = f.inv_sigma(x[r][None] + delta)[..., 0]
                L = gamma * Ut[r] + ct[r]
                if self.posts is not None:
                    At = self.a0[layer] @ Wt[:, r] - Dt.sum(0)
                    s["alpha"][:, r] = alpha = gamma * (sd - s0)
                    s["beta"][:, r] = beta = gamma * sd
                    L = L + alpha * At
                else:
                    s["beta"][:, r] = beta = gamma.expand(d.n_heads, -1)
                Lt[layer, :, r] = self._cap(L + beta * Dt)
                if self.direct:
                    s["E"][:, r] = E
            out.append(s)
        return out, Lt

    def _dz(self, cap, layer: int, r=slice(None)) -> torch.Tensor:
        """``mean_z - z`` of one layer as ``[H, n, dh]`` float32."""
        return (self.mean_z[layer][:, None] - cap.z[r, layer].transpose(0, 1)).contiguous()

    def _clean_chunk(self, Xf, inv, cols, lse0, pool, workers: int) -> dict:
        """Clean logits ``L0 = inv * U + c`` of the vocabulary columns ``cols`` (folded into the
        clean log-sum-exp ``lse0``) and the base of the blocks: ``B = (L0 - shift) * g``
        (frozen; shift: the row maximum, or 0 with a soft-cap) or ``U`` and its row maximum
        (recomputed). Rows are split over the ``pool``."""
        N = Xf.shape[0]
        c = None if self.c is None else self.c[cols]
        width = cols.stop - cols.start
        ch = {"c": c, "cmax": 0.0 if c is None else float(c.max())}
        new = lambda *shape: torch.empty(*shape, device=Xf.device)  # noqa: E731
        if self.frozen:  # L0 (for the rare max-shifted recompute) and B
            ch.update(L0=new(N, width), B=new(N, width), shift=torch.zeros(N, device=Xf.device))
        else:
            ch.update(U=new(N, width), Umax=new(N))

        def part(r):
            U = torch.mm(Xf[r], self.W_U[:, cols], out=ch["L0" if self.frozen else "U"][r])
            L0 = U.mul_(inv[r, None]) if self.frozen else U * inv[r, None]
            if c is not None:
                L0 += c
            lse0[r] = torch.logaddexp(lse0[r], torch.logsumexp(self._cap(L0), -1))
            if not self.frozen:
                ch["Umax"][r] = U.amax(-1)
                return
            if not self.cap:
                ch["shift"][r] = L0.amax(-1)
            torch.mul(L0 - ch["shift"][r, None], self.g, out=ch["B"][r])

        step = -(-N // workers)
        list(pool.map(part, [slice(p, min(N, p + step)) for p in range(0, N, step)]))
        return ch

    def _factors(self, cap, layer: int, s: dict, cols, fused: bool):
        """The two factors of ``D``: ``[H, N, k]`` and ``[H, k, width]`` (or ``[k, width]`` in
        the direct form), in the compute dtype; ``fused`` pre-scales the left one by ``beta * g``."""
        if self.direct:
            X, R = s["E"], self.W_Uc[:, cols]
        else:
            X = self._dz(cap, layer)
            d = self.d
            R = (self.KWc[layer].view(-1, d.d_model) @ self.W_Uc[:, cols]).view(d.n_heads, d.d_head, -1)
        if fused:
            X = X * (s["beta"] * self.g)[..., None]
        return X.to(self.dtype), R

    def _D(self, X, R, rows) -> torch.Tensor:
        if R.dim() == 2:  # direct form: one product for all heads
            H, n, k = X[:, rows].shape
            return (X[:, rows].reshape(H * n, k) @ R).view(H, n, -1)
        return torch.bmm(X[:, rows], R)

    def _layer_chunk(self, cap, layer: int, s: dict, ch: dict, cols, rows: int, acc: torch.Tensor) -> dict:
        """Log-sum-exps of one layer's heads over the chunk ``cols``, folded into ``acc [H, N]``
        (rows of its own; one worker per layer). Returns thread seconds and flops per phase."""
        d, N = self.d, acc.shape[1]
        t0 = time.perf_counter()
        fused = self.frozen and self.posts is None and not self.direct
        X, R = self._factors(cap, layer, s, cols, fused)
        A0 = None if self.posts is None else self.a0[layer] @ self.W_U[:, cols]
        t1 = time.perf_counter()
        for p0 in range(0, N, rows):
            r = slice(p0, min(N, p0 + rows))
            shift = self.cap if self.cap else (ch["shift"][r] if self.frozen else None)
            if fused and self.dtype == torch.float32:  # shift, log2 scale and beta folded in the product
                y = torch.baddbmm(ch["B"][r], X[:, r], R)
            elif fused:  # bfloat16 product, float32 sum (converting first: mixed-dtype adds are slow)
                y = torch.bmm(X[:, r], R).float().add_(ch["B"][r])
            else:
                y, sh = self._general(self._D(X, R, r), s, ch, A0, r)
                shift = shift if sh is None else sh
            if self.cap:  # exp(cap * tanh(L / cap) - cap), y = -2 L / cap
                y.sigmoid_().mul_(-2.0 * self.cap * LOG2E)
            y = y.exp2_().sum(-1)
            lse = torch.log(y) + shift
            bad = ~((y > _TINY) & (y < math.inf))
            if bad.any():  # a delta beyond the float range of the shifted sum: max-shifted recompute
                exact = torch.logsumexp(self._cap(self._natural(cap, layer, s, ch, A0, cols, r)), -1)
                lse = torch.where(bad, exact, lse)
            acc[:, r] = torch.logaddexp(acc[:, r], lse)
        k = d.d_model if self.direct else d.d_head
        width = cols.stop - cols.start
        return ({"K": t1 - t0, "contraction": time.perf_counter() - t1},
                {"K": 0 if self.direct else 2 * d.n_heads * d.d_head * d.d_model * width,
                 "contraction": 2 * d.n_heads * N * k * width})

    def _general(self, D: torch.Tensor, s: dict, ch: dict, A0, r):
        """``(gamma * U + c + alpha * A + beta * D - shift) * g`` in float32 ``[H, n, width]``
        and the per-(head, position) shift (None: the chunk's shared one)."""
        g = self.g
        D = D.float()  # (bfloat16 products: one conversion, then float32 in place)
        A = None if s["alpha"] is None else A0 - D.sum(0)  # A = A_0 - sum_h D_h (a = sum of the heads' outputs)
        y = D.mul_((s["beta"][:, r] * g)[..., None])
        if A is not None:
            y.addcmul_((s["alpha"][:, r] * g)[..., None], A)
        if s["gamma"] is None:
            return y.add_(ch["B"][r]), None
        gam = s["gamma"][:, r]
        y.addcmul_((gam * g)[..., None], ch["U"][r])
        if ch["c"] is not None:
            y.add_(ch["c"] * g)
        if self.cap:
            return y, None
        sh = gam * ch["Umax"][r] + ch["cmax"]  # an upper estimate of each row's clean-like maximum
        return y.sub_((sh * g)[..., None]), sh

    def _natural(self, cap, layer: int, s: dict, ch: dict, A0, cols, r) -> torch.Tensor:
        """Float32 logits (before the soft-cap) ``[H, n, width]`` of one block, for the rare
        blocks whose shifted sum left the float range (:meth:`_layer_chunk`)."""
        if self.direct:
            D = self._D(s["E"].float(), self.W_U[:, cols], r)
        else:
            d = self.d
            K = (self.KW[layer].view(-1, d.d_model) @ self.W_U[:, cols]).view(d.n_heads, d.d_head, -1)
            D = torch.bmm(self._dz(cap, layer, r), K)
        L = D * s["beta"][:, r, None]
        if s["alpha"] is not None:
            L += s["alpha"][:, r, None] * (A0 - D.sum(0))
        if s["gamma"] is None:
            return L + ch["L0"][r]
        L += s["gamma"][:, r, None] * ch["U"][r]
        return L if ch["c"] is None else L + ch["c"]
