"""Benchmark: a mixture-of-experts model streamed from disk against the same folder in memory
(successor_heads.core.streaming, core.streaming_experts).

Builds a synthetic Mixtral-shaped model in a temporary folder (default: 4 layers, d_model 1024,
16 heads, 8 experts of d_mlp 3584, top-2, the vocabulary of an offline tokenizer, random bfloat16
weights stored one tensor per expert as Mixtral checkpoints are, one shard per layer), then, each
in a fresh subprocess so that its peak RSS is its own, opens it in memory and streamed (run in
float32) and computes the ``mlp0`` effective embeddings (``W_E`` and layer 0's experts) and the
``resid`` embeddings (a forward pass through every layer's experts) of the default task tokens.
Printed: wall time and peak RSS of each, the streamed/in-memory ratios, the largest difference
between the two runs' embeddings, and, streamed, the number of tensors read, counted by the
decoder layer their names belong to. Printed only; no test asserts them.

    python benchmarks/bench_streaming_moe.py
    python benchmarks/bench_streaming_moe.py --layers 8 --experts 16 --d-mlp 2048
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_streaming import write_shards  # the same shard writer (this folder is on sys.path)


def build(folder: Path, tokenizer_dir: Path, layers: int, d_model: int, heads: int, experts: int, d_mlp: int) -> float:
    """Write a random bfloat16 Mixtral of this shape into ``folder`` (per-expert tensors); returns GB."""
    from transformers import AutoTokenizer, MixtralConfig

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    vocab = len(tok)
    cfg = MixtralConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=d_mlp, num_hidden_layers=layers,
                        num_attention_heads=heads, num_key_value_heads=heads, num_local_experts=experts,
                        num_experts_per_tok=2, tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, dtype="bfloat16")
    cfg.architectures = ["MixtralForCausalLM"]
    folder.mkdir(parents=True)
    cfg.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, scale=0.02):
        return (torch.randn(*shape, generator=gen) * scale).to(torch.bfloat16)

    def shards():  # one at a time: memory holds one layer's tensors
        yield "model-embed.safetensors", {"model.embed_tokens.weight": rand(vocab, d_model),
                                          "lm_head.weight": rand(vocab, d_model),
                                          "model.norm.weight": 1 + rand(d_model, scale=0.1)}
        for i in range(layers):
            p, moe = f"model.layers.{i}.", f"model.layers.{i}.block_sparse_moe."
            tensors = {p + "input_layernorm.weight": 1 + rand(d_model, scale=0.1),
                       p + "post_attention_layernorm.weight": 1 + rand(d_model, scale=0.1),
                       moe + "gate.weight": rand(experts, d_model, scale=1.0),
                       **{p + f"self_attn.{n}.weight": rand(d_model, d_model) for n in ("q_proj", "k_proj", "v_proj",
                                                                                       "o_proj")}}
            for e in range(experts):
                tensors.update({moe + f"experts.{e}.w1.weight": rand(d_mlp, d_model),
                                moe + f"experts.{e}.w3.weight": rand(d_mlp, d_model),
                                moe + f"experts.{e}.w2.weight": rand(d_model, d_mlp)})
            yield f"model-layer{i:03d}.safetensors", tensors

    return write_shards(folder, shards(), "synthetic-mixtral")


def child(folder: Path, memory: str, out: Path) -> dict:
    """Open ``folder`` with ``memory``; mlp0 and resid embeddings of the task tokens (saved to ``out``)."""
    from successor_heads.core.effective_embedding import effective_embeddings, neutral_prefix
    from successor_heads.core.loading import open_model
    from successor_heads.core.streaming import streamed_of
    from successor_heads.core.tasks import build_tasks
    from successor_heads.scores.stage import task_indices

    t0 = time.perf_counter()
    model, tok, ad, _ = open_model(folder, "float32", memory=memory)
    rec = {"memory": memory, "open_s": round(time.perf_counter() - t0, 2)}
    _, ids = task_indices(build_tasks(tok))
    for mode in ("mlp0", "resid"):
        t0 = time.perf_counter()
        x = effective_embeddings(ad, ids, mode, prefix_ids=neutral_prefix(tok), batch_size=len(ids))
        rec[f"{mode}_s"] = round(time.perf_counter() - t0, 2)
        np.save(out / f"{memory}-{mode}.npy", x.float().numpy())
    stream = streamed_of(model)
    if stream is not None:  # tensors read per decoder layer, and whether each is the layer's own
        per_layer: dict[str, int] = {}
        for name in stream.tensors.reads:
            layer = name.split("layers.")[1].split(".")[0] if "layers." in name else "outside"
            per_layer[layer] = per_layer.get(layer, 0) + 1
        rec["reads_per_layer"] = per_layer
    rec["n_tokens"] = len(ids)
    rec["peak_rss_GB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--d-mlp", type=int, default=3584)
    p.add_argument("--tokenizer-dir", default="results/smollm2-135m/model")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--child", choices=["in_memory", "streamed"], help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(Path(args.folder), args.child, Path(args.out))))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_streaming_moe_"))
    try:
        t0 = time.perf_counter()
        shape = dict(layers=args.layers, d_model=args.d_model, heads=args.heads, experts=args.experts,
                     d_mlp=args.d_mlp)
        gb = build(tmp / "model", Path(args.tokenizer_dir), **shape)
        print(f"synthetic Mixtral {shape}: {gb:.2f} GB bfloat16 on disk ({2 * gb:.2f} GB in float32), "
              f"written in {time.perf_counter() - t0:.0f} s", flush=True)
        recs = {}
        for memory in ("in_memory", "streamed"):
            extra = ["--threads", str(args.threads)] if args.threads else []
            run = subprocess.run([sys.executable, __file__, "--child", memory, "--folder", str(tmp / "model"),
                                  "--out", str(tmp), *extra], stdout=subprocess.PIPE, text=True)
            if run.returncode != 0:
                raise SystemExit(f"{memory} run failed")
            recs[memory] = json.loads(run.stdout.strip().splitlines()[-1])
            print(json.dumps(recs[memory]), flush=True)
        a, b = recs["in_memory"], recs["streamed"]
        diff = {mode: float(np.abs(np.load(tmp / f"streamed-{mode}.npy") - np.load(tmp / f"in_memory-{mode}.npy")).max())
                for mode in ("mlp0", "resid")}
        print(json.dumps({"streamed_over_in_memory_peak_rss": round(b["peak_rss_GB"] / a["peak_rss_GB"], 2),
                          "streamed_over_in_memory_resid_s": round(b["resid_s"] / a["resid_s"], 2),
                          "max_abs_diff": diff}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
