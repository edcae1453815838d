"""What one stage hands the next: readers of the files the scores stage writes, and the JSON writer
every stage uses for its summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from successor_heads.core.atomic import atomic_path
from successor_heads.core.h5io import read_h5


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def load_top_heads(scores_h5: str | Path, k: int = 1, mode: str | None = None) -> list[tuple[int, int]]:
    """The ``k`` highest-scoring heads ``[(layer, head), ...]`` from a ``successor_scores.h5``
    (``mode`` default: the file's default mode).

    Raises: :class:`successor_heads.core.h5io.IncompleteOutputError` for a missing or unfinished file.
    """
    data, attrs = read_h5(scores_h5)
    mode = mode or str(attrs["default_mode"])
    overall = data[f"overall_{mode}"]
    order = np.argsort(-overall, axis=None, kind="stable")[:k]
    return [tuple(int(v) for v in np.unravel_index(i, overall.shape)) for i in order]
