"""The ``wild`` config section: direct-effect mean ablation of every head on natural text,
winning heads, categories of the successor head's winning tokens, numbered listings (paper
Section 4.3 and Appendix J)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from successor_heads.core import MODES
from successor_heads.core.config import bounded, one_of
from successor_heads.wild import COMPUTE_DTYPE_NAMES, FINAL_NORMS


@dataclass(frozen=True)
class WildConfig:
    batch_size: int = 16  # contexts per forward pass; the per-head loop runs once per batch
    max_chunk_mb: int = 1024  # memory cap of one float32 [tokens, d_vocab] logit block
    n_listing_prompts: int = 64  # paper Appendix J: the successor head wins 64/64
    min_increase: float = 0.0  # nats; a head wins a token only when its ablation costs more than this
    n_successor_heads: int = 1  # top heads by successor score whose winning tokens are listed
    score_mode: Optional[str] = None  # scores mode that picks them; None: the scores file's default
    context_chars: int = 80  # characters of context shown before each winning token
    # frozen: final norm scale of the clean run (paper's direct effect); recomputed: norm recomputed
    # on the ablated residual (previous behaviour)
    final_norm: str = "frozen"
    compute_dtype: str = "float32"  # bfloat16 (opt-in): the per-head logit change in bfloat16, fast path only

    def __post_init__(self):
        for key in ("batch_size", "max_chunk_mb", "n_listing_prompts", "n_successor_heads"):
            bounded(f"wild.{key}", getattr(self, key), ge=1)
        bounded("wild.context_chars", self.context_chars, ge=0)
        one_of("wild.score_mode", self.score_mode, MODES, optional=True)
        one_of("wild.final_norm", self.final_norm, FINAL_NORMS)
        one_of("wild.compute_dtype", self.compute_dtype, COMPUTE_DTYPE_NAMES)
