"""The paper's numbers (Gould et al., ICLR 2024), read from the one data file that holds them,
``paper_numbers.yaml`` beside this module: every number once, with the section that reports it
and the model it was measured on. The stages' summaries and figures and the zoo's paper table
read them here, so a correction is made in one place.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

#: Keys of an entry that are not part of its setting.
_FIELDS = ("section", "value", "model")


@dataclass(frozen=True)
class PaperNumber:
    """One reported quantity.

    ``section``: where the paper reports it (e.g. ``"Section 3.2, Figure 5"``); ``value``: the
    number, or a mapping of them (per task group, per model), or the paper's words where it
    gives no number; ``model``: the model it was measured on (None when the entry says it per
    value); ``setting``: what the number depends on (e.g. ``threshold``, ``modulus``,
    ``n_contexts``).
    """

    section: str
    value: Any
    model: str | None = None
    setting: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def _load() -> dict:
    text = resources.files("successor_heads.core").joinpath("paper_numbers.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def paper_number(stage: str, key: str) -> PaperNumber:
    """The paper's number ``key`` of ``stage`` (``scores``, ``features``, ``editing``, ``wild``).

    Returns: a :class:`PaperNumber` (a fresh copy: callers may change its value).
    Raises: KeyError naming the known stages or keys.
    """
    numbers = _load()
    if stage not in numbers:
        raise KeyError(f"no paper numbers for stage {stage!r}; known: {sorted(numbers)}")
    if key not in numbers[stage]:
        raise KeyError(f"no paper number {key!r} for stage {stage!r}; known: {list(numbers[stage])}")
    entry = copy.deepcopy(numbers[stage][key])
    return PaperNumber(entry["section"], entry["value"], entry.get("model"),
                       {k: v for k, v in entry.items() if k not in _FIELDS})


def paper_values(stage: str) -> dict[str, Any]:
    """``{key: value}`` of every paper number of ``stage``, in the data file's order (the
    ``paper`` field of that stage's summary). Raises: KeyError for an unknown stage."""
    if stage not in _load():
        raise KeyError(f"no paper numbers for stage {stage!r}; known: {sorted(_load())}")
    return {key: paper_number(stage, key).value for key in _load()[stage]}
