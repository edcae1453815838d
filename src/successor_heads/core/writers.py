"""The writers of every CSV, JSON and text output: written atomically
(:func:`successor_heads.core.atomic.atomic_path`), so a killed job never leaves a file that looks done.
HDF5 outputs have their own writer (:func:`successor_heads.core.h5io.write_h5`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from successor_heads.core.atomic import atomic_path

#: ``float_format`` of the per-head tables (scores, features, zoo table)
FIXED4 = "%.4f"
#: ``float_format`` of the editing and wild tables (rates and nats of any magnitude)
SIGNIFICANT5 = "%.5g"


def _json_default(o):
    return o.item() if hasattr(o, "item") else str(o)


def write_json(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON; numpy scalars become numbers, anything else unknown its ``str``.

    Raises: OSError on a failed write (nothing half-written is left).
    """
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, default=_json_default))


def write_csv(df: pd.DataFrame, path: str | os.PathLike, float_format: str | None = None) -> None:
    """Write ``df`` without its index; ``float_format`` (e.g. :data:`FIXED4`) as in
    :meth:`pandas.DataFrame.to_csv`, None: full precision. Raises: OSError on a failed write."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format)


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (e.g. an HTML page). Raises: OSError on a failed write."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
