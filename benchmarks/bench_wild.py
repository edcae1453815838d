"""Benchmark: direct-effect mean ablation of every head (successor_heads.wild.direct_effect, paper
Section 4.3), all ratios measured in one run on this machine.

(a) fast path (one forward pass per batch, then every head from rank-d_head products) against
    one forward pass per head (``reference_per_head`` on ``--ref-heads`` heads spread over the
    layers, extrapolated linearly to all heads); target >= 20x;
(b) achieved rate of the contraction ``dz [H, N, d_head] x K [H, d_head, d_vocab]`` with its
    streamed log-sum-exp, as a fraction of a plain ``torch.matmul`` of the same shapes (the
    vocabulary cut to ``--plain-cols`` columns to bound memory; best of 3) and of a square
    2048^3 matmul (the machine's compute-bound peak), in float32 and in
    bfloat16 (``wild.compute_dtype``), with bfloat16's error against float32 (max |loss
    difference| in nats; share of tokens whose winning head changes, both criteria);
(c) time against tokens (all and half the contexts) and against heads (all and half the
    layers, i.e. half the heads);
(d) projected time of the paper's setting (Pythia-1.4B: 128 x 512 tokens, 24 layers x 16 heads,
    d_head 128, d_model 2048, d_vocab 50304) from the measured rates.

Timings are printed only (never asserted in tests); each fast-path timing is the best of two
runs, with wall and process CPU seconds (CPU seconds do not count time spent waiting for a
shared machine). ``K``: forming each layer's ``[H, d_head,
d_vocab]`` unembedding once per pool of contexts (its cost shrinks per token as pools grow).

    python benchmarks/bench_wild.py --model-dir results/smollm2-135m/model
    python benchmarks/bench_wild.py --model-dir results/gemma3-270m/model --n-contexts 8
    python benchmarks/bench_wild.py --tiny gemma3 --n-contexts 2 --context-len 32   # no download
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
import contextlib
import time

import numpy as np
import torch

from successor_heads.core.adapters import get_adapter
from successor_heads.core.corpus import load_corpus
from successor_heads.wild.direct_effect import corpus_direct_effects, mean_z
from successor_heads.wild.direct_effect_reference import reference_per_head
from successor_heads.wild.winners import effects, winning_heads

PYTHIA = dict(n_tokens=128 * 511, n_layers=24, n_heads=16, d_head=128, d_model=2048, d_vocab=50304,
              n_params_nonembedding=1.21e9)  # Pythia paper, Table 1


def plain_rate(H: int, N: int, k: int, cols: int, dtype: torch.dtype, reps: int = 3) -> float:
    """Best GFLOP/s of ``torch.matmul([H, N, k], [H, k, cols])`` (fresh output each time)."""
    x, y = torch.randn(H, N, k).to(dtype), torch.randn(H, k, cols).to(dtype)
    torch.matmul(x, y)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(x, y)
        best = min(best, time.perf_counter() - t0)
    return 2 * H * N * k * cols / best / 1e9


def rates(de) -> dict:
    """GFLOP/s of the contraction and of forming K (wall time of the layer phase split by their
    thread seconds), and of the whole ablation (contraction flops / ablation wall)."""
    s, f = de.profile["seconds"], de.profile["flops"]
    busy = s["contraction"] + s["K"]
    wall_c, wall_k = s["layers"] * s["contraction"] / busy, s["layers"] * s["K"] / busy
    total = s["prep"] + s["clean"] + s["layers"]
    return {"contraction": f["contraction"] / wall_c / 1e9, "K": f["K"] / max(wall_k, 1e-9) / 1e9,
            "overall": f["contraction"] / total / 1e9, "ablation_s": total, "K_s": wall_k, "contraction_s": wall_c}


@contextlib.contextmanager
def first_layers(model, k: int):
    """The model cut to its first ``k`` layers (for the heads scaling); restored afterwards."""
    base = model.base_model
    layers, n = base.layers, model.config.num_hidden_layers
    base.layers, model.config.num_hidden_layers = layers[:k], k
    try:
        yield get_adapter(model)
    finally:
        base.layers, model.config.num_hidden_layers = layers, n


CPU = {}  # id of a timed result -> CPU seconds of this process (robust when the machine is shared)


def timed(fn):
    """``(fn(), wall seconds)``; the process CPU seconds go to ``CPU[id(result)]``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    CPU[id(out)] = time.process_time() - c0
    return out, time.perf_counter() - t0


def best(fn, reps: int = 2):
    """The fastest of ``reps`` :func:`timed` runs (the machine may be shared)."""
    return min((timed(fn) for _ in range(reps)), key=lambda x: x[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model-dir", default="results/smollm2-135m/model")
    g.add_argument("--tiny", choices=["gpt2", "gpt_neox", "llama", "qwen2", "gemma3"])
    p.add_argument("--n-contexts", type=int, default=16, help="contexts (the wild stage's default corpus: 16)")
    p.add_argument("--context-len", type=int, default=128)
    p.add_argument("--ref-heads", type=int, default=4, help="heads timed with one forward pass each")
    p.add_argument("--max-chunk-mb", type=int, default=1024)
    p.add_argument("--plain-cols", type=int, default=4096, help="vocabulary columns of the plain matmul")
    p.add_argument("--final-norm", choices=["frozen", "recomputed"], default="frozen")
    p.add_argument("--skip-scaling", action="store_true", help="skip (c), the half-size runs")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    if args.tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tiny models live in the tests' support package
        from tests.support.tiny import make_model

        model, tok = make_model(args.tiny)
        name = f"tiny-{args.tiny}"
    else:
        from successor_heads.core.loading import load_model

        model, tok = load_model(args.model_dir)
        name = args.model_dir
    a = get_adapter(model)
    d = a.dims
    n_all = d.n_layers * d.n_heads
    c = load_corpus({"name": "pydoc", "kind": "pydoc", "n_contexts": args.n_contexts,
                     "context_len": args.context_len}, tok)
    ids = c.tokens
    mz = mean_z(a, ids, batch_size=len(ids), skip_first=c.has_bos)
    fn, mb = args.final_norm, args.max_chunk_mb
    N = ids.shape[0] * (ids.shape[1] - 1)
    print(f"model {name}: {d.n_layers} layers x {d.n_heads} heads = {n_all} heads, d_head {d.d_head}, "
          f"d_model {d.d_model}, d_vocab {d.d_vocab}; torch threads {torch.get_num_threads()}")
    print(f"contexts: {ids.shape[0]} x {ids.shape[1]} tokens of {c.description} ({N} scored); final norm {fn}")

    run = lambda ids_, dtype="float32", adapter=a: corpus_direct_effects(  # noqa: E731
        adapter, ids_, mz[:adapter.dims.n_layers], batch_size=len(ids_), max_chunk_mb=mb, final_norm=fn,
        compute_dtype=dtype)
    run(ids[:1, :16])  # warm-up
    plain = {dt: plain_rate(d.n_heads, N, d.d_head, min(args.plain_cols, d.d_vocab), dt)
             for dt in (torch.float32, torch.bfloat16)}
    de, t_fast = best(lambda: run(ids))
    pr, r = de.profile, rates(de)
    print(f"\nfast path ({de.method}, {pr['pools']} pool(s), blocks of {pr['rows']} rows x {pr['width']} columns, "
          f"{pr['workers']} worker thread(s)): {t_fast:.2f} s = forward passes {pr['forward']:.2f} s + ablation "
          f"{r['ablation_s']:.2f} s (K {r['K_s']:.2f} s, contraction {r['contraction_s']:.2f} s)")

    # (a) one forward pass per head
    k = min(args.ref_heads, n_all)
    flat = np.linspace(0, n_all - 1, k).round().astype(int)
    heads = [(int(f) // d.n_heads, int(f) % d.n_heads) for f in flat]
    ref, t_ref = timed(lambda: reference_per_head(a, ids, mz, heads, final_norm=fn))
    t_ref = t_ref / k * n_all
    err = float(np.abs(de.loss.reshape(n_all, -1)[flat] - ref).max())
    c_ref, c_fast = CPU[id(ref)] / k * n_all, CPU[id(de)]
    print(f"\n(a) one forward pass per head ({k} heads timed, x{n_all / k:.1f}): {t_ref:.1f} s (extrapolated; "
          f"CPU {c_ref:.1f} s against the fast path's {c_fast:.1f} s)")
    print(f"    speed-up of the fast path: {t_ref / t_fast:.1f}x wall, {c_ref / c_fast:.1f}x CPU time (target >= 20x: "
          f"{'PASS' if t_ref / t_fast >= 20 else 'FAIL'}); max |loss difference| on the timed heads {err:.2e} nats")

    # (b) rates, float32 and bfloat16
    de16, t16 = best(lambda: run(ids, "bfloat16"))
    plain = {dt: max(r, plain_rate(d.n_heads, N, d.d_head, min(args.plain_cols, d.d_vocab), dt))
             for dt, r in plain.items()}  # best of before and after
    peak = {dt: plain_rate(1, 2048, 2048, 2048, dt) for dt in (torch.float32, torch.bfloat16)}
    print(f"\n(b) plain torch.matmul [{d.n_heads}, {N}, {d.d_head}] x [{d.n_heads}, {d.d_head}, "
          f"{min(args.plain_cols, d.d_vocab)}]: float32 {plain[torch.float32]:.1f} GFLOP/s, "
          f"bfloat16 {plain[torch.bfloat16]:.1f} GFLOP/s (square 2048^3 matmul, the compute-bound peak: "
          f"float32 {peak[torch.float32]:.1f}, bfloat16 {peak[torch.bfloat16]:.1f} GFLOP/s)")
    for label, dd, t, dtype in (("float32", de, t_fast, torch.float32), ("bfloat16", de16, t16, torch.bfloat16)):
        ref_rate = plain[dtype]
        r = rates(dd)
        print(f"    {label:8s}: total {t:7.2f} s; contraction {r['contraction']:6.1f} GFLOP/s = "
              f"{r['contraction'] / ref_rate:.2f} of the plain {label} matmul "
              f"({r['contraction'] / plain[torch.float32]:.2f} of float32; {r['contraction'] / peak[dtype]:.2f} of "
              f"the {label} peak); K {r['K']:.1f} GFLOP/s; "
              f"whole ablation {r['overall']:.1f} GFLOP/s of contraction = {r['overall'] / ref_rate:.2f} of plain")
    diff = np.abs(de16.loss - de.loss)
    e32 = effects(de.loss, de.base_loss, de.target_logit, de.base_logit)
    e16 = effects(de16.loss, de16.base_loss, de16.target_logit, de16.base_logit)
    changed = {k_: float((winning_heads(e32[k_]) != winning_heads(e16[k_])).mean()) for k_ in e32}
    print(f"    bfloat16 vs float32: speed-up {t_fast / t16:.2f}x wall, {CPU[id(de)] / CPU[id(de16)]:.2f}x CPU; "
          f"max |loss difference| {diff.max():.2e} nats "
          f"(mean {diff.mean():.1e}; largest ablation effect {np.abs(e32['loss']).max():.2f} nats); "
          f"winning head changes on {100 * changed['loss']:.2f}% of tokens (loss criterion), "
          f"{100 * changed['logit']:.2f}% (logit criterion)")

    # (c) scaling with tokens and with heads
    if not args.skip_scaling:
        half_ctx = max(1, len(ids) // 2)
        de_f, t_full = de, t_fast
        de_h, t_half = best(lambda: run(ids[:half_ctx]))
        with first_layers(model, max(1, d.n_layers // 2)) as a_half:
            de_l, t_lay = best(lambda: run(ids, adapter=a_half))
        n_half = half_ctx * (ids.shape[1] - 1)
        rf, rh, rl = rates(de_f), rates(de_h), rates(de_l)
        cpu = lambda x: CPU[id(x)]  # noqa: E731
        print(f"\n(c) tokens: {n_half} -> {N}: {t_half:.2f} s -> {t_full:.2f} s (x{t_full / t_half:.2f} for "
              f"x{N / n_half:.2f} tokens; CPU {cpu(de_h):.1f} -> {cpu(de_f):.1f} s, "
              f"x{cpu(de_f) / cpu(de_h):.2f}); ablation {rh['ablation_s']:.2f} -> {rf['ablation_s']:.2f} s, of which "
              f"K {rh['K_s']:.2f} -> {rf['K_s']:.2f} s (fixed per pool) and contraction {rh['contraction_s']:.2f} -> "
              f"{rf['contraction_s']:.2f} s")
        nh = max(1, d.n_layers // 2) * d.n_heads
        print(f"    heads: {nh} -> {n_all}: {t_lay:.2f} s -> {t_full:.2f} s (x{t_full / t_lay:.2f} for "
              f"x{n_all / nh:.2f} heads; CPU {cpu(de_l):.1f} -> {cpu(de_f):.1f} s, "
              f"x{cpu(de_f) / cpu(de_l):.2f}); contraction {rl['contraction_s']:.2f} -> {rf['contraction_s']:.2f} s")

    # (d) the paper's setting, from this run's rates
    r = rates(de)
    P = PYTHIA
    hd = P["n_heads"] * P["d_head"]
    pool = max(1, int(mb * 2**20 // (4 * (P["n_layers"] * hd + P["d_model"]))))
    n_pools = -(-P["n_tokens"] // pool)
    fl_c = 2 * P["n_tokens"] * hd * P["d_vocab"] * P["n_layers"]
    fl_k = 2 * n_pools * P["n_layers"] * hd * P["d_model"] * P["d_vocab"]
    # forward passes: non-embedding parameters (the capture stops before the unembedding; one
    # forward pass per head also unembeds)
    fl_fwd = 2 * P["n_params_nonembedding"] * P["n_tokens"]
    fl_unembed = 2 * P["d_model"] * P["d_vocab"] * P["n_tokens"]
    non_embed = sum(q.numel() for q in model.base_model.parameters()) - a.W_E.numel()
    fwd_rate = 2 * non_embed * N / pr["forward"] / 1e9
    # a family whose K step did no measurable work here (e.g. Gemma3) projects K at the contraction's rate
    k_rate = r["K"] if r["K"] > 0 else r["contraction"]
    t_proj = fl_c / r["contraction"] / 1e9 + fl_k / k_rate / 1e9 + fl_fwd / fwd_rate / 1e9
    t_ref_proj = (fl_fwd + fl_unembed) * P["n_layers"] * P["n_heads"] / fwd_rate / 1e9
    print(f"\n(d) paper setting (Pythia-1.4B, {P['n_tokens']} tokens, {P['n_layers'] * P['n_heads']} heads), "
          f"max_chunk_mb {mb} ({n_pools} pools of {pool} tokens): contraction {fl_c / 1e12:.0f} TFLOP at "
          f"{r['contraction']:.0f} GFLOP/s + K {fl_k / 1e12:.0f} TFLOP at {k_rate:.0f} GFLOP/s + forward passes "
          f"{fl_fwd / 1e12:.0f} TFLOP at {fwd_rate:.0f} GFLOP/s = {t_proj / 3600:.1f} h in float32 on this machine "
          f"(one forward pass per head: {t_ref_proj / 3600:.0f} h)")


if __name__ == "__main__":
    main()
