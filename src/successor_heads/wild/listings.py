"""Numbered-listing prompts (paper Appendix J: on numbered listings the successor head wins
the next item's number in 64 of 64 prompts).

Prompts come deterministically from templates: four styles (digits on new lines "1. apples\\n2.
pears\\n" -> "3"; inline steps "Step 1: ... Step" -> " 3"; number words "Part One: ... Part" ->
" Three"; ordinal words "First, ...\\nSecond, ...\\n" -> "Third"), 2 to 5 items shown, and
eight item lists. The default 64 are 4 item lists x 4 styles x 4 lengths. Each prompt is
scored with the same direct-effect mean ablation as the corpus (means from the corpus): the
winner is the head whose ablation hurts the prediction of the next number's first token most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from successor_heads.core.adapters import Adapter
from successor_heads.core.streaming import pass_size, sequence_mb, streamed_of
from successor_heads.wild.capture import capture, concat_captures
from successor_heads.wild.direct_effect import DirectEffectAblator

_ITEMS = [
    ["apples", "pears", "plums", "grapes", "lemons", "cherries"],
    ["wash the car", "buy bread", "call mum", "pay the rent", "water the plants", "read a book"],
    ["Paris", "London", "Berlin", "Madrid", "Rome", "Vienna"],
    ["hammer", "saw", "drill", "wrench", "pliers", "chisel"],
    ["open the file", "read the header", "parse the rows", "check the totals", "write the report", "close the file"],
    ["red", "green", "blue", "yellow", "purple", "orange"],
    ["the cat", "the dog", "the horse", "the cow", "the sheep", "the goat"],
    ["Introduction", "Methods", "Results", "Discussion", "Conclusion", "References"],
]
_WORDS = "One Two Three Four Five Six Seven".split()
_ORDINALS = "First Second Third Fourth Fifth Sixth Seventh".split()
STYLES = ("digits_newline", "digits_inline", "number_words", "ordinal_words")
LENGTHS = (2, 3, 4, 5)


@dataclass(frozen=True)
class ListingPrompt:
    """``prompt`` followed by ``target`` continues the list; ``n_items`` items are shown."""

    prompt: str
    target: str
    style: str
    n_items: int
    item_set: int


def _render(style: str, items: list[str], n: int) -> tuple[str, str]:
    if style == "digits_newline":
        return "".join(f"{i + 1}. {items[i]}\n" for i in range(n)), str(n + 1)
    if style == "digits_inline":
        return "".join(f"Step {i + 1}: {items[i]}. " for i in range(n)) + "Step", f" {n + 1}"
    if style == "number_words":
        return "".join(f"Part {_WORDS[i]}: {items[i]}\n" for i in range(n)) + "Part", f" {_WORDS[n]}"
    if style == "ordinal_words":
        return "".join(f"{_ORDINALS[i]}, {items[i]}.\n" for i in range(n)), _ORDINALS[n]
    raise ValueError(f"unknown listing style {style!r}; known: {STYLES}")


def listing_prompts(n: int = 64) -> list[ListingPrompt]:
    """The first ``n`` prompts, ordered item list, then style, then length (module docstring).

    Raises: ValueError when ``n`` is below 1 or above the ``8 * 4 * 4 = 128`` templates.
    """
    total = len(_ITEMS) * len(STYLES) * len(LENGTHS)
    if not 1 <= n <= total:
        raise ValueError(f"wild.n_listing_prompts={n}: must be between 1 and {total} (templates available)")
    out = []
    for k, items in enumerate(_ITEMS):
        for style in STYLES:
            for length in LENGTHS:
                p, t = _render(style, items, length)
                out.append(ListingPrompt(p, t, style, length, k))
    return out[:n]


def encode_listing(tokenizer, lp: ListingPrompt, prepend_bos: bool = True) -> tuple[list[int], int]:
    """``(prompt ids, id of the target's first non-whitespace token)``.

    The prompt and target are tokenised together; tokens of the target that are only whitespace
    (tokenizers that split " 3" into " " and "3") are moved into the prompt. The tokenizer's BOS
    comes first when it has one and ``prepend_bos``, as in the corpus contexts.

    Raises: ValueError when the target adds no non-whitespace token.
    """
    enc = lambda s: list(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    p_ids, full = enc(lp.prompt), enc(lp.prompt + lp.target)
    if full[: len(p_ids)] != p_ids:  # the boundary merged: fall back to separate encodings
        full = p_ids + enc(lp.target)
    k = len(p_ids)
    while k < len(full) and not tokenizer.decode([full[k]]).strip():
        k += 1
    if k >= len(full):
        raise ValueError(f"listing target {lp.target!r} adds no non-whitespace token after {lp.prompt[-20:]!r}")
    bos = getattr(tokenizer, "bos_token_id", None) if prepend_bos else None
    return ([bos] if bos is not None else []) + full[:k], int(full[k])


@torch.no_grad()
def listing_direct_effects(adapter: Adapter, tokenizer, prompts: list[ListingPrompt], mean_z_LHD: torch.Tensor,
                           max_chunk_mb: float = 1024, prepend_bos: bool = True, progress: bool = False,
                           final_norm: str = "frozen", compute_dtype: str = "float32") -> dict:
    """Direct-effect mean ablation of every head on the last position of each listing prompt.

    One forward pass per group of prompts of equal token length captures the activations at
    each prompt's last position (a streamed model: the prompts right-padded into one pass, as
    far as memory allows); then every head is ablated at once. ``final_norm``: "frozen"
    (default) or "recomputed"; ``compute_dtype``: "float32" (default) or "bfloat16", as in
    :func:`~successor_heads.wild.direct_effect.corpus_direct_effects`.
    Returns a dict of ``loss``, ``target_logit`` ``[n_layers, n_heads, n_prompts]``, ``base_loss``,
    ``base_logit``, ``target_ids`` ``[n_prompts]`` (numpy, in prompt order; losses in nats).
    Raises: ValueError for an unknown ``final_norm`` or ``compute_dtype`` (or a frozen
    unrecognised final norm).
    """
    enc = [encode_listing(tokenizer, lp, prepend_bos) for lp in prompts]
    cap = _capture_padded(adapter, enc) if streamed_of(adapter.model) is not None else _capture_grouped(adapter, enc, progress)
    targets = [t for _, t in enc]
    ab = DirectEffectAblator(adapter, mean_z_LHD, max_chunk_mb, final_norm=final_norm, compute_dtype=compute_dtype)
    loss, logit, bl, bg = ab.run(cap, torch.tensor(targets))
    return {"loss": loss.numpy(), "target_logit": logit.numpy(), "base_loss": bl.numpy(), "base_logit": bg.numpy(),
            "target_ids": np.array(targets)}


def _capture_grouped(adapter: Adapter, enc: list[tuple[list[int], int]], progress: bool):
    """One forward pass per group of prompts of equal token length, read at their last position;
    rows in prompt order."""
    groups: dict[int, list[int]] = {}
    for i, (ids, _) in enumerate(enc):
        groups.setdefault(len(ids), []).append(i)
    caps, order = [], []
    for idx in tqdm(groups.values(), desc="listing prompts (groups of equal length)", disable=not progress):
        t = torch.tensor([enc[i][0] for i in idx])
        sel = torch.zeros_like(t, dtype=torch.bool)
        sel[:, -1] = True
        caps.append(capture(adapter, t, sel))
        order += idx
    return concat_captures(caps, torch.argsort(torch.tensor(order)))  # back in prompt order


def _capture_padded(adapter: Adapter, enc: list[tuple[list[int], int]]):
    """For a streamed model: the prompts right-padded (with their own last token) into as few
    passes as fit :func:`~successor_heads.core.streaming.pass_size`, each read at its last real
    position, so each decoder layer is read once per pass instead of once per length group. In a
    causal model the positions before the padding never see it (same numbers as
    :func:`_capture_grouped` up to float rounding; tests/core/test_streaming_stages.py). Rows in
    prompt order."""
    n = max(len(ids) for ids, _ in enc)
    t = torch.tensor([ids + ids[-1:] * (n - len(ids)) for ids, _ in enc])
    sel = torch.zeros_like(t, dtype=torch.bool)
    sel[torch.arange(len(enc)), torch.tensor([len(ids) - 1 for ids, _ in enc])] = True
    k = pass_size(adapter.model, 1, len(enc), sequence_mb(adapter, n))
    return concat_captures([capture(adapter, t[s:s + k], sel[s:s + k]) for s in range(0, len(enc), k)])
