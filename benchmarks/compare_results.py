"""Compare two results/ trees value by value: every CSV, JSON and HDF5 file (datasets and
attributes) under the given models' folders and the zoo folder.

    python benchmarks/compare_results.py OLD_RESULTS NEW_RESULTS [--models smollm2-135m gemma3-270m]
        [--zoo zoo] [--tol 1e-6] [--include 'smollm2-135m/successor_scores*' ...] [--ignore memory]

Numbers are equal when ``|a - b| <= tol + tol * |b|`` (NaN equals NaN); strings and other values
must be identical. Not compared: figures (PNG), the model folders (weights, shared), logs, and the
places where a run records its config (``config.yaml``, ``config/`` views) or its own timing and
software (``wall_s``, ``timings_s``, ``rows_per_s``, ``package_versions``). Prints one line per
difference and a summary; exits 1 when a compared value differs or a file is missing on one side. Ours.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

#: keys that record when, how fast or with which software a run went, not what it computed
IGNORED_KEYS = {"wall_s", "timings_s", "rows_per_s", "package_versions"}
#: folders and files that are the record of the config, weights or logs, not results
SKIPPED_PARTS = {"model", "config", "logs", ".download"}


def _close(a, b, tol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b
    if math.isnan(a) and math.isnan(b):
        return True
    return abs(a - b) <= tol + tol * abs(b)


def compare_json(a, b, tol: float, where: str, out: list[str]) -> int:
    """Recursively compare two parsed JSON values; returns the number of leaves compared."""
    if isinstance(a, dict) and isinstance(b, dict):
        n = 0
        for k in sorted(set(a) | set(b)):
            if k in IGNORED_KEYS:
                continue
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'new' if k in b else 'old'}")
                continue
            n += compare_json(a[k], b[k], tol, f"{where}.{k}", out)
        return n
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: length {len(a)} != {len(b)}")
            return 1
        return sum(compare_json(x, y, tol, f"{where}[{i}]", out) for i, (x, y) in enumerate(zip(a, b)))
    if not _close(a, b, tol):
        out.append(f"{where}: {a!r} != {b!r}")
    return 1


def compare_csv(a: Path, b: Path, tol: float, where: str, out: list[str]) -> int:
    x, y = pd.read_csv(a), pd.read_csv(b)
    if list(x.columns) != list(y.columns) or len(x) != len(y):
        out.append(f"{where}: columns or rows differ ({list(x.columns)} x {len(x)} vs {list(y.columns)} x {len(y)})")
        return 1
    for c in x.columns:
        if pd.api.types.is_numeric_dtype(x[c]) and pd.api.types.is_numeric_dtype(y[c]):
            u, v = x[c].to_numpy(float), y[c].to_numpy(float)
            bad = ~(np.isclose(u, v, rtol=tol, atol=tol) | (np.isnan(u) & np.isnan(v)))
        else:
            u, v = x[c].astype(object).where(x[c].notna(), "<NA>"), y[c].astype(object).where(y[c].notna(), "<NA>")
            bad = (u.astype(str).to_numpy(dtype=object) != v.astype(str).to_numpy(dtype=object))
        if bad.any():
            i = int(np.argmax(bad))
            out.append(f"{where}[{c}]: {int(bad.sum())} rows differ, e.g. row {i}: {x[c].iloc[i]!r} != {y[c].iloc[i]!r}")
    return x.size


def _attr(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def compare_h5(a: Path, b: Path, tol: float, where: str, out: list[str]) -> int:
    n = 0
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names_a, names_b = [], []
        fa.visit(names_a.append)
        fb.visit(names_b.append)
        for name in sorted(set(names_a) | set(names_b)):
            if name not in fa or name not in fb:
                out.append(f"{where}/{name}: only in {'new' if name in fb else 'old'}")
                continue
            da, db = fa[name], fb[name]
            n += compare_json({k: _attr(v) for k, v in da.attrs.items()}, {k: _attr(v) for k, v in db.attrs.items()},
                              tol, f"{where}/{name}@attrs", out)
            if isinstance(da, h5py.Dataset):
                u, v = da[()], db[()]
                if u.shape != v.shape:
                    out.append(f"{where}/{name}: shape {u.shape} != {v.shape}")
                elif u.dtype.kind in "fiub" and v.dtype.kind in "fiub":
                    u, v = u.astype(float), v.astype(float)
                    bad = ~(np.isclose(u, v, rtol=tol, atol=tol) | (np.isnan(u) & np.isnan(v)))
                    if bad.any():
                        out.append(f"{where}/{name}: {int(bad.sum())} of {u.size} values differ, max |diff| "
                                   f"{np.nanmax(np.abs(u - v)):.3g}")
                elif not np.array_equal(u, v):
                    out.append(f"{where}/{name}: values differ")
                n += int(np.size(u))
        n += compare_json({k: _attr(v) for k, v in fa.attrs.items()}, {k: _attr(v) for k, v in fb.attrs.items()},
                          tol, f"{where}@attrs", out)
    return n


def files(root: Path, folder: str) -> set[str]:
    base = root / folder
    return {str(p.relative_to(root)) for p in base.rglob("*") if p.is_file()
            and p.suffix in (".csv", ".json", ".h5") and not SKIPPED_PARTS & set(p.relative_to(base).parts[:-1])
            and p.name != "config.yaml"} if base.is_dir() else set()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    p.add_argument("--zoo", default="zoo")
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--include", nargs="+", default=["*"],
                   help="only files whose path under results/ matches one of these globs (e.g. a stage's files)")
    p.add_argument("--ignore", nargs="+", default=[],
                   help="more keys to skip, e.g. memory (to compare a streamed run with one in memory)")
    a = p.parse_args(argv)
    IGNORED_KEYS.update(a.ignore)
    out: list[str] = []
    n_files = n_values = 0
    for folder in [*a.models, a.zoo]:
        old, new = ({f for f in files(r, folder) if any(fnmatch.fnmatch(f, g) for g in a.include)}
                    for r in (a.old, a.new))
        for rel in sorted(old ^ new):
            out.append(f"{rel}: only in {'new' if rel in new else 'old'}")
        for rel in sorted(old & new):
            fa, fb = a.old / rel, a.new / rel
            if rel.endswith(".csv"):
                n_values += compare_csv(fa, fb, a.tol, rel, out)
            elif rel.endswith(".json"):
                n_values += compare_json(json.loads(fa.read_text()), json.loads(fb.read_text()), a.tol, rel, out)
            else:
                n_values += compare_h5(fa, fb, a.tol, rel, out)
            n_files += 1
    for line in out:
        print(line)
    print(f"compared {n_files} files ({n_values} values, tol {a.tol:g}): {len(out)} differences")
    return 1 if out else 0


if __name__ == "__main__":
    sys.exit(main())
