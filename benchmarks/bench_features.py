"""Benchmark the features stage (paper, Section 3): SAE training throughput and stage wall time.

    python benchmarks/bench_features.py                       # default model (smollm2-135m)
    python benchmarks/bench_features.py --model gemma3-270m --model-dir results/gemma3-270m/model
    python benchmarks/bench_features.py features.steps=500    # extra Hydra overrides

Prints (1) SAE training throughput in rows/s (the default d_sae and batch size, on synthetic
rows of the model's d_model) with one torch thread (what the stage uses) and with torch's
default thread count, and (2) the stage's wall time on the real model, written to a temporary
folder so ``results/`` is not touched (needs the model folder and its ``successor_scores.h5``).
Run from the project root (the Hydra config lives in ``config/``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from successor_heads.config import compose
from successor_heads.features.sae import train_sae


def sae_throughput(d_model: int, d_sae: int, batch_size: int, steps: int, threads: int | None) -> float:
    x = torch.randn(1000, d_model, generator=torch.Generator().manual_seed(0))
    _, hist = train_sae(x, d_sae, steps=steps, batch_size=batch_size, num_threads=threads)
    return hist["rows_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--model-dir", default=None, help="default: results/<model>/model")
    p.add_argument("--scores", default=None, help="default: <model-dir>/../successor_scores.h5")
    p.add_argument("--sae-steps", type=int, default=200, help="steps per throughput measurement")
    p.add_argument("--skip-stage", action="store_true", help="only measure SAE throughput")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. features.n_saes=3")
    a = p.parse_args()
    cfg = compose(a.model, a.overrides)
    fc = cfg.features
    model_dir = Path(a.model_dir or Path(cfg.results_dir) / a.model / "model")
    scores = Path(a.scores or model_dir.parent / "successor_scores.h5")
    d_model = 576
    if (model_dir / "config.json").is_file():
        d_model = json.loads((model_dir / "config.json").read_text()).get("hidden_size", d_model)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}")
    for threads in (1, None):
        rps = sae_throughput(d_model, fc.d_sae, fc.batch_size, a.sae_steps, threads)
        label = "1 thread" if threads else f"{torch.get_num_threads()} threads (torch default)"
        print(f"SAE training, d_model={d_model} d_sae={fc.d_sae} batch={fc.batch_size}, {label}: {rps:,.0f} rows/s "
              f"({fc.steps * fc.batch_size / rps:.1f} s per SAE of {fc.steps} steps)")
    if a.skip_stage:
        return
    if not (model_dir / "manifest.json").is_file() or not scores.is_file():
        print(f"stage: skipped ({model_dir}/manifest.json or {scores} missing; run the fetch and scores stages)")
        return
    from successor_heads.features import stage as features

    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        t0 = time.time()
        s = features.run(cfg, model_dir, tmp, progress=False, scores=scores)
        wall = time.time() - t0
    m10 = s["moduli"].get("10", {})
    print(f"stage wall time ({a.model}, {fc.n_saes} SAEs x {fc.steps} steps, {s['token_counts']['total']} rows): "
          f"{wall:.1f} s")
    print(f"  FVU {s['fvu_mean']:.3f}, L0 {s['l0_mean']:.1f}, mod-10 coverage {m10.get('coverage_mean', float('nan')):.3f}, "
          f"probe-SAE cosine {m10.get('probe_sae_cosine_mean', float('nan')):.2f}")


if __name__ == "__main__":
    main()
