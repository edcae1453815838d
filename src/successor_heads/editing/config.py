"""The ``editing`` config section: vector arithmetic with the features through the successor
head, greater-than bias, and what an edit does to next-token loss (paper Section 3.2, Figure 5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from successor_heads.core import MODES
from successor_heads.core.config import bounded, one_of, require
from successor_heads.editing import SCALE_REFS, SOURCES


def _zero_or_modulus(v) -> bool:
    return v == 0 or v >= 2


@dataclass(frozen=True)
class EditingConfig:
    """Sized for about 1-2 minutes per small model on 2 CPU cores; raise the prompt counts on a cluster."""

    scale: float = 1.0  # headline edit scale: a = scale * |<MLP0(x), f_i>| (scale_ref=projection)
    scale_sweep: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0])
    scale_ref: str = "projection"  # projection: |<x, f_i>| | norm: ||x||
    sources: list[str] = field(default_factory=lambda: ["sae", "probe"])  # sets in features/directions.h5
    # task family -> modulus of the features it is edited with (0 skips a family)
    moduli: dict[str, int] = field(default_factory=lambda: {
        "numbers": 10, "number_words": 10, "ordinal_words": 10, "letters": 10,
        "days": 7, "day_prefixes": 7, "months": 12, "month_prefixes": 12})
    # families with another modulus (days, months) are also edited mod 10, as the paper did (0: off)
    paper_modulus: int = 10
    head_mode: Optional[str] = None  # scores mode whose top head is edited through; None: the file's default
    greater_than_families: list[str] = field(default_factory=lambda: ["numbers", "number_words"])
    n_items: int = 3  # list items shown in the edit -> loss prompts
    max_prompts_per_family: int = 8
    max_targets_per_prompt: int = 2  # target residues j tried per prompt
    corpus_families: list[str] = field(default_factory=lambda: [
        "numbers", "number_words", "ordinal_words", "days", "months"])  # tokens edited in the corpus
    corpus_shift: int = 1  # on natural text, every token of class i is edited to (i + shift) mod m
    corpus_sources: list[str] = field(default_factory=lambda: ["sae"])  # one corpus pass per residue class each
    batch_size: int = 8  # corpus contexts per forward pass

    def __post_init__(self):
        k = "editing."
        require(len(self.scale_sweep) > 0, k + "scale_sweep", self.scale_sweep, "must not be empty")
        one_of(k + "scale_ref", self.scale_ref, SCALE_REFS)
        one_of(k + "sources", self.sources, SOURCES, each=True)
        one_of(k + "corpus_sources", self.corpus_sources, SOURCES, each=True)
        require(all(_zero_or_modulus(v) for v in self.moduli.values()), k + "moduli", self.moduli,
                "must be 0 (skip) or >= 2 for every family")
        require(_zero_or_modulus(self.paper_modulus), k + "paper_modulus", self.paper_modulus,
                "must be 0 (off) or an integer >= 2 (the paper's: 10)")
        one_of(k + "head_mode", self.head_mode, MODES, optional=True)
        bounded(k + "n_items", self.n_items, ge=1)
        bounded(k + "max_prompts_per_family", self.max_prompts_per_family, ge=0)
        bounded(k + "max_targets_per_prompt", self.max_targets_per_prompt, ge=1)
        bounded(k + "batch_size", self.batch_size, ge=1)
        extra = sorted(set(self.corpus_sources) - set(self.sources))
        require(not extra, k + "corpus_sources", self.corpus_sources,
                f"within editing.sources={self.sources} (it does not load {extra})")
