"""The ``scores`` and ``behaviour`` config sections (stage ``scores``; paper Section 2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from successor_heads.core import MODES, NORMS
from successor_heads.core.config import bounded, one_of, require
from successor_heads.scores import ABLATIONS


@dataclass(frozen=True)
class ScoresConfig:
    """Successor scores of every head (:mod:`successor_heads.scores.successor_score`)."""

    # both effective-embedding modes are scored; resid is the default mode, the one whose top head
    # agrees with the behavioural check on all four offline models (README, Findings); mlp0 is the paper's
    modes: list[str] = field(default_factory=lambda: ["mlp0", "resid"])
    default_mode: str = "resid"  # must also be in modes
    norms: str = "raw"  # raw: weights as in the reference re-implementations; applied: model's norms
    value_bias: bool = False  # true adds b_V W_O (the same vector for every token) to each head's OV output
    threshold: float = 0.5  # paper: a successor head scores above 0.5 (read by the zoo table only)
    batch_heads: int = 64

    def __post_init__(self):
        require(len(self.modes) > 0, "scores.modes", self.modes, "must not be empty")
        one_of("scores.modes", self.modes, MODES, each=True)
        one_of("scores.default_mode", self.default_mode, MODES)
        one_of("scores.norms", self.norms, NORMS)
        bounded("scores.batch_heads", self.batch_heads, ge=1)


@dataclass(frozen=True)
class BehaviourConfig:
    """The behavioural check: the drop in the next-item log-probability when a head is ablated."""

    n_items: int = 3  # list items shown before the one to predict
    max_per_family: int = 4  # prompts per list family; one forward pass per layer ablates all its heads
    ablation: str = "mean"
    # 0: ablate every head. K > 0: only the union of each mode's top-K heads by successor score (the
    # rest get NaN drops); config.yaml takes it from the model file's model.behaviour_top_k
    top_k: int = 0

    def __post_init__(self):
        bounded("behaviour.n_items", self.n_items, ge=1)
        bounded("behaviour.max_per_family", self.max_per_family, ge=1)
        one_of("behaviour.ablation", self.ablation, ABLATIONS)
        bounded("behaviour.top_k", self.top_k, ge=0,
                hint="model.behaviour_top_k in the model file; 0: every head, else heads per mode")
