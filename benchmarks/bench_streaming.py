"""Benchmark: a model larger than memory, streamed from disk (successor_heads.core.streaming).

Builds a synthetic Llama-shaped model in a temporary folder (default: Llama-2-13B's shape, 40
layers, d_model 5120, 40 heads, d_mlp 13824, the vocabulary of an offline tokenizer, random
bfloat16 weights written one tensor at a time: about 26 GB on disk), then measures, each part in
a fresh subprocess so that its peak RSS is its own:

(a) weights-only ``mlp0`` successor scores of every head, streamed: wall and CPU time, peak RSS,
    and the time to read the tensors it needs from disk (measured first, in the same run) as a
    ratio; the folder's files are dropped from the page cache before each of the two timings.
    Beside it, the compute-bound floor: the float32 matmul FLOPs the method needs (MLP0, every
    head's ``x W_V`` and ``(x W_V) W_O``, the tasks' ``W_U`` blocks) at the run's own measured
    float32 matmul rate, so the ratios say whether the disk or the float32 maths bounds the run;
(b) ``resid`` embeddings and the behavioural check of the top 16 heads (by (a)'s scores) on
    the default prompt set, streamed: wall time, peak RSS and the ratio to the compute-bound
    estimate (2 x parameters x tokens at the run's own measured matmul rate);
(c) (b) for a 7B-shaped model stored in bfloat16 and run in float32 (``--part c``).

The folder is deleted when done (unless `--model-dir` keeps it). Targets (issue 16): (a) peak RSS <= 8 GB and wall <= 2x the
disk-read time; (b) peak RSS <= 16 GB. Printed only; no test asserts them.

    python benchmarks/bench_streaming.py --parts a                       # the 13B shape, part (a)
    python benchmarks/bench_streaming.py --parts a,b --layers 4 --d-model 1024 --heads 8 --d-mlp 2816   # dry run
    python benchmarks/bench_streaming.py --parts a --model-dir results/bench13b   # keep the model for reruns
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
from dataclasses import asdict
from pathlib import Path

import torch

SHAPES = {"13b": dict(layers=40, d_model=5120, heads=40, d_mlp=13824),
          "7b": dict(layers=32, d_model=4096, heads=32, d_mlp=11008)}


def build(folder: Path, tokenizer_dir: Path, layers: int, d_model: int, heads: int, d_mlp: int) -> float:
    """Write a random bfloat16 Llama of this shape into ``folder`` (one shard per layer); returns GB."""
    from transformers import AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    vocab = len(tok)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=d_mlp, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, dtype="bfloat16")
    cfg.architectures = ["LlamaForCausalLM"]
    folder.mkdir(parents=True)
    cfg.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    gen = torch.Generator().manual_seed(0)
    # one pool of N(0, 1) values, each tensor a copy of a random window of it: drawing 13B
    # normal numbers would take longer than the measurements themselves on a small machine
    pool = torch.randn(64 * 2**20 + 1, generator=gen).to(torch.bfloat16)

    def rand(*shape, scale=0.02):
        n = 1
        for k in shape:
            n *= k
        start = int(torch.randint(0, pool.numel(), (1,), generator=gen))
        flat = pool.roll(-start).repeat(-(-n // pool.numel()))[:n]
        return (flat * scale).reshape(shape).contiguous()

    def shards():  # made one at a time: memory holds one layer's tensors
        yield "model-embed.safetensors", {"model.embed_tokens.weight": rand(vocab, d_model),
                                          "lm_head.weight": rand(vocab, d_model),
                                          "model.norm.weight": 1 + rand(d_model, scale=0.1)}
        for i in range(layers):
            p = f"model.layers.{i}."
            yield f"model-layer{i:03d}.safetensors", {
                p + "input_layernorm.weight": 1 + rand(d_model, scale=0.1),
                p + "post_attention_layernorm.weight": 1 + rand(d_model, scale=0.1),
                **{p + f"self_attn.{n}.weight": rand(d_model, d_model) for n in ("q_proj", "k_proj", "v_proj", "o_proj")},
                p + "mlp.gate_proj.weight": rand(d_mlp, d_model), p + "mlp.up_proj.weight": rand(d_mlp, d_model),
                p + "mlp.down_proj.weight": rand(d_model, d_mlp)}

    return write_shards(folder, shards(), "synthetic")


def write_shards(folder: Path, shards, model: str) -> float:
    """Write ``(file name, {tensor name: bf16 tensor})`` pairs as safetensors shards of ``folder``,
    one at a time, with their index and a manifest naming ``model``; returns GB written."""
    from safetensors.torch import save_file

    weight_map, total = {}, 0
    for name, tensors in shards:
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
        total += sum(t.numel() * 2 for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "manifest.json").write_text(json.dumps({"model": model, "conversion": "benchmark"}))
    return total / 1e9


def _evict(folder: Path) -> None:
    """Drop the folder's weight files from the page cache (``POSIX_FADV_DONTNEED``; no root
    needed, other files untouched), so each timing reads from disk."""
    import os

    for path in folder.glob("*.safetensors"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GB


def part_a(folder: Path, dtype: str) -> dict:
    """Weights-only mlp0 scores of every head, streamed; the needed tensors' read time first."""
    from successor_heads.config import compose
    from successor_heads.core.effective_embedding import effective_embeddings
    from successor_heads.core.loading import open_model
    from successor_heads.core.streaming import streamed_of
    from successor_heads.core.tasks import build_tasks
    from successor_heads.scores.stage import task_indices
    from successor_heads.scores.successor_score import successor_scores

    loaded = open_model(folder, dtype, memory="streamed")
    stream, ad = streamed_of(loaded.model), loaded.adapter
    needed = [ad.model.get_input_embeddings(), ad.model.get_output_embeddings(), ad.final_norm(), ad.mlp_in_norm(0),
              ad.mlp(0), ad.mlp_out_norm(0)]
    for layer in range(ad.dims.n_layers):
        needed += [ad.attn_in_norm(layer), ad.v_proj(layer), ad.o_proj(layer), ad.attn_out_norm(layer)]
    names = [s for m in needed if m is not None for n in stream._params_of(m) for s in stream.sources_of(n)]
    _evict(folder)
    t0 = time.perf_counter()
    nbytes = 0
    for n in names:  # read (and drop) each needed tensor: the disk-read time of the method's input
        nbytes += stream.tensors.get(n).nbytes
    read_s = time.perf_counter() - t0
    stream.tensors.reads.clear()
    cfg = compose()
    idx, ids = task_indices(build_tasks(loaded.tokenizer, **asdict(cfg.tasks)))
    _evict(folder)
    t0, c0 = time.perf_counter(), time.process_time()
    x = effective_embeddings(ad, ids, "mlp0", "raw")
    r = successor_scores(ad, x, ids, idx, "raw")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    top = sorted(((float(r.overall[l, h]), l, h) for l in range(ad.dims.n_layers) for h in range(ad.dims.n_heads)),
                 reverse=True)[:16]
    # the compute-bound floor: the float32 matmul FLOPs of the method (MLP0 on every task token,
    # then per layer x W_V and (x W_V) W_O for every head, and each task's W_U block) at this
    # run's own measured float32 matmul rate
    d, n_tokens = ad.dims, len(ids)
    mlp0_params = sum(p.numel() for p in ad.mlp(0).parameters() if p.dim() == 2)
    unembed = sum(t.n_pairs * len(t.token_ids) for t in idx)
    flops = 2 * n_tokens * mlp0_params + d.n_layers * (4 * n_tokens * d.d_model * d.n_heads * d.d_head
                                                       + 2 * d.n_heads * unembed * d.d_model)
    rate = _matmul_gflops(torch.float32)
    floor = flops / (rate * 1e9)
    return {"part": "a", "heads": d.n_layers * d.n_heads, "needed_GB": round(nbytes / 1e9, 2),
            "read_s": round(read_s, 2), "scores_wall_s": round(wall, 2), "scores_cpu_s": round(cpu, 2),
            "wall_over_read": round(wall / read_s, 2), "fp32_TFLOP": round(flops / 1e12, 2),
            "matmul_fp32_GFLOPs": round(rate, 1), "compute_floor_s": round(floor, 2),
            "wall_over_floor": round(wall / floor, 2), "floor_over_read": round(floor / read_s, 2),
            "peak_rss_GB": round(_peak_rss_gb(), 2), "top16": [[l, h] for _, l, h in top]}


def _matmul_gflops(dtype: torch.dtype, n: int = 2048) -> float:
    """The matmul rate at ``dtype`` (GFLOP/s): the fastest of 5 products of two ``[n, n]`` matrices
    (the fastest, because on a shared machine the others measure the neighbours' load)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def part_b(folder: Path, dtype: str, heads: list) -> dict:
    """resid embeddings and the behavioural check of ``heads``, streamed; against the compute bound."""
    from successor_heads.config import compose
    from successor_heads.core.effective_embedding import effective_embeddings, neutral_prefix
    from successor_heads.core.loading import open_model
    from successor_heads.core.tasks import build_tasks, ordinal_list_prompts
    from successor_heads.scores.behaviour import behavioural_drops
    from successor_heads.scores.stage import task_indices

    loaded = open_model(folder, dtype, memory="streamed")
    ad, tok = loaded.adapter, loaded.tokenizer
    cfg = compose()
    tasks = build_tasks(tok, **asdict(cfg.tasks))
    _, ids = task_indices(tasks)
    prefix = neutral_prefix(tok)
    n_params = ad.n_params()
    t0 = time.perf_counter()
    effective_embeddings(ad, ids, "resid", prefix_ids=prefix, batch_size=len(ids))
    resid_s = time.perf_counter() - t0
    print(f"resid embeddings: {resid_s:.1f} s, peak RSS {_peak_rss_gb():.2f} GB so far", file=sys.stderr, flush=True)
    prompts = ordinal_list_prompts(tok, tasks, n_items=cfg.behaviour.n_items, max_per_family=cfg.behaviour.max_per_family)
    t0 = time.perf_counter()
    behavioural_drops(ad, tok, prompts, ablation=cfg.behaviour.ablation, heads=[tuple(h) for h in heads])
    behaviour_s = time.perf_counter() - t0
    rate = _matmul_gflops(getattr(torch, dtype))
    resid_tokens = len(ids) * (len(prefix) + 1)
    est = 2 * n_params * resid_tokens / (rate * 1e9)
    behaviour_est = _behaviour_flops(ad, tok, prompts, heads) / (rate * 1e9)
    return {"part": "b", "dtype": dtype, "resid_s": round(resid_s, 1), "resid_compute_bound_s": round(est, 1),
            "resid_over_bound": round(resid_s / est, 2), "behaviour_s": round(behaviour_s, 1),
            "behaviour_compute_bound_s": round(behaviour_est, 1), "behaviour_over_bound": round(behaviour_s / behaviour_est, 2),
            "n_prompts": len(prompts), "matmul_GFLOPs": round(rate, 1), "peak_rss_GB": round(_peak_rss_gb(), 2)}


def _behaviour_flops(ad, tok, prompts: list, heads: list) -> float:
    """The matmul FLOPs of the behavioural check of ``heads`` (2 x parameters x tokens): per
    prompt-length group, the mean-``z`` pass and the clean pass through every decoder layer, and
    each ablated layer L's ``K x n`` copies through layers L..end; the unembedding of the last
    position of every copy. Attention's own products (short prompts) are left out."""
    from successor_heads.scores.behaviour import _group_by_length

    n_layers, d = len(ad.layers()), ad.dims
    per_layer = sum(p.numel() for p in ad.layers()[0].parameters())
    tokens = sum(ids.numel() for ids, _ in _group_by_length(tok, prompts).values())
    k_at: dict[int, int] = {}
    for layer, _head in heads:
        k_at[ad.attention_layers[layer]] = k_at.get(ad.attention_layers[layer], 0) + 1
    layer_tokens = tokens * (2 * n_layers + sum(k * (n_layers - at) for at, k in k_at.items()))
    return 2.0 * per_layer * layer_tokens + 2.0 * d.d_model * d.d_vocab * len(prompts) * (1 + len(heads))


def run_child(args: list[str], threads: int | None = None) -> dict:
    extra = ["--threads", str(threads)] if threads else []
    # stderr passes through: a long part's progress lines show as they come
    out = subprocess.run([sys.executable, __file__, *args, *extra], stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise SystemExit(f"part failed: {args}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="a,b,c")
    p.add_argument("--shape", choices=sorted(SHAPES), default="13b")
    for k in ("layers", "d_model", "heads", "d_mlp"):
        p.add_argument(f"--{k.replace('_', '-')}", type=int, default=None, help="override the shape")
    p.add_argument("--tokenizer-dir", default="results/smollm2-135m/model")
    p.add_argument("--tmp-dir", default=None, help="where the synthetic folder goes (default: the system's)")
    p.add_argument("--model-dir", default=None,
                   help="keep the synthetic models in this folder (model/, model7/): each is written when it "
                        "has no config.json, reused otherwise, never deleted (writing the 13B shape takes minutes)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads in the measured parts (default: torch's; 1 on a busy shared machine)")
    p.add_argument("--child", choices=["a", "b"], help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="bfloat16", help=argparse.SUPPRESS)
    p.add_argument("--heads-json", default="[]", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child == "a":
        print(json.dumps(part_a(Path(args.folder), args.dtype)))
        return
    if args.child == "b":
        print(json.dumps(part_b(Path(args.folder), args.dtype, json.loads(args.heads_json))))
        return
    parts = args.parts.split(",")
    shape = dict(SHAPES[args.shape])
    shape.update({k: getattr(args, k) for k in shape if getattr(args, k) is not None})
    tmp = Path(tempfile.mkdtemp(prefix="bench_streaming_", dir=args.tmp_dir))
    kept = Path(args.model_dir) if args.model_dir else None

    def model_folder(name: str, shape_: dict) -> Path:
        folder = (kept or tmp) / name
        if (folder / "config.json").is_file():
            print(f"synthetic model {shape_}: reusing {folder}", flush=True)
            return folder
        t0 = time.perf_counter()
        gb = build(folder, Path(args.tokenizer_dir), **shape_)
        print(f"synthetic model {shape_}: {gb:.1f} GB bfloat16 on disk, written in {time.perf_counter() - t0:.0f} s",
              flush=True)
        return folder

    def done_with(folder: Path) -> None:
        if kept is None:
            shutil.rmtree(folder)

    try:
        if "a" in parts or "b" in parts:
            folder = model_folder("model", shape)
            a = run_child(["--child", "a", "--folder", str(folder)], args.threads)
            print("(a) weights-only scores:", json.dumps({k: v for k, v in a.items() if k != "top16"}), flush=True)
            if "b" in parts:
                b = run_child(["--child", "b", "--folder", str(folder), "--heads-json", json.dumps(a["top16"])],
                              args.threads)
                print("(b) resid + behaviour (top 16 heads), streamed:", json.dumps(b), flush=True)
            done_with(folder)
        if "c" in parts:
            overridden = any(getattr(args, k) is not None for k in shape)
            c_shape = shape if overridden else dict(SHAPES["7b"])
            folder = model_folder("model7", c_shape)
            print(f"(c) {c_shape}: bfloat16 on disk, run in float32", flush=True)
            a = run_child(["--child", "a", "--folder", str(folder), "--dtype", "float32"], args.threads)
            c = run_child(["--child", "b", "--folder", str(folder), "--dtype", "float32",
                           "--heads-json", json.dumps(a["top16"])], args.threads)
            print("(c) resid + behaviour, bf16 stored, float32 run, streamed:", json.dumps(c), flush=True)
            done_with(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
