"""Benchmark: the batched successor scorer against the plain per-head loop, in one run.

Prints, for each effective-embedding mode, the wall time of both scorers, the speed-up, and
the peak extra memory of each (RSS sampled every 2 ms above the RSS before scoring) against
the model's fp32 weight size (best of ``--repeat`` runs each). Targets (issue 2): speed-up >= 10x; peak < 2x weights.

    python benchmarks/bench_scores.py --model-dir results/smollm2-135m/model
    python benchmarks/bench_scores.py --tiny llama      # no download: a tiny random model
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
import threading
import time

import numpy as np
import psutil
import torch

from successor_heads.core.adapters import get_adapter
from successor_heads.core.effective_embedding import effective_embeddings, neutral_prefix
from successor_heads.scores.successor_score import successor_scores, successor_scores_loop
from successor_heads.scores.stage import task_indices
from successor_heads.core.tasks import build_tasks


class PeakRSS:
    """Samples this process's RSS in a thread; ``extra_mb`` = peak minus RSS at start."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.extra_mb = (self.peak - self.start) / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model-dir")
    g.add_argument("--tiny", choices=["gpt2", "gpt_neox", "llama", "qwen2", "gemma3"])
    p.add_argument("--norms", default="raw", choices=["raw", "applied"])
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each scorer; the best counts")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    if args.model_dir:
        from successor_heads.core.loading import load_model

        model, tok = load_model(args.model_dir)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tiny models live in the tests' support package
        from tests.support.tiny import make_model

        model, tok = make_model(args.tiny)
    a = get_adapter(model)
    weights_mb = sum(p.numel() for p in model.parameters()) * 4 / 2**20
    idx, ids = task_indices(build_tasks(tok, numbers_max=200, include_roman=True))
    print(f"model: {args.model_dir or args.tiny}  dims: {a.dims}  fp32 weights: {weights_mb:.0f} MB")
    print(f"tasks: {len(idx)}  tokens: {len(ids)}  pairs: {sum(t.n_pairs for t in idx)}  norms: {args.norms}")
    for mode in ("mlp0", "resid"):
        x = effective_embeddings(a, ids, mode, args.norms, prefix_ids=neutral_prefix(tok))
        t_fast, t_loop = [], []
        for _ in range(args.repeat):  # best of N for both, so scheduler noise hits neither alone
            with PeakRSS() as mf:
                t0 = time.perf_counter()
                fast = successor_scores(a, x, ids, idx, args.norms)
                t_fast.append(time.perf_counter() - t0)
            with PeakRSS() as ml:
                t0 = time.perf_counter()
                ref = successor_scores_loop(a, x, ids, idx, args.norms)
                t_loop.append(time.perf_counter() - t0)
        t_fast, t_loop = min(t_fast), min(t_loop)
        same = np.array_equal(fast.per_task, ref.per_task, equal_nan=True)
        print(f"[{mode}] vectorised {t_fast:.2f} s, loop {t_loop:.2f} s, speed-up {t_loop / t_fast:.1f}x "
              f"(target >= 10x); identical scores: {same}")
        print(f"[{mode}] peak extra memory: vectorised {mf.extra_mb:.0f} MB, loop {ml.extra_mb:.0f} MB; "
              f"ratio to fp32 weights {mf.extra_mb / weights_mb:.2f} (target < 2)")


if __name__ == "__main__":
    main()
