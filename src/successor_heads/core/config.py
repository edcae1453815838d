"""Compose and validate the Hydra config tree in ``config/``; write and load the config views.

One model's config is composed once (Hydra compose API), merged into the schema
(:mod:`successor_heads.core.schema`: types, closed choice sets, bounds) and checked by
:func:`check_values`, all at compose time (the Snakefile's parse), so a bad value fails before any
job starts. The workflow writes ``results/{model}/config.yaml`` for the record and one *view* per
stage, ``results/{model}/config/{stage}.yaml``, holding exactly the keys that stage reads
(:data:`VIEW_KEYS`); a zoo-level rule's view lives in ``results/{zoo_name}/config/{rule}.yaml``
(:data:`ZOO_VIEW_KEYS`). A view is an input of its rule and is rewritten only when its content
changes, so changing a key reruns exactly the jobs that read it (and those downstream of their
outputs). Jobs load their view typed with :func:`load_resolved`. A model without a file in
``config/model/`` (a hub id, a folder, a ``.gguf`` file, a sweep's checkpoint) gets its ``model``
section derived from its weights (docs/DESIGN.md, "Model specs"; :func:`resolve_zoo`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from successor_heads.core.atomic import atomic_path
from successor_heads.core.model_derive import derive_model
from successor_heads.core.model_spec import ModelSpec, expand_zoo, parse_model, sweeps
# ConfigError, check_values and check_section are defined beside the rules they apply and
# imported from here as well
from successor_heads.core.schema import ConfigError, RootConfig, check_section, check_values, field_types  # noqa: F401

#: What every provenance record reads (successor_heads.core.h5io.provenance), and model loading.
_PROVENANCE = ("model.name", "model.family", "model.dtype", "model.source.kind", "model.source.revision",
               "model.source.sha256", "device")

#: Per stage, the keys of the resolved config its job reads (a section name: every key in it).
#: ``scores.norms`` in a view also names the outputs' ``norms`` provenance attribute; the
#: ``activations`` view leaves ``scores`` out, so its cache records ``norms = n/a``.
VIEW_KEYS: dict[str, tuple[str, ...]] = {
    # the manifest records name, family, dtype, nominal size and the whole source
    "models": ("model.name", "model.family", "model.dtype", "model.n_params", "model.source"),
    "activations": (*_PROVENANCE, "tasks", "features.numbers_max", "features.norms"),
    # scores.threshold is the zoo table's (the stage counts heads above the paper's 0.5)
    "scores": (*_PROVENANCE, "tasks", "scores.modes", "scores.default_mode", "scores.norms",
               "scores.value_bias", "scores.batch_heads", "behaviour"),
    "features": (*_PROVENANCE, "seed", "tasks", "scores.norms", "scores.value_bias", "features"),
    # features.norms / residue_of: used when directions.h5 lacks those attributes
    "editing": (*_PROVENANCE, "tasks", "corpus", "scores.norms", "scores.value_bias", "features.norms",
                "features.residue_of", "editing"),
    "wild": (*_PROVENANCE, "tasks", "corpus", "scores.norms", "wild"),
    "cycles": (*_PROVENANCE, "tasks", "scores.modes", "scores.norms", "cycles"),
}
#: Per zoo-level rule, the keys it reads (from the zoo's config, not a model's): the zoo table
#: counts each model's heads above ``scores.threshold`` from its ``successor_scores.h5``.
ZOO_VIEW_KEYS: dict[str, tuple[str, ...]] = {"zoo_table": ("scores.threshold",)}
#: Folder of the views, inside ``results/{model}`` or ``results/{zoo_name}``.
VIEW_DIR = "config"


def find_config_dir(start: str | os.PathLike | None = None) -> Path:
    """Return the project's ``config/`` folder.

    Args:
        start: where to look first (default: the working directory); then its parents.
            ``$SUCCESSOR_HEADS_CONFIG``, when set, wins.

    Returns:
        The folder holding ``config.yaml``.

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
    """Names of the models that have a ``config/model/<name>.yaml``.

    Args:
        config_dir: the config folder (default: :func:`find_config_dir`).

    Returns:
        The names, sorted.
    """
    d = Path(config_dir) if config_dir else find_config_dir()
    return sorted(p.stem for p in (d / "model").glob("*.yaml"))


def compose(
    model: str | ModelSpec | None = None,
    overrides: Sequence[str] = (),
    config_dir: str | os.PathLike | None = None,
) -> DictConfig:
    """Compose ``config.yaml`` (+ the model + overrides) and validate it.

    A model without a file in ``config/model/`` (a hub id, a folder, a ``.gguf`` file) gets the
    ``model`` section derived from its weights (:func:`successor_heads.core.model_derive.derive_model`),
    with the ``model.*`` overrides applied on top (docs/DESIGN.md, "Model specs").

    Args:
        model: a model spec (:func:`successor_heads.core.model_spec.parse_model` reads a string);
            None: the ``model=`` override, else the defaults list's choice.
        overrides: Hydra override strings, e.g. ``["scores.norms=applied"]``.
        config_dir: the config folder (default: :func:`find_config_dir`).

    Returns:
        A read-only, fully resolved DictConfig following :class:`~successor_heads.core.schema.RootConfig`.

    Raises:
        ConfigError: unknown model (the message lists the known ones and the syntax), an
            unsupported ``model_type`` (listing the supported ones), a hub id offline and not
            cached, unknown key, a value of the wrong type or outside its rule (the message
            names the key, value and what is allowed).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    cdir = Path(config_dir).resolve() if config_dir else find_config_dir()
    known = available_models(cdir)
    ovr = [o for o in overrides if not o.startswith("model=")]
    if model is None and len(ovr) < len(overrides):
        model = [o for o in overrides if o.startswith("model=")][-1][len("model="):]
    spec = model if isinstance(model, ModelSpec) or model is None else parse_model(model, known)
    if spec is not None and spec.kind == "name":
        ovr.append(f"model={spec.name}")
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
    if spec is not None and (spec.kind != "name" or spec.slug != spec.name):
        cfg = _with_model(cfg, spec, [o for o in ovr if o.startswith("model.")])
    return validate(cfg)


def _with_model(cfg: DictConfig, spec: ModelSpec, model_overrides: list[str]) -> dict:
    """``cfg`` with the model section of ``spec``: derived from the weights, or (a model file at
    another revision) the file's with that revision; then ``model_overrides`` on top."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    if spec.kind == "name":
        if raw["model"]["source"]["kind"] != "hf":
            raise ConfigError(f"model {spec.value!r}: a revision needs a model file with source kind hf, "
                              f"{spec.name} has {raw['model']['source']['kind']}")
        raw["model"].update(name=spec.slug, revisions=[])
        raw["model"]["source"]["revision"] = spec.revision
        return raw
    derived = OmegaConf.create(derive_model(spec))
    if model_overrides:
        derived = OmegaConf.merge(derived, OmegaConf.from_dotlist([o[len("model."):] for o in model_overrides]))
    raw["model"] = OmegaConf.to_container(derived)
    return raw


def validate(cfg: DictConfig | dict) -> DictConfig:
    """Merge ``cfg`` into the schema, fill the defaults and apply every value rule.

    Args:
        cfg: a config (DictConfig or nested dict) following :class:`~successor_heads.core.schema.RootConfig`.

    Returns:
        A read-only DictConfig typed as :class:`~successor_heads.core.schema.RootConfig`.

    Raises:
        ConfigError: unknown key or wrong type (naming the key), missing required keys, or
            a value outside its rule (:func:`~successor_heads.core.schema.check_values`).
    """
    merged = _merge(cfg)
    OmegaConf.resolve(merged)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"config is missing required keys: {', '.join(missing)}")
    check_values(merged)
    OmegaConf.set_readonly(merged, True)
    return merged


def _merge(cfg: Any, where: str = "") -> DictConfig:
    try:
        return OmegaConf.merge(OmegaConf.structured(RootConfig), cfg)
    except (ConfigKeyError, ValidationError) as e:
        key = getattr(e, "full_key", None) or ""
        raise ConfigError(
            f"{where}bad config key {key!r}: {str(e).splitlines()[0]}. "
            "Check the spelling and type against src/successor_heads/core/schema.py"
        ) from e


def stage_view(cfg: DictConfig, view: str) -> DictConfig:
    """The keys of ``cfg`` that a job reads, as a new DictConfig with the same nesting.

    Args:
        cfg: a full resolved config.
        view: a stage of :data:`VIEW_KEYS` or a zoo-level rule of :data:`ZOO_VIEW_KEYS`.

    Returns:
        A DictConfig holding exactly the view's keys (a section name: the whole section).

    Raises:
        KeyError: an unknown view.
    """
    keys = VIEW_KEYS[view] if view in VIEW_KEYS else ZOO_VIEW_KEYS[view]
    full = OmegaConf.to_container(cfg, resolve=True)
    out: dict[str, Any] = {}
    for key in keys:
        *parents, leaf = key.split(".")
        src, dst = full, out
        for p in parents:
            src, dst = src[p], dst.setdefault(p, {})
        dst[leaf] = src[leaf]
    return OmegaConf.create(out)


def view_path(results_dir: str | os.PathLike, view: str, model: str = "{model}", zoo_name: str = "zoo") -> str:
    """Where a view is written (the ``config`` input of its rule).

    Args:
        results_dir: the ``results/`` folder.
        view: a stage of :data:`VIEW_KEYS` or a zoo-level rule of :data:`ZOO_VIEW_KEYS`.
        model: the model (default: the Snakemake wildcard ``{model}``).
        zoo_name: the zoo's folder under ``results/``, for a zoo-level rule.

    Returns:
        ``results/{model}/config/{stage}.yaml``, or ``results/{zoo_name}/config/{rule}.yaml``.

    Raises:
        KeyError: an unknown view.
    """
    if view in VIEW_KEYS:
        return f"{results_dir}/{model}/{VIEW_DIR}/{view}.yaml"
    if view in ZOO_VIEW_KEYS:
        return f"{results_dir}/{zoo_name}/{VIEW_DIR}/{view}.yaml"
    raise KeyError(f"unknown config view {view!r}: one of {sorted(VIEW_KEYS) + sorted(ZOO_VIEW_KEYS)}")


def write_if_changed(cfg: DictConfig, path: str | os.PathLike) -> bool:
    """Write ``cfg`` as YAML to ``path`` atomically unless the file already holds the same text.

    Keeping the old file (and its mtime) when nothing changed is what lets Snakemake rerun
    only the jobs whose keys changed.

    Args:
        cfg: the config or view to write (interpolations resolved).
        path: the YAML file; its folder is created.

    Returns:
        True when the file was (re)written.

    Raises:
        OSError: the file cannot be written (nothing half-written is left).
    """
    path = Path(path)
    text = OmegaConf.to_yaml(cfg, resolve=True)
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return True


@dataclasses.dataclass
class Zoo:
    """A resolved zoo: each model's validated config by slug (zoo order) and the checkpoints of
    each sweep (:func:`successor_heads.core.model_spec.sweeps`: model, revision, step)."""

    models: dict[str, DictConfig]
    sweeps: dict[str, list[dict]]


def resolve_zoo(
    entries: Iterable[str], overrides: Sequence[str], results_dir: str | os.PathLike, config_dir=None,
    zoo_name: str | None = None, root: DictConfig | None = None,
) -> Zoo:
    """Expand the zoo's entries into models (docs/DESIGN.md, "Model specs"), compose and validate
    each one's config, and write ``results/{model}/config.yaml``, its views (:data:`VIEW_KEYS`)
    and the zoo-level views (:data:`ZOO_VIEW_KEYS`); each file only when its content changed.

    A model file whose ``model.revisions`` is not empty becomes one model per revision,
    ``<name>@<revision>``, a sweep named after the file.

    Args:
        entries: the zoo list: model file names, hub ids, folders, ``.gguf`` files, sweep folders.
        overrides: Hydra overrides applied to every model.
        results_dir: the ``results/`` folder.
        config_dir: the config folder (default: :func:`find_config_dir`).
        zoo_name: the zoo's folder under ``results/``; None writes no zoo-level view.
        root: the config the zoo-level views come from (default: composed without a model choice).

    Returns:
        The :class:`Zoo`.

    Raises:
        ConfigError: a bad entry or any model's config is bad (:func:`compose`); nothing is
            written then.
    """
    cdir = Path(config_dir).resolve() if config_dir else find_config_dir()
    known = available_models(cdir)
    pairs = []
    for spec in expand_zoo(entries, known):
        cfg = compose(spec, overrides, cdir)
        revs = list(cfg.model.revisions) if spec.kind == "name" and spec.revision is None else []
        if not revs:
            pairs.append((spec, cfg))
        for r in revs:  # a file's revisions form a sweep named after it
            member = dataclasses.replace(parse_model(f"{spec.name}@{r}", known), sweep=spec.name, label=r)
            pairs.append((member, compose(member, overrides, cdir)))
    cfgs = {s.slug: c for s, c in pairs}
    if zoo_name is not None and root is None:
        root = compose(None, overrides, cdir)
    for m, cfg in cfgs.items():
        write_if_changed(cfg, Path(results_dir) / m / "config.yaml")
        for view in VIEW_KEYS:
            write_if_changed(stage_view(cfg, view), view_path(results_dir, view, m))
    if zoo_name is not None:
        for view in ZOO_VIEW_KEYS:
            write_if_changed(stage_view(root, view), view_path(results_dir, view, zoo_name=zoo_name))
    return Zoo(cfgs, sweeps(s for s, _ in pairs))


def resolve_for_workflow(
    models: Iterable[str], overrides: Sequence[str], results_dir: str | os.PathLike, config_dir=None,
    zoo_name: str | None = None, root: DictConfig | None = None,
) -> dict[str, DictConfig]:
    """:func:`resolve_zoo`, returning only ``{slug: DictConfig}`` (each validated).

    Raises:
        ConfigError: as :func:`resolve_zoo`.
    """
    return resolve_zoo(models, overrides, results_dir, config_dir, zoo_name, root).models


def load_resolved(path: str | os.PathLike) -> DictConfig:
    """Load a config written by :func:`resolve_for_workflow` (full or a view), typed.

    The file is merged into the schema (types checked, numbers as declared), the value rules
    are applied, and the keys the file does not hold are removed again, so a job reading a
    key outside its view fails at once instead of getting a default.

    Args:
        path: ``results/{model}/config.yaml`` or a view.

    Returns:
        A read-only DictConfig typed as :class:`~successor_heads.core.schema.RootConfig`,
        holding only the file's keys.

    Raises:
        ConfigError: an unknown key, a wrong type or a value outside its rule.
    """
    raw = OmegaConf.load(path)
    merged = _merge(raw, f"{path}: ")
    _keep_only(merged, raw, RootConfig)
    check_values(merged)
    OmegaConf.set_readonly(merged, True)
    return merged


def _keep_only(node: DictConfig, raw: Any, cls: type) -> None:
    """Remove from ``node`` (typed as dataclass ``cls``) every key that ``raw`` lacks."""
    flag = node._get_node_flag("struct")
    OmegaConf.set_struct(node, False)  # a typed node allows deletion only with its own flag off
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            del node[f.name]
        elif dataclasses.is_dataclass(field_types(cls)[f.name]) and raw[f.name] is not None:
            _keep_only(node[f.name], raw[f.name], field_types(cls)[f.name])
    OmegaConf.set_struct(node, flag)
