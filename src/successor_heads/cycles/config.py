"""The ``cycles`` config section (ours; docs/DESIGN.md, "Circular features")."""

from __future__ import annotations

from dataclasses import dataclass, field

from successor_heads.core.config import bounded, require

#: The cycles measured by default: a succession task of ``successor_heads.core.tasks`` and its
#: period T. Days and months wrap; digits 1..9 sit on a period-10 circle (``numbers_unspaced`` has
#: no 0); letters are the non-cyclic control. ``+cycles.tasks.<task>=T`` adds one,
#: ``~cycles.tasks.<task>`` drops one.
DEFAULT_TASKS: dict[str, int] = {
    "days_spaced_title": 7,
    "months_spaced_title": 12,
    "numbers_unspaced": 10,
    "letters_spaced_upper": 26,
}


@dataclass(frozen=True)
class CyclesConfig:
    n_permutations: int = 1000  # item-label permutations of each circle fit's null
    seed: int = 0  # their seed
    tasks: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TASKS))  # task name -> period T

    def __post_init__(self):
        bounded("cycles.n_permutations", self.n_permutations, ge=0, le=100_000)
        require(bool(self.tasks), "cycles.tasks", self.tasks,
                "must name at least one task and its period, e.g. days_spaced_title: 7")
        for name, period in self.tasks.items():
            bounded(f"cycles.tasks.{name}", period, ge=2, hint="the period T")
