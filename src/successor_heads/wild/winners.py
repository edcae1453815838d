"""Which head "wins" each token, and what the successor head's winning tokens are (paper
Section 4.3, "Successor heads in the wild"; Pythia-1.4B L12H0: acronyms about 24% and
greater-than about 19% of its winning tokens, the rest successorship, copying and other).

Winning rule. For every token the direct effect of each head is mean-ablated
(:mod:`successor_heads.wild.direct_effect`). Two criteria, both reported:

* ``loss``: the head whose ablation raises the token's loss the most (equivalently, lowers the
  correct token's log-probability the most);
* ``logit``: the head whose ablation lowers the correct token's logit the most ("the correct
  token made less likely" measured before the softmax, independent of the other tokens).

A token has no winner (``-1``) when no head's ablation hurts it by more than ``min_effect``.

Categories of a winning token (rules applied in this order; the first that holds wins). The
inputs are the surface strings of the context tokens before the target and of the target;
"items" are members of the succession tasks (number words, ordinal words, days, day prefixes,
months, month prefixes, letters of one case; roman numerals are held out and not used) plus
whole numbers written in digits (consecutive digit tokens with no space between form one
number).

1. ``successorship``: the target is an item whose predecessor (same family, index - 1,
   wrapping for days and months) appears in the context: "2. pears\\n" -> "3", "Monday ...
   Tuesday", "lists[0] ... lists[" -> "1".
2. ``acronym``: the target, stripped, is 1-5 capital letters; together with the capital
   letters written immediately before it (no space between) it forms a string of at least two
   letters that occurs in the initials of the capitalised words among the last 40 words of the
   context before it: "Application Programming Interface (AP" -> "I".
3. ``greater-than``: the target is a number (digits, number word or ordinal word) starting a
   new number, and the most recent number of the same family in the context is smaller by more
   than one: "from 1990 to 1995", "pages 3 to 7".
4. ``copying``: the target, stripped, contains a letter or digit and equals an earlier context
   token, stripped (case-sensitive).
5. ``other``: anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from successor_heads.core.paper import paper_number

CATEGORIES = ("successorship", "acronym", "greater-than", "copying", "other")
#: Shares of the successor head's winning tokens reported by the paper (Pythia-1.4B L12H0).
PAPER_SHARES = paper_number("wild", "winning_token_shares").value
NUMERIC_FAMILIES = ("numbers", "number_words", "ordinal_words")
ACRONYM_WINDOW_WORDS = 40


def winning_heads(effect: np.ndarray, min_effect: float = 0.0) -> np.ndarray:
    """The head each token's ablation hurts most.

    Args:
        effect: ``[n_layers, n_heads, n_tokens]``, how much ablating the head hurts the token
            (loss increase in nats, or drop in the correct token's logit).
        min_effect: a head wins only when its effect exceeds this.

    Returns: ``[n_tokens]`` int, the flat head index ``layer * n_heads + head``, or -1.
    Raises: ValueError when ``effect`` is not 3-D.
    """
    effect = np.asarray(effect)
    if effect.ndim != 3:
        raise ValueError(f"effect must be [n_layers, n_heads, n_tokens]; got shape {effect.shape}")
    flat = effect.reshape(-1, effect.shape[-1])
    win = flat.argmax(0)
    win[flat.max(0) <= min_effect] = -1
    return win


def effects(loss: np.ndarray, base_loss: np.ndarray, logit: np.ndarray, base_logit: np.ndarray) -> dict[str, np.ndarray]:
    """Per criterion, how much each head's ablation hurts each token, ``[n_layers, n_heads, n_tokens]``:
    ``loss`` = ablated loss - clean loss (nats), ``logit`` = clean logit - ablated logit."""
    return {"loss": loss - base_loss[None, None], "logit": base_logit[None, None] - logit}


def win_counts(win: np.ndarray, n_layers: int, n_heads: int) -> np.ndarray:
    """Tokens won per head, ``[n_layers, n_heads]``, from :func:`winning_heads`' output ``[n_tokens]``."""
    return np.bincount(win[win >= 0], minlength=n_layers * n_heads).reshape(n_layers, n_heads)


@dataclass
class SuccessionIndex:
    """Maps an item's stripped surface string to its ``(family, index, modulus)`` entries."""

    items: dict[str, list[tuple[str, int, int | None]]] = field(default_factory=dict)

    @classmethod
    def from_tasks(cls, tasks) -> "SuccessionIndex":
        """From :func:`successor_heads.core.tasks.build_tasks` output (held-out tasks skipped)."""
        out: dict[str, list] = {}
        for t in tasks:
            if getattr(t, "held_out", False) or t.family == "numbers":
                continue
            fam = f"{t.family}_{t.case}" if t.family == "letters" else t.family  # "a" does not precede "B"
            for s, i in zip(t.tokens, t.index):
                e = (fam, int(i), t.modulus)
                if e not in out.setdefault(s.strip(), []):
                    out[s.strip()].append(e)
        return cls(out)

    def lookup(self, s: str) -> list[tuple[str, int, int | None]]:
        s = s.strip()
        if s.isdigit() and s.isascii():
            return [("numbers", int(s), None)]
        return self.items.get(s, [])


def _context_items(context: list[str], index: SuccessionIndex) -> list[list[tuple[str, int, int | None]]]:
    """Items of the context in order; runs of digit tokens with no space between merge into one number."""
    items: list[list] = []
    prev_digit = False
    for tok in context:
        s = tok.strip()
        is_digit = bool(s) and s.isdigit() and s.isascii()
        if is_digit and prev_digit and tok == s and items and items[-1] and items[-1][0][0] == "numbers":
            items[-1] = [("numbers", int(str(items[-1][0][1]) + s), None)]
        else:
            e = index.lookup(tok)
            if e:
                items.append(e)
        prev_digit = is_digit and tok.endswith(s)
    return items


def _anchor(items, families: set[str]):
    """The most recent context item of one of ``families``: ``(family, index)`` entries or None."""
    for entries in reversed(items):
        hit = [e for e in entries if e[0] in families]
        if hit:
            return hit
    return None


def _is_acronym(context_text: str, target: str) -> bool:
    t = target.strip()
    if not re.fullmatch(r"[A-Z]{1,5}", t):
        return False
    prefix = "" if target[:1].isspace() else re.search(r"[A-Z]*$", context_text).group(0)
    cand = prefix + t
    if len(cand) < 2:
        return False
    before = context_text[: len(context_text) - len(prefix)]
    words = re.findall(r"[A-Za-z][A-Za-z'\-]*", before)[-ACRONYM_WINDOW_WORDS:]
    initials = "".join(w[0] for w in words if w[0].isupper())
    return cand in initials


def categorise(context: list[str], target: str, index: SuccessionIndex) -> str:
    """Category of a winning token (rules in the module docstring).

    Args:
        context: surface strings of the tokens before the target (leading spaces kept).
        target: surface string of the correct next token.
        index: the succession items (:class:`SuccessionIndex`).

    Returns: one of :data:`CATEGORIES`.
    """
    items = _context_items(context, index)
    text = "".join(context)
    tgt = index.lookup(target)
    continues_number = target.strip().isdigit() and not target[:1].isspace() and text[-1:].isdigit()
    if tgt and not continues_number:
        seen = {(f, i) for entries in items for f, i, _ in entries}
        if any((f, (i - 1) % mod if mod else i - 1) in seen for f, i, mod in tgt):
            return "successorship"
    if _is_acronym(text, target):
        return "acronym"
    num = [e for e in tgt if e[0] in NUMERIC_FAMILIES]
    if num and not continues_number:
        anchor = _anchor(items, {e[0] for e in num})
        if anchor and any(af == f and i > ai + 1 for f, i, _ in num for af, ai, _ in anchor):
            return "greater-than"
    s = target.strip()
    if re.search(r"[A-Za-z0-9]", s) and any(c.strip() == s for c in context):
        return "copying"
    return "other"


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """Surface string of each token of ``ids`` (they concatenate to the decoded text).

    Uses prefix decoding, so spaces that SentencePiece decoders strip from a lone token are kept;
    where a prefix decode is unstable (a partial UTF-8 character) the token is decoded alone.
    Special tokens (BOS) give "".
    """
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out, prev = [], ""
    for k in range(len(ids)):
        if ids[k] in special:
            out.append("")
            continue
        cur = tokenizer.decode([i for i in ids[: k + 1] if i not in special])
        out.append(cur[len(prev):] if cur.startswith(prev) else tokenizer.decode([ids[k]]))
        prev = cur
    return out


def category_shares(categories: list[str]) -> dict[str, float]:
    """Share of each of :data:`CATEGORIES` in ``categories`` (0 for all when empty)."""
    n = len(categories)
    return {c: (sum(x == c for x in categories) / n if n else 0.0) for c in CATEGORIES}
