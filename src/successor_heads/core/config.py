"""What every typed config section shares (docs/DESIGN.md, "Configuration"): its error, the value
checks its ``__post_init__`` runs, and the config folder. Ours."""

from __future__ import annotations

import operator
import os
from pathlib import Path
from typing import Any, Iterable


class ConfigError(ValueError):
    """A config that cannot be composed or breaks a rule; the message names the key, the bad
    value and what is allowed."""


def _fail(key: str, value: Any, what: str, hint: str = "") -> None:
    raise ConfigError(f"{key}={value!r}" + (f" ({hint})" if hint else "") + f": {what}")


def one_of(key: str, value: Any, choices: Iterable[str], *, optional: bool = False, each: bool = False) -> None:
    """Check that ``value`` (``each``: every item of the list) is in ``choices`` (``optional``: or None).

    Raises:
        ConfigError: naming the key, e.g. ``wild.final_norm='fixed': must be one of frozen, recomputed``.
    """
    choices = tuple(choices)
    if value is None and optional:
        return
    bad = [v for v in value if v not in choices] if each else []
    if bad:
        _fail(key, value, f"holds {', '.join(map(repr, bad))}: each must be one of {', '.join(choices)}")
    if not each and value not in choices:
        _fail(key, value, f"must be one of {', '.join(choices)}")


_BOUNDS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}


def bounded(key: str, value: Any, *, hint: str = "", **bounds: float) -> None:
    """Check that the number ``value`` (a list: each item) is within ``bounds`` (``ge``, ``gt``,
    ``le``, ``lt``).

    Raises:
        ConfigError: e.g. ``wild.batch_size=0: must be >= 1`` (NaN and booleans fail too).
    """
    many = isinstance(value, (list, tuple))
    for v in value if many else [value]:
        if (isinstance(v, bool) or not isinstance(v, (int, float))
                or not all(_BOUNDS[k][1](v, b) for k, b in bounds.items())):
            _fail(key, value, f"{'each item ' if many else ''}must be "
                  + " and ".join(f"{_BOUNDS[k][0]} {b}" for k, b in bounds.items()), hint)


def require(ok: bool, key: str, value: Any, what: str) -> None:
    """Raise :class:`ConfigError` ``key=value: <what>`` unless ``ok`` (``what``: e.g. ``must not be empty``)."""
    if not ok:
        _fail(key, value, what)


def find_config_dir(start: str | os.PathLike | None = None) -> Path:
    """The project's ``config/`` folder: ``$SUCCESSOR_HEADS_CONFIG`` when set, else the first
    ``config/config.yaml`` in ``start`` (default: the working directory) or its parents.

    Raises:
        ConfigError: none found (saying where to run from).
    """
    env = os.environ.get("SUCCESSOR_HEADS_CONFIG")
    if env:
        if (Path(env) / "config.yaml").is_file():
            return Path(env).resolve()
        raise ConfigError(f"SUCCESSOR_HEADS_CONFIG={env} has no config.yaml")
    here = Path(start or os.getcwd()).resolve()
    for d in [here, *here.parents]:
        if (d / "config" / "config.yaml").is_file():
            return d / "config"
    raise ConfigError(f"no config/config.yaml in {here} or its parents; run from the project root "
                      "or set SUCCESSOR_HEADS_CONFIG to the config folder")


def available_models(config_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the models that have a ``config/model/<name>.yaml`` (sorted; default folder:
    :func:`find_config_dir`)."""
    return sorted(p.stem for p in (Path(config_dir or find_config_dir()) / "model").glob("*.yaml"))
