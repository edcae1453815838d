"""Benchmark: the cached-prefix behavioural check against the full-forward one, in one run.

For the real ordinal-list prompts of a fetched model (``ordinal_list_prompts`` with the
model's composed config: ``behaviour.n_items``, ``behaviour.max_per_family``), prints the wall
time of :func:`successor_heads.scores.behaviour.behavioural_drops` with ``cached_prefix=True`` (layers
below L run once per prompt-length group) and with ``cached_prefix=False`` (the whole model on
every ablated batch), their ratio, and the largest absolute difference of the drops (nats).
Best of ``--repeat`` runs each (default 2), alternating which path goes first, so load from
other processes hits neither alone; CPU time (``time.process_time``) is printed beside wall time.
Target (issue "the main job in five minutes on two cores"): ratio >= 1.8x, identical drops.

    python benchmarks/bench_behaviour.py --model-dir results/smollm2-135m/model
    python benchmarks/bench_behaviour.py --model-dir results/gemma3-270m/model --threads 2
    python benchmarks/bench_behaviour.py --tiny gemma3      # no download: a tiny random model

Timings are printed only; no test asserts them.
"""

from __future__ import annotations

from dataclasses import asdict

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from successor_heads.core.adapters import get_adapter
from successor_heads.scores.behaviour import behavioural_drops
from successor_heads.core.tasks import build_tasks, ordinal_list_prompts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model-dir", help="results/<name>/model; the config is composed for <name>")
    g.add_argument("--tiny", choices=["gpt2", "gpt_neox", "llama", "qwen2", "gemma3"])
    p.add_argument("--model", help="config name (default: the folder above --model-dir)")
    p.add_argument("--ablation", default=None, choices=["mean", "zero"], help="default: the config's")
    p.add_argument("--repeat", type=int, default=2, help="timed runs of each path, alternating; the best counts")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from successor_heads.config import compose

    if args.model_dir:
        from successor_heads.core.loading import load_model

        name = args.model or Path(args.model_dir).resolve().parent.name
        cfg = compose(name)
        model, tok = load_model(args.model_dir)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tiny models live in the tests' support package
        from tests.support.tiny import make_model

        cfg = compose()
        model, tok = make_model(args.tiny)
        name = f"tiny {args.tiny}"
    a = get_adapter(model)
    b = cfg.behaviour
    prompts = ordinal_list_prompts(tok, build_tasks(tok, **asdict(cfg.tasks)), b.n_items, b.max_per_family)
    ablation = args.ablation or b.ablation
    lengths = sorted({len(tok(q["prompt"])["input_ids"]) for q in prompts})
    print(f"model: {name}  dims: {a.dims}  threads: {torch.get_num_threads()}")
    print(f"prompts: {len(prompts)} in {len(lengths)} length groups {lengths}  ablation: {ablation}  "
          f"heads: all {a.dims.n_layers * a.dims.n_heads}")
    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    out = {}
    for r in range(args.repeat):
        for cached in ((True, False) if r % 2 == 0 else (False, True)):  # alternate which runs first
            t0, c0 = time.perf_counter(), time.process_time()
            out[cached] = behavioural_drops(a, tok, prompts, ablation, cached_prefix=cached)
            times[cached].append((time.perf_counter() - t0, time.process_time() - c0))
            print(f"  run {r + 1}: {'cached prefix' if cached else 'full forward '} "
                  f"{times[cached][-1][0]:.2f} s wall, {times[cached][-1][1]:.2f} s CPU", flush=True)
    (new, base_new), (old, base_old) = out[True], out[False]
    t_new, t_old = min(w for w, _ in times[True]), min(w for w, _ in times[False])
    c_new, c_old = min(c for _, c in times[True]), min(c for _, c in times[False])
    diff = float(np.nanmax(np.abs(new - old)))
    print(f"cached prefix {t_new:.2f} s, full forward {t_old:.2f} s (best wall of {args.repeat}), "
          f"ratio {t_old / t_new:.2f}x (target >= 1.8x); CPU-time ratio {c_old / c_new:.2f}x")
    print(f"max |drop difference| {diff:.2e} nats (largest |drop| {np.nanmax(np.abs(old)):.3f}); "
          f"baseline log-prob {base_new:.6f} vs {base_old:.6f}; same NaN pattern: "
          f"{bool(np.array_equal(np.isnan(new), np.isnan(old)))}")


if __name__ == "__main__":
    main()
