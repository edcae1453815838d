"""What every typed config of the project shares: its error, its value checks, the config folder.

Each stage declares its keys in a frozen dataclass beside it (``scores/config.py``,
``features/config.py``, ...; the tasks' and corpus' in :mod:`successor_heads.core.tasks` and
:mod:`successor_heads.core.corpus`); the defaults are the dataclass's, the allowed values come
from the module that implements them, and ``__post_init__`` checks them with the helpers below,
so a bad value fails when the run is composed (:mod:`successor_heads.config`), before any job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable


class ConfigError(ValueError):
    """A config that cannot be composed or breaks a rule; the message names the key, the bad
    value and what is allowed."""


def _fail(key: str, value: Any, what: str, hint: str = "") -> None:
    raise ConfigError(f"{key}={value!r}" + (f" ({hint})" if hint else "") + f": {what}")


def one_of(key: str, value: Any, choices: Iterable[str], *, optional: bool = False, each: bool = False,
           non_empty: bool = False) -> None:
    """Check that ``value`` (``each``: every item of the list ``value``) is in ``choices``.

    Args:
        key: the dotted key, for the message (``wild.final_norm``).
        value: the value.
        choices: the allowed values (the implementing module's tuple).
        optional: None is allowed too.
        each: ``value`` is a list whose items are checked.
        non_empty: the list must hold at least one item.

    Raises:
        ConfigError: e.g. ``wild.final_norm='fixed': must be one of frozen, recomputed``.
    """
    choices = tuple(choices)
    if value is None and optional:
        return
    if each:
        if non_empty and not value:
            _fail(key, value, "must not be empty")
        bad = [v for v in value if v not in choices]
        if bad:
            _fail(key, value, f"holds {', '.join(map(repr, bad))}: each must be one of {', '.join(choices)}")
    elif value not in choices:
        _fail(key, value, f"must be one of {', '.join(choices)}")


def bounded(key: str, value: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, hint: str = "") -> None:
    """Check that the number ``value`` (a list: each item) is within the given bounds.

    Raises:
        ConfigError: e.g. ``wild.batch_size=0: must be >= 1`` (NaN and booleans fail too).
    """
    bounds = [(">=", ge, lambda v, b: v >= b), (">", gt, lambda v, b: v > b), ("<=", le, lambda v, b: v <= b),
              ("<", lt, lambda v, b: v < b)]
    bounds = [(sign, b, test) for sign, b, test in bounds if b is not None]
    many = isinstance(value, (list, tuple))
    for v in value if many else [value]:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not all(t(v, b) for _, b, t in bounds):
            _fail(key, value, f"{'each item ' if many else ''}must be " + " and ".join(f"{s} {b}" for s, b, _ in bounds),
                  hint)


def require(ok: bool, key: str, value: Any, what: str) -> None:
    """Raise :class:`ConfigError` ``key=value: <what>`` unless ``ok`` (``what``: e.g. ``must not be empty``)."""
    if not ok:
        _fail(key, value, what)


def find_config_dir(start: str | os.PathLike | None = None) -> Path:
    """Return the project's ``config/`` folder.

    Args:
        start: where to look first (default: the working directory); then its parents.
            ``$SUCCESSOR_HEADS_CONFIG``, when set, wins.

    Returns:
        The folder holding ``config.yaml``.

    Raises:
        ConfigError: no ``config/config.yaml`` was found.
    """
    env = os.environ.get("SUCCESSOR_HEADS_CONFIG")
    if env:
        p = Path(env).resolve()
        if (p / "config.yaml").is_file():
            return p
        raise ConfigError(f"SUCCESSOR_HEADS_CONFIG={env} has no config.yaml")
    here = Path(start or os.getcwd()).resolve()
    for d in [here, *here.parents]:
        if (d / "config" / "config.yaml").is_file():
            return d / "config"
    raise ConfigError(
        f"no config/config.yaml in {here} or its parents; run from the project root "
        "or set SUCCESSOR_HEADS_CONFIG to the config folder"
    )


def available_models(config_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the models that have a ``config/model/<name>.yaml`` (sorted; default folder:
    :func:`find_config_dir`)."""
    d = Path(config_dir) if config_dir else find_config_dir()
    return sorted(p.stem for p in (d / "model").glob("*.yaml"))
