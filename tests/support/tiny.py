"""Tiny random-weight models of every supported family, for tests and the end-to-end DAG test.

Built from transformers configs with no download (docs/DESIGN.md: tests build tiny models of every
architecture). The tokenizer is a byte-level BPE trained in memory on the succession tasks'
items and a little English, so task tokens are single tokens as in GPT-2's tokenizer.

Each tiny model, tokenizer and saved folder is built once per test run and shared: the
family-parametrised tests multiply with every family, so :func:`make_model` hands out a deep
copy of a model built once (tests change weights in place), :func:`make_tokenizer` a copy of one
trained tokenizer, and :func:`save_tiny_model` a copy of a folder saved once.
"""

from __future__ import annotations

import atexit
import copy
import functools
import os
import shutil
import tempfile
from pathlib import Path

import torch

#: The paper zoo's families, then those added later (:data:`NEW_FAMILIES`); each name is an
#: adapter family (``successor_heads.core.adapters.FAMILIES``).
NEW_FAMILIES = ("mistral", "qwen3", "phi3", "olmo2", "gemma2", "gptj", "gpt_neo", "opt")
#: Granite's scalar multipliers, none of them 1 so that each is tested (the logits are divided
#: by ``logits_scaling``: 0.5 keeps the tiny model's log-probs as sensitive to ablations as 1 would).
_GRANITE_MULTIPLIERS = {"embedding_multiplier": 2.0, "residual_multiplier": 1.5, "attention_multiplier": 0.5,
                        "logits_scaling": 0.5}
#: The second wave of dense families, each built from its transformers config class through
#: ``AutoConfig.for_model(model_type, ...)`` with the sizes below and the extra settings listed
#: (Cohere's logit scale 4 instead of 1/16: not 1, so its handling is tested, and ablations of a
#: tiny random model still move the log-probs measurably; XGLM's weights drawn with std 0.1, as
#: its sqrt(d_model)-scaled embeddings and sinusoidal positions otherwise drown the heads; BLOOM's
#: with std 0.1, as its heads' direct effects are otherwise too small to test).
DENSE = {
    "smollm3": ("smollm3", {}), "ministral": ("ministral3", {}), "exaone": ("exaone", {}),
    "seed_oss": ("seed_oss", {}), "ernie4_5": ("ernie4_5", {}), "hunyuan_v1_dense": ("hunyuan_v1_dense", {}),
    "arcee": ("arcee", {}), "gemma": ("gemma", {"tie_word_embeddings": True}), "olmo": ("olmo", {}), "olmo3": ("olmo3", {}),
    "exaone4": ("exaone4", {}), "glm4": ("glm4", {}), "glm": ("glm", {}), "starcoder2": ("starcoder2", {}),
    "stablelm": ("stablelm", {}), "phi": ("phi", {}), "cohere": ("cohere", {"logit_scale": 4.0}), "nemotron": ("nemotron", {}),
    "gpt_bigcode": ("gpt_bigcode", {"num_key_value_heads": None}), "mpt": ("mpt", {"num_key_value_heads": None}),
    "codegen": ("codegen", {"rotary_dim": 4, "num_key_value_heads": None}), "xglm": ("xglm", {"ffn_dim": 128, "num_key_value_heads": None, "tie_word_embeddings": True, "init_std": 0.1}),
    "falcon": ("falcon", {"head_dim": None, "num_key_value_heads": None}),
    "granite": ("granite", {**_GRANITE_MULTIPLIERS}),
    "bloom": ("bloom", {"num_key_value_heads": None, "head_dim": None, "initializer_range": 0.1}),
}
#: Mixture-of-experts families: 4 experts, top-2 (Qwen2-MoE also with its shared expert;
#: Granite-MoE with Granite's multipliers, Granite-MoE-Shared also with its shared MLP).
MOE = {
    "mixtral": ("mixtral", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "olmoe": ("olmoe", {"num_experts": 4, "num_experts_per_tok": 2}),
    "qwen2_moe": ("qwen2_moe", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                "shared_expert_intermediate_size": 32, "decoder_sparse_step": 1, "mlp_only_layers": []}),
    "qwen3_moe": ("qwen3_moe", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                "decoder_sparse_step": 1, "mlp_only_layers": []}),
    "phimoe": ("phimoe", {"num_local_experts": 4, "num_experts_per_tok": 2, "attention_bias": True}),
    "gpt_oss": ("gpt_oss", {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 4}),
    "granitemoe": ("granitemoe", {"num_local_experts": 4, "num_experts_per_tok": 2, **_GRANITE_MULTIPLIERS}),
    "granitemoeshared": ("granitemoeshared", {"num_local_experts": 4, "num_experts_per_tok": 2,
                                              "shared_intermediate_size": 32, **_GRANITE_MULTIPLIERS}),
}
DENSE.update(MOE)
#: Hybrids scored on their attention layers only: ``n_layers`` attention layers, each after a
#: layer of the other kind (a short convolution for LFM2, Mamba for Jamba), so the first decoder
#: layer, whose feed-forward is MLP0, is not an attention layer. Jamba: 4 experts, top-2, on every
#: second layer from the first (so MLP0 is a mixture of experts in a Mamba layer).
HYBRID = {
    "lfm2": ("lfm2", {"block_auto_adjust_ff_dim": False, "conv_L_cache": 3}),
    "jamba": ("jamba", {"num_experts": 4, "num_experts_per_tok": 2, "expert_layer_period": 2,
                        "expert_layer_offset": 0, "attn_layer_period": 2, "attn_layer_offset": 1,
                        "mamba_d_state": 4, "mamba_expand": 2, "mamba_d_conv": 2}),
}
DENSE.update(HYBRID)
MOE["jamba"] = HYBRID["jamba"]  # a hybrid and a mixture of experts: the MoE tests run on it too
NEW_FAMILIES += tuple(DENSE)
FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2", "gemma3") + NEW_FAMILIES
#: The families before the second wave: option and code-path tests that do not depend on the
#: architecture (chunking, block shapes, BOS handling, ...) run on these; the per-family checks
#: the families are declared by run on all of :data:`FAMILIES`.
CORE_FAMILIES = FAMILIES[:13]
#: Tiny models that are a variant of a family's config, not a family of their own: Llama 3
#: (``model_type`` ``llama``, rope scaling of type ``llama3``, 4 query heads per KV head).
VARIANTS = {"llama3": "llama"}
#: Checkpoint layouts a family reads from the config (``FamilySpec.variant``), each a tiny model
#: of its family's config with the settings listed: Falcon-40B/180B's grouped KV heads and two
#: parallel norms, Falcon-RW's per-head q/k/v, sequential block and ALiBi, GPT-BigCode without
#: multi-query, StableLM-2-12B's parallel residual; and model types a family covers beside its
#: own (``model_type`` in the settings): Granite-SWA, Granite-MoE-SWA.
CHECKPOINT_VARIANTS = {
    "falcon_new": ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2, "num_ln_in_parallel_attn": 2}),
    "falcon_rw": ("falcon", {"multi_query": False, "parallel_attn": False, "alibi": True, "bias": True}),
    "gpt_bigcode_mha": ("gpt_bigcode", {"multi_query": False}),
    "stablelm_parallel": ("stablelm", {"use_parallel_residual": True}),
    "granite_swa": ("granite", {"model_type": "granite_swa", "sliding_window": 4,
                                "layer_types": ["full_attention", "sliding_attention"]}),
    "granitemoe_swa": ("granitemoeshared", {"model_type": "granitemoe_swa", "sliding_window": 4,
                                            "layer_types": ["full_attention", "sliding_attention"]}),
}
VARIANTS.update({name: family for name, (family, _) in CHECKPOINT_VARIANTS.items()})

_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
          "eighteen", "nineteen", "twenty", "first", "second", "third", "fourth", "fifth",
          "sixth", "seventh", "eighth", "ninth", "tenth"]


def _training_text() -> list[str]:
    items = _DAYS + [d[:3] for d in _DAYS] + _MONTHS + [m[:3] for m in _MONTHS] + _WORDS
    items += [w.capitalize() for w in _WORDS] + [d.lower() for d in _DAYS + _MONTHS]
    items += [chr(c) for c in range(65, 91)] + [chr(c) for c in range(97, 123)]
    items += [str(n) for n in range(0, 210)]
    line = " ".join(items)
    prose = (
        "The quick brown fox jumps over the lazy dog. A function returns a value, and the "
        "value is printed. Lists are ordered; items are numbered from one to ten. "
    )
    # Every item appears both after a space and at the start of a line.
    return [" " + line, ", " + ", ".join(items), "".join(f"{i}\n" for i in items)] * 50 + [prose] * 20


def make_tokenizer(vocab_size: int = 2048):
    """A byte-level BPE ``PreTrainedTokenizerFast`` (GPT-2 style, ``<|endoftext|>`` as BOS/EOS);
    a copy of one trained once per ``vocab_size``, so a caller may change it."""
    return copy.deepcopy(_trained_tokenizer(vocab_size))


@functools.lru_cache(maxsize=None)
def _trained_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        unk_token="<|endoftext|>", pad_token="<|endoftext|>",
    )


def make_config(family: str, vocab_size: int, n_layers: int = 2, d_model: int = 32, n_heads: int = 4):
    """A transformers config for a tiny model of ``family`` (one of :data:`FAMILIES` or :data:`VARIANTS`)."""
    from transformers import (Gemma3TextConfig, GPT2Config, GPTNeoXConfig, LlamaConfig,
                              Qwen2Config)

    if family in NEW_FAMILIES or family in VARIANTS:
        return _new_config(family, vocab_size, n_layers, d_model, n_heads)

    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if family == "gpt2":
        return GPT2Config(n_layer=n_layers, n_embd=d_model, n_head=n_heads, n_positions=512, **common)
    if family == "gpt_neox":
        return GPTNeoXConfig(num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads,
                             intermediate_size=4 * d_model, max_position_embeddings=512,
                             tie_word_embeddings=False, **common)
    kw = dict(num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads,
              num_key_value_heads=n_heads // 2, intermediate_size=4 * d_model,
              max_position_embeddings=512, **common)
    if family == "llama":
        return LlamaConfig(tie_word_embeddings=True, **kw)
    if family == "qwen2":
        return Qwen2Config(tie_word_embeddings=False, **kw)
    if family == "gemma3":
        return Gemma3TextConfig(head_dim=d_model // n_heads, tie_word_embeddings=True,
                                sliding_window=64, query_pre_attn_scalar=d_model // n_heads,
                                final_logit_softcapping=30.0, **kw)
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")


def _new_config(family: str, vocab_size: int, n_layers: int, d_model: int, n_heads: int):
    """Configs of :data:`NEW_FAMILIES` and :data:`VARIANTS` (kept apart so the paper zoo's
    families are built exactly as before)."""
    import transformers as tr

    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if family in DENSE or family in CHECKPOINT_VARIANTS:
        base, settings = CHECKPOINT_VARIANTS.get(family, (family, {}))
        model_type, extra = DENSE[base]
        extra = {**extra, **settings}
        model_type = extra.pop("model_type", model_type)
        kw = dict(num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads,
                  num_key_value_heads=n_heads // 2, head_dim=d_model // n_heads, intermediate_size=4 * d_model,
                  max_position_embeddings=512, tie_word_embeddings=False, **common)
        kw.update(extra)
        if base in HYBRID:  # n_layers attention layers, each after a layer of the other kind
            kw["num_hidden_layers"] = 2 * n_layers
            if base == "lfm2":
                kw["layer_types"] = ["conv", "full_attention"] * n_layers
        return tr.AutoConfig.for_model(model_type, **{k: v for k, v in kw.items() if v is not None})
    if family == "gptj":  # rotary on the first half of each head, parallel block
        return tr.GPTJConfig(n_layer=n_layers, n_embd=d_model, n_head=n_heads, n_positions=512,
                             rotary_dim=d_model // n_heads // 2, **common)
    if family == "gpt_neo":  # global and local (window 4) layers alternating
        kinds = (["global", "local"] * n_layers)[:n_layers]
        return tr.GPTNeoConfig(num_layers=n_layers, hidden_size=d_model, num_heads=n_heads,
                               attention_types=[[[k], 1] for k in kinds], window_size=4,
                               max_position_embeddings=512, **common)
    if family == "opt":
        return tr.OPTConfig(num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads,
                            ffn_dim=4 * d_model, word_embed_proj_dim=d_model, max_position_embeddings=512,
                            do_layer_norm_before=True, **common)
    kw = dict(num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads,
              num_key_value_heads=n_heads // 2, intermediate_size=4 * d_model,
              max_position_embeddings=512, **common)
    if family == "llama3":
        kw["num_key_value_heads"] = n_heads // 4 or 1
        return tr.LlamaConfig(tie_word_embeddings=False, rope_parameters=dict(
            rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
            high_freq_factor=4.0, original_max_position_embeddings=64), **kw)
    if family == "mistral":
        return tr.MistralConfig(tie_word_embeddings=False, sliding_window=64, **kw)
    if family == "qwen3":
        return tr.Qwen3Config(head_dim=d_model // n_heads, tie_word_embeddings=True, **kw)
    if family == "phi3":
        return tr.Phi3Config(tie_word_embeddings=False, **kw)
    if family == "olmo2":
        return tr.Olmo2Config(tie_word_embeddings=False, **kw)
    if family == "gemma2":
        return tr.Gemma2Config(head_dim=d_model // n_heads, tie_word_embeddings=True, sliding_window=64,
                               query_pre_attn_scalar=d_model // n_heads, final_logit_softcapping=30.0,
                               attn_logit_softcapping=50.0, **kw)
    raise ValueError(f"unknown family {family!r}; known: {NEW_FAMILIES + tuple(VARIANTS)}")


def make_model(family: str, tokenizer=None, seed: int = 0, **kw):
    """``(model, tokenizer)``: a tiny random-weight causal LM in eval mode (eager attention).

    The model is a deep copy of one built once per ``(family, vocabulary size, seed, kw)``; torch's
    global generator is left as building it leaves it (seeded with ``seed``, then drawn from), so
    tests that draw after this call see the same numbers as with a fresh build.
    """
    tokenizer = tokenizer or make_tokenizer()
    model, rng = _built_model(family, len(tokenizer), seed, tuple(sorted(kw.items())))
    torch.set_rng_state(rng)
    return copy.deepcopy(model), tokenizer


@functools.lru_cache(maxsize=None)
def _built_model(family: str, vocab_size: int, seed: int, kw: tuple):
    """``(model, rng_state)``: the tiny model :func:`make_model` copies, and torch's generator state after building it."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = make_config(family, vocab_size, **dict(kw))
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    # Random norm weights, so tests see whether norms are applied (defaults are all ones/zeros).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model, torch.get_rng_state()


def save_tiny_model(family: str, path: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny model + tokenizer as a transformers folder at ``path`` (for ``local`` sources):
    a copy of a folder saved once per ``(family, seed)`` in a temporary folder of this process."""
    path = Path(path)
    shutil.copytree(_saved_folder(family, seed), path, dirs_exist_ok=True)
    return path


@functools.lru_cache(maxsize=None)
def _saved_folder(family: str, seed: int) -> Path:
    model, tok = make_model(family, seed=seed)
    path = Path(tempfile.mkdtemp(prefix=f"tiny-{family}-"))
    atexit.register(shutil.rmtree, path, True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@torch.no_grad()
def randomize_biases(model, std: float = 1.0, names: tuple[str, ...] = ("bias",)) -> None:
    """Fill, in place, every parameter whose name contains one of ``names`` with N(0, std^2)
    values. transformers initialises biases to zero, which would hide whether a value bias
    (``b_V W_O``) is read or left out. Uses torch's global generator (seed it first)."""
    for name, p in model.named_parameters():
        if any(n in name for n in names):
            p.normal_(0.0, std)


@torch.no_grad()
def plant_head(model, layer: int, head: int, W_V: torch.Tensor, W_O: torch.Tensor) -> None:
    """Overwrite one head's value and output weights (and zero its value bias) in place.

    ``W_V [d_model, d_head]``, ``W_O [d_head, d_model]``, in the adapter's convention
    (``out = x @ W_V @ W_O``). For grouped-query models the KV head that ``head`` reads is
    overwritten, so the other query heads of its group change too.
    """
    mt = model.config.model_type
    if mt == "gpt2":
        d = model.config.n_embd
        dh = d // model.config.n_head
        attn = model.transformer.h[layer].attn
        cols = slice(2 * d + head * dh, 2 * d + (head + 1) * dh)
        attn.c_attn.weight[:, cols] = W_V
        attn.c_attn.bias[cols] = 0
        attn.c_proj.weight[head * dh:(head + 1) * dh, :] = W_O
    elif mt == "gpt_neox":
        H = model.config.num_attention_heads
        d = model.config.hidden_size
        dh = d // H
        attn = model.gpt_neox.layers[layer].attention
        rows = slice(head * 3 * dh + 2 * dh, head * 3 * dh + 3 * dh)
        attn.query_key_value.weight[rows, :] = W_V.T
        attn.query_key_value.bias[rows] = 0
        attn.dense.weight[:, head * dh:(head + 1) * dh] = W_O.T
    elif mt in ("llama", "qwen2", "gemma3_text", "gemma3"):
        c = model.config
        H, Hkv = c.num_attention_heads, c.num_key_value_heads
        dh = getattr(c, "head_dim", None) or c.hidden_size // H
        kv = head // (H // Hkv)
        attn = model.model.layers[layer].self_attn
        attn.v_proj.weight[kv * dh:(kv + 1) * dh, :] = W_V.T
        if attn.v_proj.bias is not None:
            attn.v_proj.bias[kv * dh:(kv + 1) * dh] = 0
        attn.o_proj.weight[:, head * dh:(head + 1) * dh] = W_O.T
    else:
        _plant_through_adapter(model, layer, head, W_V, W_O)


@torch.no_grad()
def plant_readout(adapter, layer: int, head: int, x_TM: torch.Tensor, token_ids, target_TT: torch.Tensor) -> None:
    """Plant ``W_V W_O`` of one head so that its OV read-out ``x_t W_V W_O W_U[:, token_ids]``
    equals ``target_TT [n_tokens, n_tokens]`` for the rows ``x_TM [n_tokens, d_model]`` (exact
    when the rank, at most ``n_tokens``, fits in ``d_head``); see :func:`plant_head`. In a
    multi-query model every head gets the same ``W_V``, so heads planted one after another agree."""
    U = adapter.W_U[:, token_ids].detach()
    dh = adapter.dims.d_head
    if adapter.dims.n_kv_heads == 1:
        # multi-query: all heads share one W_V, so plant the same W_V for every head (the top
        # right singular vectors of x, injective on its rows) and solve W_O for the target
        W_V = torch.linalg.svd(x_TM)[2][:dh].T
        W_O = torch.linalg.pinv(x_TM @ W_V) @ target_TT @ torch.linalg.pinv(U)
        plant_head(adapter.model, layer, head, W_V, W_O)
        return
    M = torch.linalg.pinv(x_TM) @ target_TT @ torch.linalg.pinv(U)
    Uu, S, Vh = torch.linalg.svd(M)
    plant_head(adapter.model, layer, head, Uu[:, :dh] * S[:dh], Vh[:dh])


@torch.no_grad()
def _plant_through_adapter(model, layer: int, head: int, W_V: torch.Tensor, W_O: torch.Tensor) -> None:
    """:func:`plant_head` for :data:`NEW_FAMILIES`: the rows of ``W_V`` (``Adapter.v_rows``) and
    columns of ``W_O`` found where the family's spec says they are (all ``nn.Linear``, ``[d_out, d_in]``)."""
    from successor_heads.core.adapters import get_adapter

    a = get_adapter(model)
    d = a.dims
    kv = head // (d.n_heads // d.n_kv_heads)
    v, o = a.v_proj(layer), a.o_proj(layer)
    assert not a.spec.weights_in_out
    rows = a.v_rows()[kv]  # where the family's q/k/v layout keeps this KV head's value rows
    v.weight[rows, :] = W_V.T
    if v.bias is not None:
        v.bias[rows] = 0
    o.weight[:, head * d.d_head:(head + 1) * d.d_head] = W_O.T
