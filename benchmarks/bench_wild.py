"""Benchmark: direct-effect mean ablation of every head from one forward pass per batch
(successor_heads.direct_effect) against one forward pass per head, measured in the same run.

Both methods score the same contexts (the default corpus, pydoc) with the same corpus means.
The per-head method runs on ``--ref-heads`` heads spread over the layers and is extrapolated
to all heads (it is linear in the number of heads); the largest difference between the two
methods' per-token losses on those heads is printed too. Target (issue 5): speed-up >= 5x.

    python benchmarks/bench_wild.py --model-dir results/smollm2-135m/model
    python benchmarks/bench_wild.py --tiny llama      # no download: a tiny random model
    python benchmarks/bench_wild.py --final-norm recomputed   # default: frozen (wild.final_norm)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from successor_heads.adapters import get_adapter
from successor_heads.corpus import load_corpus
from successor_heads.direct_effect import DirectEffectAblator, corpus_direct_effects, mean_z, reference_per_head


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model-dir", default="results/smollm2-135m/model")
    g.add_argument("--tiny", choices=["gpt2", "gpt_neox", "llama", "qwen2", "gemma3"])
    p.add_argument("--n-contexts", type=int, default=2)
    p.add_argument("--context-len", type=int, default=128)
    p.add_argument("--ref-heads", type=int, default=12, help="heads timed with one forward pass each")
    p.add_argument("--max-chunk-mb", type=int, default=1024)
    p.add_argument("--final-norm", choices=["frozen", "recomputed"], default="frozen",
                   help="final norm scale of the clean run (paper) or recomputed on the ablated residual")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    if args.tiny:
        from successor_heads.tiny import make_model

        model, tok = make_model(args.tiny)
        name = f"tiny-{args.tiny}"
    else:
        from successor_heads.models import load_model

        model, tok = load_model(args.model_dir)
        name = args.model_dir
    a = get_adapter(model)
    d = a.dims
    n_all = d.n_layers * d.n_heads
    c = load_corpus({"name": "pydoc", "kind": "pydoc", "n_contexts": args.n_contexts,
                     "context_len": args.context_len}, tok)
    ids = c.tokens
    mz = mean_z(a, ids, batch_size=len(ids), skip_first=c.has_bos)
    fn = args.final_norm
    ab = DirectEffectAblator(a, mz, args.max_chunk_mb, final_norm=fn)
    print(f"model {name}: {d.n_layers} layers x {d.n_heads} heads = {n_all} heads, d_vocab {d.d_vocab}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"contexts: {ids.shape[0]} x {ids.shape[1]} tokens of {c.description} "
          f"({ids.shape[0] * (ids.shape[1] - 1)} scored tokens); one-pass path: {'fast' if ab.fast else 'exact'}; "
          f"final norm: {fn}")

    corpus_direct_effects(a, ids[:1, :16], mz, batch_size=1, final_norm=fn)  # warm-up
    t0 = time.perf_counter()
    de = corpus_direct_effects(a, ids, mz, batch_size=len(ids), max_chunk_mb=args.max_chunk_mb, final_norm=fn)
    t_one = time.perf_counter() - t0

    k = min(args.ref_heads, n_all)
    flat = np.linspace(0, n_all - 1, k).round().astype(int)
    heads = [(int(f) // d.n_heads, int(f) % d.n_heads) for f in flat]
    t0 = time.perf_counter()
    ref = reference_per_head(a, ids, mz, heads, final_norm=fn)
    t_ref = (time.perf_counter() - t0) / k * n_all
    err = float(np.abs(de.loss.reshape(n_all, -1)[flat] - ref).max())

    print(f"one forward pass per batch, all {n_all} heads: {t_one:8.2f} s")
    print(f"one forward pass per head ({k} heads timed, x{n_all / k:.1f}): {t_ref:8.2f} s (extrapolated)")
    print(f"speed-up: {t_ref / t_one:.1f}x (target >= 5x: {'PASS' if t_ref / t_one >= 5 else 'FAIL'})")
    print(f"max |loss difference| on the timed heads: {err:.2e} nats; "
          f"max loss increase {float((de.loss - de.base_loss).max()):.3f} nats")


if __name__ == "__main__":
    main()
