"""GPU check: the same model in bfloat16 on CUDA against float32 on the CPU (issue 16, item 5).

Loads a fetched model folder twice through the Python API (``successor_heads.load``): CPU
float32 (the reference) and CUDA bfloat16, then compares, printing each figure and PASS/FAIL
against the stated tolerance:

* successor scores, both modes (``mlp0``: weights only, computed in float32 on either device,
  so within ``--score-tol`` (default 0.01, about two of the 265 pairs); ``resid``: from a bf16
  forward pass, within ``--resid-tol`` (default 0.05)), and whether the top head is the same;
* behavioural drops of the reference's top 8 heads (``resid``): within ``--drop-tol`` nats
  (default 0.1: bf16 activations);
* direct effects of the same heads on 2 contexts of 64 tokens: mean per head within
  ``--de-tol`` nats (default 0.05).

On a machine without CUDA it prints why it skipped and exits 0.

    python benchmarks/gpu_check.py --model-dir results/smollm2-135m/model
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="results/smollm2-135m/model")
    p.add_argument("--score-tol", type=float, default=0.01)
    p.add_argument("--resid-tol", type=float, default=0.05)
    p.add_argument("--drop-tol", type=float, default=0.1)
    p.add_argument("--de-tol", type=float, default=0.05)
    p.add_argument("--memory", default="in_memory", choices=["in_memory", "streamed"])
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: skipped, no CUDA GPU on this machine (torch.cuda.is_available() is False)")
        return 0
    import successor_heads as sh

    cpu = sh.load(args.model_dir, "float32", "cpu", memory=args.memory)
    gpu = sh.load(args.model_dir, "bfloat16", "cuda", memory=args.memory)
    print(f"gpu_check on {torch.cuda.get_device_name(0)}: {args.model_dir} (memory={args.memory})")
    ok = True

    def report(what: str, diff: float, tol: float) -> None:
        nonlocal ok
        ok &= diff <= tol
        print(f"  {what}: max |diff| {diff:.4g} (tol {tol}) {'PASS' if diff <= tol else 'FAIL'}")

    top = None
    for mode, tol in (("mlp0", args.score_tol), ("resid", args.resid_tol)):
        a = sh.successor_scores(cpu, mode=mode).set_index("label")
        b = sh.successor_scores(gpu, mode=mode).set_index("label")
        report(f"{mode} scores", float((a.score - b.score.reindex(a.index)).abs().max()), tol)
        print(f"    top head cpu {a.index[0]} gpu {b.index[0]}")
        if mode == "resid":
            top = [tuple(int(x) for x in lab[1:].split("H")) for lab in a.index[:8]]
    da = sh.behavioural_check(cpu, heads=top).set_index(["layer", "head"]).logprob_drop
    db = sh.behavioural_check(gpu, heads=top).set_index(["layer", "head"]).logprob_drop
    report("behavioural drops (nats)", float(np.nanmax(np.abs(da.values - db.reindex(da.index).values))), args.drop_tol)
    corpus = {"n_contexts": 2, "context_len": 64}
    ea = sh.direct_effects(cpu, corpus=corpus, heads=top)
    eb = sh.direct_effects(gpu, corpus=corpus, heads=top)
    cols = [c for c in ea.columns if c.startswith("L") and "H" in c]
    report("direct effects, mean per head (nats)", float(max(abs(ea[c].mean() - eb[c].mean()) for c in cols)), args.de_tol)
    print("gpu_check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
