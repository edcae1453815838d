"""A tiny random Llama as a transformers folder and as a llama.cpp-style GGUF, for the models tests.

Everything is offline: a byte-level BPE tokenizer trained on a few lines, a 2-layer Llama with
grouped-query attention (n_heads=4, n_kv_heads=2, d_model=32), the same weights written as a
GGUF with the ``gguf`` package (Q8_0 matrices, F32 norms), and small GGUF files with other
tensor types and metadata kinds for the header reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from successor_heads.config import build as validate

TEXTS = [
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday",
    "January February March April May June July August September October November December",
    "one two three four five six seven eight nine ten 1 2 3 4 5 6 7 8 9 10",
    "first second third fourth fifth sixth seventh eighth ninth tenth",
    "I II III IV V VI VII VIII IX X; a b c d e f g h i j k l m n o p q r s t u v w x y z",
] * 4
PROMPT = "Monday Tuesday Wednesday 1 2 3"
N_HEADS, N_KV, D_MODEL, D_MLP, N_LAYERS = 4, 2, 32, 64, 2


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models as tmodels, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tmodels.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    return tok, fast


def build_tiny_llama(root: Path):
    """(HF folder, GGUF path, original model) of one tiny random Llama, written under ``root``."""
    """(HF folder, GGUF path, original model) of one tiny random Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    raw_tok, fast = train_tokenizer()
    vocab = raw_tok.get_vocab()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=D_MODEL,
        intermediate_size=D_MLP,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_KV,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norm weights so a mix-up shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    folder = root / "hf"
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    gguf_path = root / "tiny-llama.Q8_0.gguf"
    write_gguf(gguf_path, model, raw_tok)
    return folder, gguf_path, model


def write_gguf(path: Path, model, raw_tok) -> None:
    """Write ``model`` as a llama.cpp-style GGUF: Q8_0 matrices, F32 norms, byte-level BPE vocab."""
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    vocab = raw_tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = json.loads(raw_tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t == "<|endoftext|>" else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)

    def permute(x: np.ndarray, n_head: int) -> np.ndarray:  # llama.cpp's rotary layout for q/k
        return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    def add(name: str, t: torch.Tensor, quantize: bool) -> None:
        a = t.detach().float().numpy().astype(np.float32)
        if quantize:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, a)

    sd = model.state_dict()
    add("token_embd.weight", sd["model.embed_tokens.weight"], True)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"], False)
        q = torch.from_numpy(permute(sd[p + "self_attn.q_proj.weight"].numpy(), cfg.num_attention_heads))
        k = torch.from_numpy(permute(sd[p + "self_attn.k_proj.weight"].numpy(), cfg.num_key_value_heads))
        add(f"blk.{i}.attn_q.weight", q, True)
        add(f"blk.{i}.attn_k.weight", k, True)
        add(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"], True)
        add(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"], True)
        add(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"], False)
        add(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"], True)
        add(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"], True)
        add(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"], True)
    add("output_norm.weight", sd["model.norm.weight"], False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def local_cfg(path, name="tiny", sha256=None):
    return validate(
        {"model": {"name": name, "family": "llama", "source": {"kind": "local", "path": str(path), "sha256": sha256}}}
    )


def logits(model, tok, text=PROMPT):
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return ids, model(ids).logits


def gguf_direct(gguf_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    return model.eval(), tok


def quantization_via_reader(path) -> dict:
    """The tensor-type summary as :func:`models.gguf_quantization` computed it before it read
    the header alone: a full ``gguf.GGUFReader`` pass."""
    from collections import Counter

    from gguf import GGUFReader, LlamaFileType

    reader = GGUFReader(str(path))
    n_tensors, n_elements, in_blocks, emb = Counter(), Counter(), Counter(), None
    for t in reader.tensors:
        n_tensors[t.tensor_type.name] += 1
        n_elements[t.tensor_type.name] += int(t.n_elements)
        if t.name.startswith("blk."):
            in_blocks[t.tensor_type.name] += int(t.n_elements)
        if t.name == "token_embd.weight":
            emb = t.tensor_type.name
    field = reader.fields.get("general.file_type")
    file_type = None if field is None else LlamaFileType(int(field.parts[field.data[0]][0])).name
    main = (in_blocks or n_elements).most_common(1)
    return {"summary": dict(sorted(n_tensors.items())), "n_elements": dict(sorted(n_elements.items())),
            "main_type": main[0][0] if main else None, "embedding_type": emb, "file_type": file_type}


def mixed_gguf(path: Path, endian=None) -> Path:
    """A GGUF with several tensor types (F32, F16, Q8_0, Q4_0), every metadata value type
    (strings, string and int arrays, a nested array) and no ``blk.*`` tensors."""
    import gguf

    kw = {} if endian is None else {"endianess": endian}
    w = gguf.GGUFWriter(str(path), arch="llama", **kw)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    w.add_token_list(["<s>", "a", "bc", "ünï"])
    w.add_array("test.ints", [1, 2, 3])
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_float64("test.f64", 1.5)
    w.add_bool("test.flag", True)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 64)).astype(np.float32)
    if endian is None:
        w.add_tensor("token_embd.weight", gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0),
                     raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor("output.weight", gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q4_0),
                     raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    w.add_tensor("output_norm.weight", a[0].astype(np.float16))
    w.add_tensor("rope_freqs.weight", a[1])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
