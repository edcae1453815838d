"""Weight files a model folder references instead of holding (ours; docs/DESIGN.md, "Large models").

The fetch hard-links a local folder's (or the HF cache's) weight files into
``results/<model>/model`` so a model is not stored twice. Where the two are on different
filesystems a hard link is impossible; the folder then holds a symbolic link to the source file,
and the manifest's ``weight_sources`` records, per file, the source's absolute ``path``, its
``sha256``, ``size_bytes`` and ``mtime_ns`` (:func:`reference_record`). Every reader of the
weights (:func:`successor_heads.core.loading.read_manifest`, so loading and streaming alike)
calls :func:`check_weight_sources` first: a source that vanished or changed since the fetch is
refused with one line, instead of a raw safetensors error or, worse, other weights read silently.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: bytes read per step while hashing
_CHUNK = 8 << 20
#: files already hashed in this process, by (path, size, mtime_ns): a run that opens a model twice
#: (the auto memory choice, then the load) hashes a touched file once
_VERIFIED: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in 8 MB steps (constant memory).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def reference_record(src: str | os.PathLike) -> dict:
    """What the manifest records about a referenced weight file: ``path`` (absolute, symlinks
    resolved), ``sha256``, ``size_bytes``, ``mtime_ns``.

    Raises:
        OSError: the file cannot be read.
    """
    src = Path(src).resolve()
    st = src.stat()
    return {"path": str(src), "sha256": sha256_file(src), "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def check_weight_sources(model_dir: str | os.PathLike, manifest: dict) -> None:
    """Check that every weight file ``model_dir`` references (``manifest["weight_sources"]``) is the
    file the fetch recorded.

    The file's size and modification time are compared with the record; only when either
    differs is its sha256 computed and compared (a file touched but unchanged passes). A folder
    without references (weights hard-linked, copied or written by the fetch) passes at no cost.

    Args:
        model_dir: the model folder (``results/<model>/model``).
        manifest: its parsed ``manifest.json``.

    Raises:
        FileNotFoundError: a referenced source is gone, or the folder's link to it was removed or
            points elsewhere (one line naming both and saying to fetch again).
        ValueError: a source's sha256 differs from the record (one line: the file changed since
            the fetch; fetch again).
    """
    model_dir = Path(model_dir)
    for name, ref in (manifest.get("weight_sources") or {}).items():
        src, link = Path(ref["path"]), model_dir / name
        if not src.is_file():
            raise FileNotFoundError(f"{link}: its weights are the file {src}, which no longer exists; "
                                    "restore it or fetch the model again")
        if link.resolve() != src.resolve():
            raise FileNotFoundError(f"{link}: should link to {src} (recorded by the fetch) but "
                                    f"{'is missing' if not link.exists() else 'points elsewhere'}; fetch the model again")
        st = src.stat()
        if (st.st_size, st.st_mtime_ns) == (ref["size_bytes"], ref["mtime_ns"]):
            continue
        key = (str(src), st.st_size, st.st_mtime_ns)
        if key not in _VERIFIED:
            _VERIFIED[key] = sha256_file(src)
        if _VERIFIED[key] != ref["sha256"]:
            raise ValueError(f"{src} (the weights of {link}) changed since the fetch: sha256 {_VERIFIED[key][:16]}... "
                             f"!= {ref['sha256'][:16]}... recorded; fetch the model again")
