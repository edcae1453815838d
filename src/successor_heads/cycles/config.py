"""The ``cycles`` stage's settings: one frozen dataclass with the defaults and their bounds
(docs/DESIGN.md, "Circular features"). :func:`successor_heads.cycles.stage.run` is the only
reader of the project config; every library function of the package takes these values as
explicit keyword arguments."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

#: The cycles measured by default: a succession task of ``successor_heads.core.tasks`` and its
#: period. Days and months wrap; digits 1..9 sit on a period-10 circle (``numbers_unspaced`` has
#: no 0); letters are the non-cyclic control.
DEFAULT_TASKS: tuple[tuple[str, int], ...] = (
    ("days_spaced_title", 7),
    ("months_spaced_title", 12),
    ("numbers_unspaced", 10),
    ("letters_spaced_upper", 26),
)


@dataclass(frozen=True)
class CyclesConfig:
    """``n_permutations``: item-label permutations of each circle fit's null (0..100000);
    ``seed``: their seed; ``tasks``: ``(task name, period T)`` pairs, T >= 2, names distinct.

    Raises: ValueError (one line naming the key) for a value out of bounds."""

    n_permutations: int = 1000
    seed: int = 0
    tasks: tuple[tuple[str, int], ...] = DEFAULT_TASKS

    def __post_init__(self):
        if not 0 <= int(self.n_permutations) <= 100_000:
            raise ValueError(f"cycles.n_permutations={self.n_permutations}: must be in 0..100000")
        if not self.tasks:
            raise ValueError("cycles.tasks is empty: name at least one task and its period, e.g. days_spaced_title: 7")
        names = [t for t, _ in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"cycles.tasks names a task twice: {names}")
        for name, T in self.tasks:
            if int(T) < 2:
                raise ValueError(f"cycles.tasks.{name}={T}: the period must be at least 2")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None) -> "CyclesConfig":
        """From a config section (``tasks`` as a mapping name -> T); missing or None keys (and
        an empty ``tasks``) keep the defaults, unknown keys raise ValueError."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"cycles: unknown key(s) {unknown}; known: {sorted(known)}")
        if section.get("tasks"):
            section["tasks"] = tuple((str(k), int(v)) for k, v in dict(section["tasks"]).items())
        else:  # None or {}: the default tasks
            section.pop("tasks", None)
        return cls(**{k: v for k, v in section.items() if v is not None})
