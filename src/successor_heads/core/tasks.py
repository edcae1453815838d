"""Succession datasets: ordered token sets whose (token, successor) pairs the scores use.

Paper source: Gould et al., "Successor Heads: Recurring, Interpretable Attention Heads In
The Wild" (ICLR 2024), Section 2 (succession datasets behind the successor score) and the
appendix listing the tasks: numbers 1-200, number words one-twenty, cardinal/ordinal words
first-tenth, days Monday-Sunday, day prefixes Mon-Sun, months January-December, month
prefixes Jan-Dec and letters A-Z, each with and without a leading space and, for word tasks,
in capitalised variants. Roman numerals are kept as a held-out task (docs/DESIGN.md, "Succession
datasets"). A (token, successor) pair enters a task only when both strings are single tokens
of the model's tokenizer; everything dropped is reported (``tasks_report``).

Task names
    ``{family}_{spacing}[_{case}]``, all snake case and stable across models:

    * family: ``numbers``, ``number_words``, ``ordinal_words``, ``days``, ``day_prefixes``,
      ``months``, ``month_prefixes``, ``letters``, ``roman`` (held out);
    * spacing: ``spaced`` (items carry a leading space, " Monday") or ``unspaced`` ("Monday");
    * case (only for families with case variants): ``lower`` / ``title`` for word families,
      ``lower`` / ``upper`` for letters. ``numbers`` and ``roman`` have no case suffix.

    Examples: ``days_spaced_title`` (" Monday"), ``days_unspaced_lower`` ("monday"),
    ``numbers_spaced`` (" 17"), ``letters_unspaced_upper`` ("Q"), ``roman_spaced`` (" XIV").

Indices (``Task.index``: the item's place in the full, unfiltered list)
    numeric families use their value (numbers 1..numbers_max, number words one=1..twenty=20,
    ordinal words first=1..tenth=10, roman I=1..XX=20), so ``index % 10`` is the residue the
    mod-10 analysis needs; cyclic and alphabetic families are 0-based (Monday=0..Sunday=6,
    January=0..December=11, A=0..Z=25). ``Task.index_base`` is the index of the first item, and
    ``Task.positions`` gives 1-based positions (February=2) for analyses that want those.

Wrapping
    days, day prefixes, months and month prefixes wrap (Sunday -> Monday, Dec -> Jan) and carry
    ``modulus`` 7 or 12; every other task ends at its last item, which has no successor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from successor_heads.core.config import bounded

_NUMBER_WORDS = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()
_ORDINAL_WORDS = "first second third fourth fifth sixth seventh eighth ninth tenth".split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_MONTHS = (
    "January February March April May June July August September October November December"
).split()
_ROMAN = "I II III IV V VI VII VIII IX X XI XII XIII XIV XV XVI XVII XVIII XIX XX".split()
_LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]


@dataclass(frozen=True)
class _Family:
    items: tuple[str, ...]  # canonical spelling, in order
    cases: tuple[str, ...]  # case variants ("" = used as written, no name suffix)
    modulus: Optional[int]  # wraps with this period; None = no wrap
    index_base: int  # index of the first item (1 = value, 0 = 0-based)
    held_out: bool = False


def _families(numbers_max: int, include_roman: bool) -> dict[str, _Family]:
    fams = {
        "numbers": _Family(tuple(str(i) for i in range(1, numbers_max + 1)), ("",), None, 1),
        "number_words": _Family(tuple(_NUMBER_WORDS), ("lower", "title"), None, 1),
        "ordinal_words": _Family(tuple(_ORDINAL_WORDS), ("lower", "title"), None, 1),
        "days": _Family(tuple(_DAYS), ("title", "lower"), 7, 0),
        "day_prefixes": _Family(tuple(d[:3] for d in _DAYS), ("title", "lower"), 7, 0),
        "months": _Family(tuple(_MONTHS), ("title", "lower"), 12, 0),
        "month_prefixes": _Family(tuple(m[:3] for m in _MONTHS), ("title", "lower"), 12, 0),
        "letters": _Family(tuple(_LETTERS), ("upper", "lower"), None, 0),
    }
    if include_roman:
        fams["roman"] = _Family(tuple(_ROMAN), ("",), None, 1, held_out=True)
    return fams


_CASE_FN = {"": lambda s: s, "lower": str.lower, "upper": str.upper, "title": str.title}


@dataclass
class Task:
    """One succession task after the single-token filter for one tokenizer.

    ``tokens``/``token_ids``/``index`` are parallel lists over the *kept* items, in the
    original order. ``successor[k]`` is the position in ``tokens`` of the successor of
    ``tokens[k]``, or -1 when that successor was dropped or there is none (end of a
    non-wrapping task). ``usable`` is False when fewer than 2 pairs survive; consumers skip
    such tasks, and skip ``held_out`` tasks (roman numerals) in overall scores.
    """

    name: str
    family: str
    spacing: str  # "spaced" | "unspaced"
    case: str  # "" | "lower" | "title" | "upper"
    tokens: list[str]
    token_ids: list[int]
    successor: list[int]
    modulus: Optional[int]
    index: list[int]
    index_base: int
    held_out: bool
    n_items: int  # items in the full list before filtering
    n_pairs_total: int  # pairs in the full list (n_items, or n_items - 1 without wrap)
    dropped: list[str] = field(default_factory=list)

    @property
    def n_dropped(self) -> int:
        """Number of items that are not single tokens."""
        return len(self.dropped)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(i, successor_i) positions into ``tokens`` for every kept pair."""
        return [(i, j) for i, j in enumerate(self.successor) if j >= 0]

    @property
    def n_pairs_kept(self) -> int:
        return len(self.pairs)

    @property
    def n_pairs_dropped(self) -> int:
        return self.n_pairs_total - self.n_pairs_kept

    @property
    def usable(self) -> bool:
        return self.n_pairs_kept >= 2

    @property
    def positions(self) -> list[int]:
        """1-based position of each kept item in the full list (Monday=1, February=2, 17=17)."""
        return [i - self.index_base + 1 for i in self.index]


#: residue of a token: its 1-based place in its list (Monday=1, February=2) or its task index
RESIDUE_OF = ("position", "index")


@dataclass(frozen=True)
class TasksConfig:
    """The ``tasks`` config section: which succession tasks are built (:func:`build_tasks`)."""

    numbers_max: int = 200  # numbers 0..numbers_max
    include_roman: bool = True  # held-out task, reported but not in the overall score

    def __post_init__(self):
        bounded("tasks.numbers_max", self.numbers_max, ge=2, hint="the numbers task needs at least the pair 1 -> 2")


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _surface(tokenizer: Any, token_id: int) -> str:
    """Text a token stands for mid-sentence: its vocabulary string with the space markers of
    byte-level BPE ("Ġ") and SentencePiece ("▁") turned back into spaces. ``decode`` is not
    used for this because SentencePiece decoders strip the space of a leading token."""
    raw = tokenizer.convert_ids_to_tokens(int(token_id))
    return str(raw).replace("\u0120", " ").replace("\u2581", " ")


def single_token_id(tokenizer: Any, text: str) -> Optional[int]:
    """Id of ``text`` when the tokenizer writes it as exactly one token, else None.

    First ``tokenizer(text)`` alone; if that is not one token (tokenizers that prepend a space
    turn " Monday" into two pieces), ``text`` is encoded after a context prefix ("\\n", ",")
    and the ids after the prefix's own ids are checked. Either way the id must not be a special
    token, its vocabulary string must spell ``text`` (leading space included), and decoding it
    must give ``text`` back (or ``text`` without its leading space, for decoders that strip it).

    The single-token filter of the succession datasets (paper, Section 2; docs/DESIGN.md). Raises
    nothing: an unencodable ``text`` gives None.
    """
    special = set(getattr(tokenizer, "all_special_ids", []) or [])

    def ok(ids: list[int]) -> Optional[int]:
        if len(ids) != 1 or ids[0] in special:
            return None
        tid = int(ids[0])
        if _surface(tokenizer, tid) != text:
            return None
        dec = tokenizer.decode([tid])
        if dec == text or (text.startswith(" ") and dec == text[1:]):
            return tid
        return None

    tid = ok(_encode(tokenizer, text))
    if tid is not None:
        return tid
    for prefix in ("\n", ","):
        pre, ctx = _encode(tokenizer, prefix), _encode(tokenizer, prefix + text)
        if pre and ctx[: len(pre)] == pre:
            tid = ok(ctx[len(pre):])
            if tid is not None:
                return tid
    return None


def _build_task(tokenizer, family: str, fam: _Family, spacing: str, case: str, cache) -> Task:
    items = [("" if spacing == "unspaced" else " ") + _CASE_FN[case](s) for s in fam.items]
    ids = []
    for s in items:
        if s not in cache:
            cache[s] = single_token_id(tokenizer, s)
        ids.append(cache[s])
    n = len(items)
    kept = [k for k in range(n) if ids[k] is not None]
    pos = {k: p for p, k in enumerate(kept)}
    successor = []
    for k in kept:
        nxt = k + 1
        if nxt == n and fam.modulus is not None:
            nxt = 0
        successor.append(pos.get(nxt, -1) if nxt < n else -1)
    name = f"{family}_{spacing}" + (f"_{case}" if case else "")
    return Task(
        name=name,
        family=family,
        spacing=spacing,
        case=case,
        tokens=[items[k] for k in kept],
        token_ids=[int(ids[k]) for k in kept],
        successor=successor,
        modulus=fam.modulus,
        index=[k + fam.index_base for k in kept],
        index_base=fam.index_base,
        held_out=fam.held_out,
        n_items=n,
        n_pairs_total=n if fam.modulus is not None else n - 1,
        dropped=[items[k] for k in range(n) if ids[k] is None],
    )


def build_tasks(tokenizer: Any, *, numbers_max: int = 200, include_roman: bool = True) -> list[Task]:
    """Build every succession task, filtered to single tokens of ``tokenizer``.

    Inputs: ``tokenizer``, a Hugging Face tokenizer (called as ``tokenizer(s,
    add_special_tokens=False)``, plus ``convert_ids_to_tokens`` and ``decode``); ``numbers_max``,
    the largest number of the numbers task; ``include_roman``, whether the held-out Roman
    numerals task is built (:class:`TasksConfig` holds both as the ``tasks`` config section).
    Output: a list of ``Task`` in a fixed order (family, then spaced before unspaced, then the
    case variants), one per (family, spacing, case), including tasks that lost most pairs:
    check ``Task.usable`` (>= 2 kept pairs) and ``Task.held_out`` before scoring.
    Raises: ValueError when ``numbers_max`` is not an integer >= 2.
    Paper: Section 2 and the appendix on succession datasets (Gould et al., ICLR 2024).
    """
    if isinstance(numbers_max, bool) or not isinstance(numbers_max, int) or numbers_max < 2:
        raise ValueError(
            f"tasks.numbers_max must be an integer >= 2 (the numbers task needs at least one "
            f"pair 1 -> 2); got {numbers_max!r}"
        )
    cache: dict[str, Optional[int]] = {}
    tasks = []
    for family, fam in _families(numbers_max, include_roman).items():
        for spacing in ("spaced", "unspaced"):
            for case in fam.cases:
                tasks.append(_build_task(tokenizer, family, fam, spacing, case, cache))
    return tasks


def scored_tasks(tasks: list[Task]) -> list[Task]:
    """The tasks that enter overall scores: usable and not held out (drops roman numerals and
    tasks with fewer than 2 kept pairs). Input/output: lists of ``Task``. Raises nothing."""
    return [t for t in tasks if t.usable and not t.held_out]


def tasks_report(tasks: list[Task], max_examples: int = 8) -> "pd.DataFrame":
    """Per-task table of what the single-token filter kept and dropped.

    Input: tasks from ``build_tasks``; ``max_examples``, how many dropped items to list.
    Output: DataFrame, one row per task, columns ``task, family, spacing, case, n_items,
    n_tokens_kept, n_pairs_kept, n_pairs_dropped, dropped, held_out, usable``; ``dropped`` is
    the dropped items without their leading space, space-joined, cut after ``max_examples``
    with "... (+N)". Raises nothing. Paper: the appendix on succession datasets (what survives
    tokenization differs per model).
    """
    rows = []
    for t in tasks:
        ex = [s.strip() for s in t.dropped[:max_examples]]
        more = len(t.dropped) - len(ex)
        rows.append(
            {
                "task": t.name,
                "family": t.family,
                "spacing": t.spacing,
                "case": t.case,
                "n_items": t.n_items,
                "n_tokens_kept": len(t.tokens),
                "n_pairs_kept": t.n_pairs_kept,
                "n_pairs_dropped": t.n_pairs_dropped,
                "dropped": " ".join(ex) + (f" ... (+{more})" if more > 0 else ""),
                "held_out": t.held_out,
                "usable": t.usable,
            }
        )
    cols = ["task", "family", "spacing", "case", "n_items", "n_tokens_kept", "n_pairs_kept",
            "n_pairs_dropped", "dropped", "held_out", "usable"]
    import pandas as pd

    return pd.DataFrame(rows, columns=cols)


# family -> case variant used for the ordinal-list prompts (docs/DESIGN.md, "Behavioural check")
PROMPT_FAMILIES = {
    "days": "title",
    "months": "title",
    "number_words": "lower",
    "letters": "upper",
    "numbers": "",
}


def _spread(xs: list, k: int) -> list:
    """k elements of xs, evenly spaced, first and last included (deterministic)."""
    if len(xs) <= k:
        return list(xs)
    if k == 1:
        return [xs[0]]
    return [xs[round(i * (len(xs) - 1) / (k - 1))] for i in range(k)]


def ordinal_list_prompts(
    tokenizer: Any, tasks: list[Task], n_items: int = 3, max_per_family: int = 12
) -> list[dict]:
    """Ordinal-list prompts for the behavioural check (our addition, not the paper's).

    For each family in ``PROMPT_FAMILIES`` (days, months, number words, letters, numbers) the
    spaced task is slid over: every run of ``n_items + 1`` kept items joined by successor links
    (wrapping where the task wraps) gives ``"Monday, Tuesday, Wednesday,"`` with target the
    spaced single token ``" Thursday"``. When the spaced task yields no run (tokenizers that
    split " 4" into a space token and "4", e.g. SmolLM2 and Gemma3) the unspaced task is used
    instead: prompt ``"1, 2, 3, "`` (trailing space) and target ``"4"``. A prompt is kept only
    if ``tokenizer(prompt + target)`` is ``tokenizer(prompt)`` followed by the target id, so
    the target is what the model would really have to predict next. At most
    ``max_per_family`` prompts per family, chosen evenly over the runs (deterministic).

    Inputs: ``tokenizer`` (the one ``tasks`` were built with), ``tasks`` from ``build_tasks``.
    Output: list of dicts ``{"task", "family", "prompt", "target_id", "target"}``; the prompt
    carries no special tokens (prepend BOS in the caller if the model needs it).
    Raises: ValueError when ``n_items < 1`` or ``max_per_family < 1``.
    """
    if n_items < 1 or max_per_family < 1:
        raise ValueError(
            f"n_items and max_per_family must be >= 1; got n_items={n_items}, "
            f"max_per_family={max_per_family}"
        )
    by_name = {t.name: t for t in tasks}
    out: list[dict] = []
    for family, case in PROMPT_FAMILIES.items():
        for spacing in ("spaced", "unspaced"):
            task = by_name.get(f"{family}_{spacing}" + (f"_{case}" if case else ""))
            if task is None:
                continue
            prompts = []
            for start in range(len(task.tokens)):
                chain = [start]
                while len(chain) < n_items + 1 and task.successor[chain[-1]] >= 0:
                    nxt = task.successor[chain[-1]]
                    if nxt in chain:
                        break
                    chain.append(nxt)
                if len(chain) < n_items + 1:
                    continue
                words = [task.tokens[k].strip() for k in chain[:-1]]
                prompt = ", ".join(words) + ("," if spacing == "spaced" else ", ")
                tid, target = task.token_ids[chain[-1]], task.tokens[chain[-1]]
                if _encode(tokenizer, prompt + target) != _encode(tokenizer, prompt) + [tid]:
                    continue
                prompts.append(
                    {"task": task.name, "family": family, "prompt": prompt,
                     "target_id": tid, "target": target}
                )
            if prompts:
                out.extend(_spread(prompts, max_per_family))
                break
    return out
