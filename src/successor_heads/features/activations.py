"""Activation cache: effective embeddings (MLP0 outputs) of number and succession tokens.

Paper, Section 3 ("mod-10 features"): SAEs and linear probes are trained on the MLP0 outputs
``MLP0(W_E[t])`` of the number tokens 0-500, with and without a leading space, plus the other
succession tasks' tokens. This module chooses those rows for one tokenizer and caches their
effective embeddings (:func:`successor_heads.core.effective_embedding.mlp0_embeddings`) in
``results/{model}/activations/effective_embeddings.h5``.

Rows
    one per (group, token): every number ``0..numbers_max`` that is a single token, spaced
    (group ``numbers_spaced``) and unspaced (``numbers_unspaced``), then every kept token of
    every succession task (:func:`successor_heads.core.tasks.build_tasks`), group = task name.
    Numbers already covered by the number rows are not repeated; other tokens may appear in
    several groups (" I" is a letter and a roman numeral) and keep one row per group.
    Each row carries ``index`` (``Task.index``; numbers: their value), ``position`` (1-based
    place in its list: numbers their value, Monday=1, February=2, A=1) and ``successor_id``
    (token id of its successor, -1 if none is a single token).

Tokenizers that split digits (SmolLM2, Gemma3) only have 0-9 as number rows; the counts per
family are in the cache's attributes so every downstream number says what it was based on.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from successor_heads.core.h5io import read_h5, write_h5
from successor_heads.core.tasks import single_token_id

#: datasets every cache file holds (read_h5 refuses a file that lacks one)
CACHE_DATASETS = ("x", "token_ids", "tokens", "group", "family", "index", "position",
                  "successor_id", "held_out")
NUMBER_FAMILY = "numbers"


@dataclass
class TokenRows:
    """The rows of the cache, as parallel lists of length ``n_tokens``."""

    token_ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    group: list[str] = field(default_factory=list)  # task name, or numbers_spaced / numbers_unspaced
    family: list[str] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    position: list[int] = field(default_factory=list)
    successor_id: list[int] = field(default_factory=list)
    held_out: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.token_ids)

    def add(self, tid: int, tok: str, group: str, family: str, index: int, position: int,
            successor_id: int, held_out: bool) -> None:
        """Append one row (see the module docstring for the fields)."""
        for name, v in zip(("token_ids", "tokens", "group", "family", "index", "position",
                            "successor_id", "held_out"),
                           (int(tid), tok, group, family, int(index), int(position),
                            int(successor_id), bool(held_out))):
            getattr(self, name).append(v)

    def residues(self, modulus: int, residue_of: str = "position") -> np.ndarray:
        """``[n_tokens]`` class of each row: ``position % modulus`` (or ``index % modulus``).

        Raises: ValueError for a modulus below 2 or an unknown ``residue_of``.
        """
        if int(modulus) < 2:
            raise ValueError(f"modulus={modulus}: must be an integer >= 2")
        if residue_of not in ("position", "index"):
            raise ValueError(f"residue_of={residue_of!r}: must be 'position' or 'index'")
        return np.asarray(getattr(self, residue_of), dtype=np.int64) % int(modulus)

    def mask(self, families: list[str] | None = None, exclude: list[str] | None = None,
             include_held_out: bool = False) -> np.ndarray:
        """``[n_tokens]`` bool: rows of ``families`` (None: all), not in ``exclude``."""
        fam = np.asarray(self.family, dtype=object)
        m = np.ones(len(self), bool) if families is None else np.isin(fam, families)
        if exclude:
            m &= ~np.isin(fam, exclude)
        if not include_held_out:
            m &= ~np.asarray(self.held_out, bool)
        return m

    def counts(self) -> dict[str, int]:
        """Rows per family (plus ``numbers_spaced``/``numbers_unspaced`` and ``total``)."""
        out = dict(sorted(Counter(self.family).items()))
        for g in ("numbers_spaced", "numbers_unspaced"):
            out[g] = sum(x == g for x in self.group)
        out["total"] = len(self)
        return out

    def to_datasets(self) -> dict[str, Any]:
        """Name -> ``[n_tokens]`` array or list of str, for :func:`successor_heads.core.h5io.write_h5`."""
        return {"token_ids": np.asarray(self.token_ids, np.int64), "tokens": list(self.tokens),
                "group": list(self.group), "family": list(self.family),
                "index": np.asarray(self.index, np.int64), "position": np.asarray(self.position, np.int64),
                "successor_id": np.asarray(self.successor_id, np.int64),
                "held_out": np.asarray(self.held_out, np.int8)}

    @classmethod
    def from_datasets(cls, d: dict[str, Any]) -> TokenRows:
        """Inverse of :meth:`to_datasets`. Raises: ValueError when the lists differ in length."""
        def lst(k):
            v = d[k]
            return list(v) if isinstance(v, list) else np.asarray(v).tolist()

        rows = cls(lst("token_ids"), lst("tokens"), lst("group"), lst("family"), lst("index"),
                   lst("position"), lst("successor_id"), [bool(b) for b in lst("held_out")])
        lengths = {k: len(getattr(rows, k)) for k in rows.__dataclass_fields__}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"row datasets differ in length: {lengths}")
        return rows


def activation_rows(tokenizer, tasks, numbers_max: int = 500) -> TokenRows:
    """Choose the cached rows (module docstring) for ``tokenizer``.

    Args:
        tokenizer: a Hugging Face tokenizer.
        tasks: ``list[Task]`` from :func:`successor_heads.core.tasks.build_tasks` for the same tokenizer.
        numbers_max: largest number (paper: 500).

    Returns: :class:`TokenRows` (numbers first, then task tokens in task order).
    Raises: ValueError if ``numbers_max < 0`` or no row survives the single-token filter.
    """
    if isinstance(numbers_max, bool) or int(numbers_max) < 0:
        raise ValueError(f"features.numbers_max={numbers_max!r}: must be an integer >= 0")
    rows = TokenRows()
    covered: set[tuple[str, int]] = set()
    for spacing, pre in (("spaced", " "), ("unspaced", "")):
        ids = [single_token_id(tokenizer, f"{pre}{n}") for n in range(int(numbers_max) + 1)]
        for n, tid in enumerate(ids):
            if tid is None:
                continue
            nxt = ids[n + 1] if n + 1 < len(ids) and ids[n + 1] is not None else -1
            rows.add(tid, f"{pre}{n}", f"numbers_{spacing}", NUMBER_FAMILY, n, n, nxt, False)
            covered.add((f"numbers_{spacing}", n))
    for t in tasks:
        for k, (tid, tok, idx) in enumerate(zip(t.token_ids, t.tokens, t.index)):
            if t.family == NUMBER_FAMILY and (t.name, idx) in covered:
                continue
            s = t.successor[k]
            pos = idx - t.index_base + 1
            rows.add(tid, tok, t.name, t.family, idx, pos, t.token_ids[s] if s >= 0 else -1, t.held_out)
    if len(rows) == 0:
        raise ValueError("empty token set: no number or succession-task token is a single token "
                         "of this tokenizer, so there is nothing to cache")
    return rows


def write_cache(path: str | os.PathLike, rows: TokenRows, x_TM, attrs: dict | None = None,
                chunk_rows: int = 256) -> Path:
    """Write ``x_TM [n_tokens, d_model]`` (stored float32, chunked along the token axis,
    gzip) and the row metadata atomically with :func:`successor_heads.core.h5io.write_h5`.

    ``attrs`` (provenance etc.) are extended with ``counts`` (rows per family) and ``dims``.
    Raises: ValueError when ``x_TM`` does not have one row per token.
    """
    x = torch.as_tensor(x_TM).detach().float().cpu().numpy()
    if x.ndim != 2 or x.shape[0] != len(rows):
        raise ValueError(f"x has shape {tuple(x.shape)}; expected [{len(rows)}, d_model]")
    attrs = dict(attrs or {})
    attrs.update(counts=rows.counts(), n_tokens=len(rows), d_model=int(x.shape[1]),
                 dims="x: [n_tokens, d_model]; all other datasets: [n_tokens]",
                 space="mlp0")
    return write_h5(path, {"x": x, **rows.to_datasets()}, attrs, chunk_rows=chunk_rows)


def read_cache(path: str | os.PathLike) -> tuple[TokenRows, np.ndarray, dict]:
    """Read a cache written by :func:`write_cache`: ``(rows, x [n_tokens, d_model] float32, attrs)``.

    Raises:
        successor_heads.core.h5io.IncompleteOutputError: missing, truncated or unmarked file, or a
            required dataset is absent.
        ValueError: datasets of inconsistent lengths.
    """
    data, attrs = read_h5(path, required=CACHE_DATASETS)
    rows = TokenRows.from_datasets(data)
    x = np.asarray(data["x"], np.float32)
    if x.ndim != 2 or x.shape[0] != len(rows):
        raise ValueError(f"{path}: x has shape {x.shape} but there are {len(rows)} rows")
    return rows, x, attrs
