"""The ``model`` section of a model without a file in ``config/model/``, derived from its weights
(docs/DESIGN.md, "Model specs"): the family from ``config.json``'s ``model_type`` (a GGUF's
``general.architecture``), the parameter count, and the dtype and resources scaled from it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from successor_heads.core.gguf_header import read_gguf_header
from successor_heads.core.hub import hub_reachable
from successor_heads.core.param_count import count_params
from successor_heads.core.config import ConfigError

#: Resource tiers by parameter count, read off the hand-written files in ``config/model/``:
#: ``(up to n_params, mem_mb, runtime minutes, cpus, gpus)``; above the last tier memory
#: grows by :data:`_MB_PER_MILLION` (Pythia-12B: 160 GB).
_TIERS = ((60e6, 2000, 20, 2, 0), (250e6, 4000, 30, 2, 0), (500e6, 8000, 60, 2, 0), (950e6, 12000, 90, 2, 0),
          (2e9, 24000, 120, 4, 1), (4e9, 48000, 120, 4, 1), (8e9, 96000, 180, 4, 1))
_MB_PER_MILLION = 14
#: From this size on a model is loaded in bfloat16 and asks for a GPU, as the model files do.
BF16_FROM = 950e6
#: GGUF ``general.architecture`` names that differ from transformers' ``model_type``.
_GGUF_ARCH = {"gemma3": "gemma3_text", "gptneox": "gpt_neox", "gptj": "gptj", "command-r": "cohere",
              "qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe"}


def resources_for(n_params: int) -> tuple[str, dict[str, int]]:
    """``(dtype, {"mem_mb", "runtime", "cpus", "gpu"})`` of a model of ``n_params`` parameters
    (an estimate is fine): float32 and no GPU below :data:`BF16_FROM`, bfloat16 and one GPU above."""
    for top, mem, runtime, cpus, gpu in _TIERS:
        if n_params <= top:
            break
    else:
        mem, runtime, cpus, gpu = math.ceil(n_params / 1e6 * _MB_PER_MILLION / 1000) * 1000, 240, 4, 1
    dtype = "bfloat16" if n_params >= BF16_FROM else "float32"
    return dtype, {"mem_mb": mem, "runtime": runtime, "cpus": cpus, "gpu": gpu}


def _family(model_type: str | None, where: str, config: dict | None = None) -> str:
    """The family name of ``model_type`` (``config``: the parsed ``config.json``, for the
    family's own checks); an unsupported one raises :class:`ConfigError` listing the supported."""
    from types import SimpleNamespace

    from successor_heads.core.adapters import MODEL_TYPES, family_of  # torch: imported only when needed

    try:
        return family_of(model_type, SimpleNamespace(**config) if config else None).name
    except ValueError as e:
        if model_type in MODEL_TYPES or "mixture-of-experts" in str(e):  # a refused checkpoint or an MoE
            raise ConfigError(f"{where}: {e}") from None
        raise ConfigError(
            f"{where}: model_type={model_type!r} is not supported; supported model types: "
            f"{', '.join(sorted(MODEL_TYPES))} (mixture-of-experts models are out of scope)"
            + (f"; {e}" if "attention" in str(e) else "")  # no attention heads, or a hybrid: say so
        ) from None


def hub_config_json(repo_id: str, revision: str | None) -> dict:
    """``config.json`` of a hub repo (``org/name`` at ``revision``, None: the default branch): from
    the local HF cache (so a job re-parsing the Snakefile offline finds it), else downloaded after
    :func:`successor_heads.core.hub.hub_reachable` (an offline machine fails within seconds).

    Raises:
        ConfigError: the hub unreachable and the file not cached (saying how to work offline), or
            the download failed (a gated repo, a bad id or revision).
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    if isinstance(cached := try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
        return json.loads(Path(cached).read_text())
    at = f"{repo_id}@{revision or 'main'}"
    if not hub_reachable():
        raise ConfigError(
            f"cannot reach the Hugging Face hub to read config.json of {at} (no network, or "
            "HF_HUB_OFFLINE set) and it is not in the local HF cache. Offline, use a local "
            "transformers folder or .gguf file (model=/path/to/folder), or a model file whose source "
            "works offline (e.g. model=smollm2-135m)"
        )
    try:
        return json.loads(Path(hf_hub_download(repo_id, "config.json", revision=revision)).read_text())
    except Exception as e:  # noqa: BLE001
        raise ConfigError(
            f"could not read config.json of {at} from the hub ({type(e).__name__}: {e}). Gated "
            "repos need `huggingface-cli login` and accepted terms; check the id and revision"
        ) from e


def derive_model(spec: Any) -> dict[str, Any]:
    """The ``model`` section (a mapping of :class:`~successor_heads.models.config.ModelConfig`
    keys: name, family, n_params, dtype, source, resources) of a
    :class:`~successor_heads.core.model_spec.ModelSpec` of kind ``hf``, ``folder`` or ``gguf``.

    Raises:
        ConfigError: an unsupported ``model_type`` (listing the supported ones), a folder without
            ``config.json``, an unreadable GGUF, or (hub ids) the hub unreachable with nothing cached.
    """
    if spec.kind == "gguf":
        try:
            header = read_gguf_header(spec.path)
        except (ValueError, OSError) as e:
            raise ConfigError(f"{spec.path}: GGUF header unreadable ({e})") from e
        n_params = sum(n for _, _, n in header["tensors"])
        arch = str(header["metadata"].get("general.architecture", ""))
        family = _family(_GGUF_ARCH.get(arch, arch.replace("-", "_")), spec.path)
        source = {"kind": "local", "path": spec.path}
    else:
        if spec.kind == "hf":
            config, where = hub_config_json(spec.repo_id, spec.revision), f"{spec.repo_id}@{spec.revision or 'main'}"
            source = {"kind": "hf", "repo_id": spec.repo_id, "revision": spec.revision}
        else:
            cfile = Path(spec.path) / "config.json"
            if not cfile.is_file():
                raise ConfigError(f"{spec.path} has no config.json: a model folder is a transformers "
                                  "save_pretrained folder (a folder of checkpoint folders is a sweep: "
                                  "put it in a zoo, or name one checkpoint)")
            config, where = json.loads(cfile.read_text()), spec.path
            source = {"kind": "local", "path": spec.path}
        family = _family(config.get("model_type"), where, config)
        try:
            n_params = count_params(config)[0]
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    dtype, res = resources_for(n_params)
    return {"name": spec.slug, "family": family, "n_params": n_params, "dtype": dtype, "source": source,
            "resources": res}
