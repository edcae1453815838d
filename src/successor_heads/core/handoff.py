"""What one stage hands the next: the reader of the successor head(s) in the file the scores stage
writes, and the one error type for a stage input that is missing or lacks what is asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from successor_heads.core.h5io import IncompleteOutputError, read_h5


class StageInputError(ValueError):
    """A file one stage reads from another stage is missing, unfinished or lacks what is asked;
    the message names the stage that makes it and how to run it."""


def load_top_heads(scores_h5: str | Path, k: int = 1, mode: str | None = None, *, model: str = "<model>",
                   option: str = "mode") -> list[tuple[int, int]]:
    """The successor head(s): the ``k`` heads with the highest overall successor score (paper
    Section 2), ``[(layer, head), ...]`` best first, from a ``successor_scores.h5``.

    Args:
        scores_h5: the scores stage's HDF5 file (dataset ``overall_{mode}`` ``[n_layers, n_heads]``).
        k: how many heads.
        mode: effective-embedding mode; None: the file's ``default_mode``.
        model: the model's name, for the message that says how to make the file.
        option: the config key that chose ``mode`` (e.g. ``editing.head_mode``), for the message.

    Raises:
        StageInputError: the file is missing or unfinished (the message names the scores stage
            and its command), or has no scores for ``mode``.
    """
    try:
        data, attrs = read_h5(scores_h5)
    except IncompleteOutputError as e:
        raise StageInputError(
            f"successor scores unavailable: {e}. They are made by the scores stage: run "
            f"`successor-heads scores model={model}` (or snakemake's successor_scores rule) first") from e
    mode = mode or str(attrs["default_mode"])
    if f"overall_{mode}" not in data:
        have = sorted(k[len("overall_"):] for k in data if k.startswith("overall_"))
        raise StageInputError(f"{option}={mode!r}: {scores_h5} has no such mode (it has {have})")
    overall = data[f"overall_{mode}"]
    order = np.argsort(-overall, axis=None, kind="stable")[:k]
    return [tuple(int(v) for v in np.unravel_index(i, overall.shape)) for i in order]
