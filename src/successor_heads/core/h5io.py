"""HDF5 outputs with provenance and a completion marker (docs/DESIGN.md, Outputs).

Files are written under a temporary name and renamed when complete; the root attribute
``complete`` is set last, so a reader can tell a finished file from a truncated one even if
the file was copied or renamed by hand. h5py has no bfloat16: tensors are stored as float32
or float16.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from successor_heads.core.atomic import atomic_path

COMPLETE_ATTR = "complete"

#: Test-only hook (tests/workflow/test_faults.py): ``"<seconds>"`` or ``"<seconds>:<name part>"`` makes
#: :func:`write_h5` sleep that long after writing the datasets and before setting the completion
#: marker (only for files whose name contains ``<name part>``), so a test can kill a job mid-write.
SLOW_WRITE_ENV = "SUCCESSOR_HEADS_TEST_SLOW_WRITE"


class IncompleteOutputError(RuntimeError):
    """An HDF5 output is missing, truncated, unmarked or lacks a required dataset."""


def _to_numpy(x: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            if x.dtype == torch.bfloat16:
                x = x.float()
            return x.numpy()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], str):
        return np.array(x, dtype=h5py.string_dtype())
    return np.asarray(x)


def _attr_value(v: Any) -> Any:
    if v is None:
        return "None"
    if isinstance(v, (str, int, float, bool, np.number)):
        return v
    return json.dumps(v, default=str)


def write_h5(
    path: str | os.PathLike,
    datasets: Mapping[str, Any],
    attrs: Mapping[str, Any] | None = None,
    chunk_rows: int | None = None,
) -> Path:
    """Write ``datasets`` (name -> array/tensor/list of str) and root ``attrs`` atomically.

    Arrays with two or more dimensions are chunked along axis 0 (``chunk_rows`` rows, default
    256) and gzip-compressed. Non-scalar attribute values are stored as JSON strings.

    Returns: the final path. Raises: OSError on a failed write (no file is left behind).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, value in datasets.items():
                arr = _to_numpy(value)
                kw: dict[str, Any] = {}
                if arr.ndim >= 1 and arr.size > 0 and arr.dtype.kind in "fiub":
                    rows = min(arr.shape[0], chunk_rows or 256)
                    kw = dict(chunks=(rows, *arr.shape[1:]), compression="gzip", compression_opts=4)
                f.create_dataset(name, data=arr, **kw)
            for k, v in (attrs or {}).items():
                f.attrs[k] = _attr_value(v)
            _test_slow_write(path)
            f.attrs[COMPLETE_ATTR] = True
    return path


def _test_slow_write(path: Path) -> None:
    spec = os.environ.get(SLOW_WRITE_ENV)
    if spec:
        seconds, _, part = spec.partition(":")
        if part in path.name:
            time.sleep(float(seconds))


def check_h5(path: str | os.PathLike) -> None:
    """Raise :class:`IncompleteOutputError` unless ``path`` opens and carries the completion
    marker. Cheap: reads the superblock and root attributes only."""
    path = Path(path)
    hint = f"delete {path} and rerun the stage that writes it"
    try:
        with h5py.File(path, "r") as f:
            if not bool(f.attrs.get(COMPLETE_ATTR, False)):
                raise IncompleteOutputError(f"{path} has no completion marker; {hint}")
    except IncompleteOutputError:
        raise
    except (OSError, KeyError) as e:
        raise IncompleteOutputError(f"{path} cannot be read ({e}); {hint}") from e


def find_incomplete(results_dir: str | os.PathLike) -> list[Path]:
    """Every ``*.h5`` under ``results_dir`` that is truncated, unreadable or lacks the
    completion marker (a file damaged after it was written; Snakemake judges files by their
    modification times and would keep it). Temporaries of writes in progress
    (``.<stem>.tmp-*`` files and folders, see :mod:`successor_heads.core.atomic`) and files set
    aside by :func:`set_aside_incomplete` are skipped. Sorted."""
    root, bad = Path(results_dir), []
    for p in sorted(root.rglob("*.h5")):
        if any(part.startswith(".") for part in p.relative_to(root).parts) or not p.is_file():
            continue
        try:
            check_h5(p)
        except IncompleteOutputError:
            bad.append(p)
    return bad


DAMAGED_SUFFIX = ".damaged"


def set_aside_incomplete(results_dir: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Rename each file :func:`find_incomplete` finds to ``.<name>.damaged`` beside it (kept for
    inspection) and report what must be regenerated.

    Returns ``(moved, missing)``: the files just set aside, and every file with a ``.damaged``
    twin that does not exist (set aside now or by an earlier run, e.g. a dry run, and not
    regenerated since). A twin whose file exists again (regenerated, complete) is deleted.
    """
    root = Path(results_dir)
    moved = find_incomplete(root)
    for p in moved:
        p.replace(p.with_name(f".{p.name}{DAMAGED_SUFFIX}"))
    missing = []
    for twin in sorted(root.rglob(f".*.h5{DAMAGED_SUFFIX}")):
        original = twin.with_name(twin.name[1 : -len(DAMAGED_SUFFIX)])
        if original.exists():
            twin.unlink()
        else:
            missing.append(original)
    return moved, missing


def read_h5(
    path: str | os.PathLike, required: tuple[str, ...] = ()
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read every dataset and the root attributes of a file written by :func:`write_h5`.

    String datasets come back as ``list[str]``.

    Raises:
        IncompleteOutputError: the file is missing, cannot be opened (truncated), lacks the
            completion marker, or lacks one of ``required``. The message says to delete the
            file and rerun the stage that makes it.
    """
    path = Path(path)
    hint = f"delete {path} and rerun the stage that writes it (snakemake reruns it automatically)"
    if not path.is_file():
        raise IncompleteOutputError(f"{path} does not exist; run the stage that writes it "
                                    f"(snakemake --cores N {path})")
    try:
        with h5py.File(path, "r") as f:
            if not bool(f.attrs.get(COMPLETE_ATTR, False)):
                raise IncompleteOutputError(f"{path} has no completion marker (a write was interrupted); {hint}")
            missing = [r for r in required if r not in f]
            if missing:
                raise IncompleteOutputError(f"{path} lacks dataset(s) {missing}; {hint}")
            data = {}
            for name in f:
                v = f[name][()]
                if isinstance(v, np.ndarray) and v.dtype.kind == "O":
                    v = [s.decode() if isinstance(s, bytes) else s for s in v.tolist()]
                data[name] = v
            attrs = {k: f.attrs[k] for k in f.attrs}
    except IncompleteOutputError:
        raise
    except (OSError, KeyError) as e:
        raise IncompleteOutputError(f"{path} cannot be read ({e}); {hint}") from e
    return data, attrs


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape numerical results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for p in ("torch", "transformers", "numpy", "h5py", "gguf", "scikit-learn"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "absent"
    return out


def quantization_label(manifest: Mapping[str, Any] | None) -> str:
    """One string for a model folder's original quantization, from its ``manifest.json``:
    e.g. ``"Q4_1 (MOSTLY_Q4_1; F32:61 Q4_1:210 Q8_0:1)"``, or ``"none"`` for unquantized weights."""
    q = ((manifest or {}).get("gguf") or {}).get("quantization")
    if not q:
        return "none"
    summary = " ".join(f"{k}:{v}" for k, v in (q.get("summary") or {}).items())
    return f"{q.get('main_type')} ({q.get('file_type')}; {summary})"


def layer_record(manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a layer index means in an output of a hybrid model (ours): ``{}`` for a model whose
    decoder layers are all attention layers; else ``attention_layers`` (the decoder-layer index of
    each scored layer, set by :func:`successor_heads.core.loading.open_model` from
    ``Adapter.attention_layers``) and ``layer_index``, the sentence that says layer ``k`` (``LkHh``,
    the ``layer`` column, the first axis of ``[n_layers, n_heads]``) is decoder layer
    ``attention_layers[k]``."""
    layers = (manifest or {}).get("attention_layers")
    if not layers:
        return {}
    return {"attention_layers": [int(i) for i in layers],
            "layer_index": "hybrid model: only its attention layers are scored; layer k (LkHh, the layer "
                           "column, the first axis of [n_layers, n_heads]) is decoder layer attention_layers[k]"}


def provenance(manifest: Mapping[str, Any] | None = None, *, model: str, family: str, source: str, dtype: str,
               revision: str | None = None, sha256: str | None = None, norms: str = "n/a",
               **extra: Any) -> dict[str, Any]:
    """Provenance attributes for an output: model, source, revision or sha256, quantization,
    dtype, layer-norm option, package versions, plus ``extra`` (ours).

    ``manifest`` is the model folder's ``manifest.json`` as a dict (see
    :mod:`successor_heads.models.fetch`); its hub commit and GGUF sha256 win over the configured
    ``revision`` and ``sha256``; for a hybrid it adds :func:`layer_record`. ``model`` .. ``sha256`` are the ``model`` config section's
    (``ModelConfig.provenance()``); ``norms``: ``scores.norms`` ("n/a" for outputs it does not shape).
    """
    manifest = dict(manifest or {})
    out = {
        "model": model,
        "family": family,
        "source": source,
        "revision": (manifest.get("hf") or {}).get("commit") or revision,
        "sha256": (manifest.get("gguf") or {}).get("sha256") or sha256,
        "quantization": quantization_label(manifest),
        "dtype": dtype,
        "norms": norms,
        # how the stage held the model (successor_heads.core.loading.open_model)
        "memory": manifest.get("memory", "in_memory"),
        "package_versions": package_versions(),
        **layer_record(manifest),
    }
    out.update(extra)
    return out
