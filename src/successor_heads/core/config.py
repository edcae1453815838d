"""Compose and validate the Hydra config tree in ``config/``.

One model's config is resolved once (Hydra compose API), validated against
:mod:`successor_heads.core.schema`, and written to ``results/{model}/config.yaml``; every stage
reads that file, so changing a model's config reruns exactly the stages that depend on it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from successor_heads.core.atomic import atomic_path
from successor_heads.core.schema import RootConfig

#: Sections of the resolved config that each stage depends on (beside ``model``).
STAGE_SECTIONS = {
    "models": ["model"],
    "scores": ["model", "tasks", "scores", "behaviour", "device", "seed"],
    "activations": ["model", "tasks", "features", "device"],
    "features": ["model", "tasks", "features", "scores", "device", "seed"],
    "editing": ["model", "tasks", "features", "scores", "editing", "corpus", "device", "seed"],
    "wild": ["model", "tasks", "scores", "wild", "corpus", "device", "seed"],
}


class ConfigError(ValueError):
    """A config that cannot be composed or fails the schema; the message says what to fix."""


def find_config_dir(start: str | os.PathLike | None = None) -> Path:
    """Return the project's ``config/`` folder.

    Looks at ``$SUCCESSOR_HEADS_CONFIG``, then ``config/`` in ``start`` (default: the
    working directory) and its parents.

    Raises:
        ConfigError: no ``config/config.yaml`` was found.
    """
    env = os.environ.get("SUCCESSOR_HEADS_CONFIG")
    if env:
        p = Path(env).resolve()
        if (p / "config.yaml").is_file():
            return p
        raise ConfigError(f"SUCCESSOR_HEADS_CONFIG={env} has no config.yaml")
    here = Path(start or os.getcwd()).resolve()
    for d in [here, *here.parents]:
        if (d / "config" / "config.yaml").is_file():
            return d / "config"
    raise ConfigError(
        f"no config/config.yaml in {here} or its parents; run from the project root "
        "or set SUCCESSOR_HEADS_CONFIG to the config folder"
    )


def available_models(config_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the models that have a ``config/model/<name>.yaml``."""
    d = Path(config_dir) if config_dir else find_config_dir()
    return sorted(p.stem for p in (d / "model").glob("*.yaml"))


def compose(
    model: str | None = None,
    overrides: Sequence[str] = (),
    config_dir: str | os.PathLike | None = None,
) -> DictConfig:
    """Compose ``config.yaml`` (+ ``model=<model>`` + overrides) and validate it.

    Args:
        model: name of a file in ``config/model/``; None keeps the defaults list's choice.
        overrides: Hydra override strings, e.g. ``["scores.norms=applied"]``.
        config_dir: the config folder (default: :func:`find_config_dir`).

    Returns:
        A read-only, fully resolved DictConfig following :class:`~successor_heads.core.schema.RootConfig`.

    Raises:
        ConfigError: unknown model (the message lists the known ones), unknown key or a
            value of the wrong type (the message names the key).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    cdir = Path(config_dir).resolve() if config_dir else find_config_dir()
    known = available_models(cdir)
    ovr = list(overrides)
    if model is not None:
        if model not in known:
            raise ConfigError(f"unknown model {model!r}; known models: {', '.join(known)}")
        ovr = [o for o in ovr if not o.startswith("model=")] + [f"model={model}"]
    from hydra.core.config_store import ConfigStore

    # The schema is the first entry of config.yaml's defaults list, so overrides of keys that
    # the YAML leaves at their defaults (e.g. wild.batch_size=8) are accepted and typed.
    ConfigStore.instance().store(name="successor_heads_schema", node=RootConfig)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(cdir), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=ovr)
    except (HydraException, OmegaConfBaseException) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()][:2]
        if e.__cause__ is not None:
            lines.append(str(e.__cause__).splitlines()[0])
        msg = " ".join(dict.fromkeys(lines))
        if "Could not find 'model/" in msg:
            msg += f" (known models: {', '.join(known)})"
        raise ConfigError(f"cannot compose config with overrides {ovr}: {msg}") from e
    finally:
        GlobalHydra.instance().clear()
    return validate(cfg)


def validate(cfg: DictConfig | dict) -> DictConfig:
    """Merge ``cfg`` into the schema; reject unknown keys and wrong types.

    Raises:
        ConfigError: naming the offending key and what to do.
    """
    schema = OmegaConf.structured(RootConfig)
    try:
        merged = OmegaConf.merge(schema, cfg)
        OmegaConf.resolve(merged)
        missing = sorted(OmegaConf.missing_keys(merged))
    except (ConfigKeyError, ValidationError) as e:
        key = getattr(e, "full_key", None) or ""
        raise ConfigError(
            f"bad config key {key!r}: {str(e).splitlines()[0]}. "
            "Check the spelling against successor_heads/schema.py"
        ) from e
    if missing:
        raise ConfigError(f"config is missing required keys: {', '.join(missing)}")
    _check_values(merged)
    OmegaConf.set_readonly(merged, True)
    return merged


def _check_values(cfg: DictConfig) -> None:
    kind = cfg.model.source.kind
    if kind not in ("hf", "pypi_wheel", "local"):
        raise ConfigError(f"model.source.kind={kind!r}: must be one of hf, pypi_wheel, local")
    for m in cfg.scores.modes:
        if m not in ("mlp0", "resid"):
            raise ConfigError(f"scores.modes contains {m!r}: must be mlp0 or resid")
    if cfg.scores.default_mode not in cfg.scores.modes:
        raise ConfigError(f"scores.default_mode={cfg.scores.default_mode!r} is not in scores.modes")
    if cfg.scores.norms not in ("raw", "applied"):
        raise ConfigError(f"scores.norms={cfg.scores.norms!r}: must be raw or applied")
    if cfg.wild.final_norm not in ("frozen", "recomputed"):
        raise ConfigError(f"wild.final_norm={cfg.wild.final_norm!r}: must be one of frozen, recomputed")
    if cfg.wild.compute_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"wild.compute_dtype={cfg.wild.compute_dtype!r}: must be one of float32, bfloat16")
    if cfg.model.dtype not in ("float32", "float16", "bfloat16"):
        raise ConfigError(f"model.dtype={cfg.model.dtype!r}: must be float32, float16 or bfloat16")
    if cfg.behaviour.top_k < 0:
        raise ConfigError(f"behaviour.top_k={cfg.behaviour.top_k!r} (model.behaviour_top_k in the model file): "
                          "must be 0 (every head) or a positive number of heads per mode")


def stage_view(cfg: DictConfig, stage: str) -> DictConfig:
    """The sections of ``cfg`` that ``stage`` depends on (see :data:`STAGE_SECTIONS`)."""
    keys = STAGE_SECTIONS[stage]
    return OmegaConf.create({k: OmegaConf.to_container(cfg, resolve=True)[k] for k in keys})


def write_if_changed(cfg: DictConfig, path: str | os.PathLike) -> bool:
    """Write ``cfg`` as YAML to ``path`` atomically unless the file already holds the same text.

    Keeping the old file (and its mtime) when nothing changed is what lets Snakemake rerun
    only the stages whose config changed. Returns True when the file was (re)written.
    """
    path = Path(path)
    text = OmegaConf.to_yaml(cfg, resolve=True)
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return True


def resolve_for_workflow(
    models: Iterable[str], overrides: Sequence[str], results_dir: str | os.PathLike, config_dir=None
) -> dict[str, DictConfig]:
    """Resolve each model's config and write ``results/{model}/config.yaml`` plus one
    ``results/{model}/config/{stage}.yaml`` per stage (only when changed).

    Returns: ``{model_name: DictConfig}``.
    """
    out = {}
    for m in models:
        cfg = compose(m, overrides, config_dir)
        base = Path(results_dir) / m
        write_if_changed(cfg, base / "config.yaml")
        for stage in STAGE_SECTIONS:
            write_if_changed(stage_view(cfg, stage), base / "config" / f"{stage}.yaml")
        out[m] = cfg
    return out


def load_resolved(path: str | os.PathLike) -> DictConfig:
    """Load a resolved config (full or stage view) written by :func:`resolve_for_workflow`."""
    return OmegaConf.load(path)
