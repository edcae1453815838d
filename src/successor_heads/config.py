"""A run's config: Hydra composes ``config/`` (``config.yaml``, the model file, overrides) on top
of the typed, frozen sections beside the stages, checked once here, before any job; each job gets
the keys it reads as Snakemake ``params`` (:data:`PARAMS`). Nothing is written while composing.
docs/DESIGN.md, "Configuration" (adding a stage's section: one field of :class:`RootConfig`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import MISSING, DictConfig, OmegaConf

from successor_heads.core.config import ConfigError, available_models, find_config_dir  # noqa: F401
from successor_heads.core.corpus import CorpusConfig
from successor_heads.core.model_derive import derive_model
from successor_heads.core.model_spec import ModelSpec, expand_zoo, parse_model, sweeps
from successor_heads.core.tasks import TasksConfig
from successor_heads.cycles.config import CyclesConfig
from successor_heads.editing.config import EditingConfig
from successor_heads.features.config import FeaturesConfig
from successor_heads.models.config import ModelConfig
from successor_heads.scores.config import BehaviourConfig, ScoresConfig
from successor_heads.wild.config import WildConfig


@dataclass(frozen=True)
class RootConfig:
    """A run's whole config: one field per section (a new stage: one line here)."""

    model: ModelConfig = MISSING
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    zoo: list[str] = field(default_factory=list)  # the models `rule all` runs
    results_dir: str = "results"
    device: str = "auto"  # auto (cuda when present, else cpu) | cpu | cuda | cuda:N
    seed: int = 0
    tasks: TasksConfig = field(default_factory=TasksConfig)
    scores: ScoresConfig = field(default_factory=ScoresConfig)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    editing: EditingConfig = field(default_factory=EditingConfig)
    wild: WildConfig = field(default_factory=WildConfig)
    cycles: CyclesConfig = field(default_factory=CyclesConfig)
    extra: Any = None  # free-form notes carried into outputs

    def __post_init__(self):
        modes = self.scores.modes
        for key, v in (("scores.default_mode", self.scores.default_mode), ("features.head_mode", self.features.head_mode),
                       ("editing.head_mode", self.editing.head_mode), ("wild.score_mode", self.wild.score_mode)):
            if v is not None and v not in modes:
                raise ConfigError(f"{key}={v!r} is not in scores.modes={list(modes)}: the scores stage computes "
                                  "only those modes; add it there or choose one of them")


#: Per job (Snakemake rule), the keys of the config it reads (a section name: all of it), passed
#: as its ``params``: a change of one reruns the job and those downstream of its outputs.
#: ``model.resources`` schedules jobs and is in none; the zoo table alone reads ``scores.threshold``.
_PROVENANCE = ("model.name", "model.family", "model.dtype", "model.n_params", "model.source", "device")
PARAMS: dict[str, tuple[str, ...]] = {
    "fetch_model": ("model.name", "model.family", "model.dtype", "model.n_params", "model.source"),
    "cache_activations": (*_PROVENANCE, "model.memory", "tasks", "features.numbers_max", "features.norms"),
    "successor_scores": (*_PROVENANCE, "model.memory", "tasks", "scores.modes", "scores.default_mode", "scores.norms",
                         "scores.value_bias", "scores.batch_heads", "behaviour"),
    "features": (*_PROVENANCE, "model.memory", "seed", "tasks", "scores.modes", "scores.norms", "scores.value_bias", "features"),
    "editing": (*_PROVENANCE, "model.memory", "tasks", "corpus", "scores.modes", "scores.norms", "scores.value_bias",
                "features.norms", "features.residue_of", "editing"),
    "wild": (*_PROVENANCE, "model.memory", "tasks", "corpus", "scores.modes", "scores.norms", "wild"),
    "cycles": (*_PROVENANCE, "model.memory", "tasks", "scores.modes", "scores.norms", "cycles"),
    "zoo_table": ("scores.threshold",),
}


def schema(cls: type | None = None) -> dict[str, Any]:
    """Every key's default as plain values (a required key: ``"???"``; a required section: its
    keys'), the first entry of config.yaml's defaults list, so Hydra accepts an override of a key
    the YAML leaves out (``wild.batch_size=8``) and rejects a misspelt one."""
    cls = cls or RootConfig
    hints = typing.get_type_hints(cls)
    return {f.name: as_dict(f.default_factory()) if f.default_factory is not dataclasses.MISSING
            else schema(hints[f.name]) if f.default == MISSING and dataclasses.is_dataclass(hints[f.name])
            else f.default for f in dataclasses.fields(cls)}


_SCALARS = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}


def _typed(tp: Any, value: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (strictly: no bool for a number, no string
    for a bool); a section is built with :func:`_make`."""
    if isinstance(value, str) and value == MISSING:
        raise ConfigError(f"config is missing the required key {key}")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _make(tp, value, f"{key}.")
    if origin is typing.Union:  # Optional[X]
        return None if value is None else _typed(args[0], value, key)
    if origin is list and isinstance(value, list):
        return [_typed(args[0], v, key) for v in value]
    if origin is dict and isinstance(value, dict):
        return {k: _typed(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is Any or (isinstance(value, _SCALARS.get(tp, ())) and (tp is bool or not isinstance(value, bool))):
        return float(value) if tp is float else value
    raise ConfigError(f"{key}={value!r}: must be " + (f"a mapping of the keys of {tp.__name__}"
                      if dataclasses.is_dataclass(tp) else f"of type {getattr(tp, '__name__', None) or tp}"))


def _make(cls: type, data: dict, prefix: str = "") -> Any:
    """The frozen dataclass ``cls`` of ``data`` (keys left out keep their defaults): an unknown key
    or a wrong type fails naming the key, every one of the section at once; then its
    ``__post_init__`` checks the values."""
    names = [f.name for f in dataclasses.fields(cls)]
    if unknown := [k for k in data if k not in names]:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; the keys of {prefix.rstrip('.') or 'the root'} "
                          f"are {', '.join(names)}")
    hints, values, errors = typing.get_type_hints(cls), {}, []
    for k, v in data.items():
        try:
            values[k] = _typed(hints[k], v, prefix + k)
        except ConfigError as e:
            errors.append(str(e))
    if errors:
        raise ConfigError("; ".join(errors))
    return cls(**values)


def build(cfg: Any) -> RootConfig:
    """The :class:`RootConfig` of a composed ``cfg`` (DictConfig or nested dict, e.g. a job's params:
    :func:`job_params`; keys left out keep their defaults). Raises: ConfigError naming the key (an
    unknown key, a wrong type, a bad value; from a job's params only after a hand edit)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        data = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad config: {str(e).splitlines()[0]}") from e
    return _make(RootConfig, data)


def compose(model: str | ModelSpec | None = None, overrides: Sequence[str] = (),
            config_dir: str | os.PathLike | None = None) -> RootConfig:
    """Compose ``config.yaml``, the model and the Hydra ``overrides`` (e.g. ``["scores.norms=applied"]``)
    into a checked :class:`RootConfig`.

    Args:
        model: a spec, or a string for :func:`~successor_heads.core.model_spec.parse_model`;
            None: the ``model=`` override, else the defaults list's choice.
        config_dir: the config folder (default: :func:`find_config_dir`).

    Raises:
        ConfigError: an unknown model (listing the known ones and the syntax), an unsupported
            ``model_type``, a hub id offline and not cached, an unknown key (listing its section's
            keys), a wrong type or a bad value (naming the key, the value and what is allowed).
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
    ConfigStore.instance().store(name="successor_heads_schema", node=schema())
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(cdir), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=ovr)
    except (HydraException, OmegaConfBaseException) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()][:2]
        if e.__cause__ is not None:
            lines.append(str(e.__cause__).splitlines()[0])
        msg = " ".join(dict.fromkeys(lines))
        if m := re.search(r"Could not override '([\w.]+)\.(\w+)'", msg):  # name the section's keys
            section = functools.reduce(lambda d, k: d.get(k, {}), m[1].split("."), schema())
            msg += f"; the keys of {m[1]} are {', '.join(section)}" if isinstance(section, dict) else ""
        if "Could not find 'model/" in msg:
            msg += f" (known models: {', '.join(known)})"
        raise ConfigError(f"cannot compose config with overrides {ovr}: {msg}") from e
    finally:
        GlobalHydra.instance().clear()
    if spec is not None and (spec.kind != "name" or spec.slug != spec.name):
        cfg = _with_model(cfg, spec, [o for o in ovr if o.startswith("model.")])
    return build(cfg)


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
    derived = OmegaConf.merge(schema(ModelConfig), derive_model(spec),
                              OmegaConf.from_dotlist([o[len("model."):] for o in model_overrides]))
    raw["model"] = OmegaConf.to_container(derived)
    return raw


def as_dict(cfg: Any) -> Any:
    """A typed config (or any part of it) as plain dicts and lists (for YAML, JSON or params)."""
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg


def job_params(cfg: RootConfig, rule: str) -> dict[str, Any]:
    """The keys of ``cfg`` that the job of ``rule`` reads (:data:`PARAMS`) as Snakemake params:
    ``{section: value}``, a partial section as a nested dict. Raises: KeyError for an unknown rule."""
    full, out = as_dict(cfg), {}
    for key in PARAMS[rule]:
        *parents, leaf = key.split(".")
        src, dst = full, out
        for p in parents:
            src, dst = src[p], dst.setdefault(p, {})
        dst[leaf] = src[leaf]
    return out


@dataclasses.dataclass
class Zoo:
    """A resolved zoo: each model's config by slug (zoo order), each sweep's checkpoints
    (:func:`~successor_heads.core.model_spec.sweeps`), its folder under ``results/`` (:func:`zoo_name`)."""

    models: dict[str, RootConfig]
    sweeps: dict[str, list[dict]]
    name: str


#: What an explicit zoo name means "none given" by (``--config zoo_name=null`` reaches the
#: Snakefile as the string "null": Snakemake reads only numbers and booleans in a scalar).
_NO_NAME = (None, "", "null", "Null", "NULL", "~", "None")


def zoo_name(slugs: Sequence[str], is_default: bool, explicit: str | None = None) -> str:
    """The folder under ``results/`` of a zoo's tables: ``explicit`` when given (not None, "" or a
    YAML null spelling such as "null"), ``zoo`` for config.yaml's zoo, else ``zoo-<members' slugs>``
    (``zoo-<hash>`` when long), so a zoo given on the command line never overwrites another's."""
    if explicit not in _NO_NAME:
        return explicit
    if is_default:
        return "zoo"
    joined = "+".join(slugs)
    return f"zoo-{joined}" if len(joined) <= 60 else f"zoo-{hashlib.sha1(joined.encode()).hexdigest()[:10]}"


def resolve_zoo(entries: Iterable[str], overrides: Sequence[str], config_dir=None, explicit_name: str | None = None,
                root: RootConfig | None = None) -> Zoo:
    """Expand the zoo's ``entries`` (any form of :func:`~successor_heads.core.model_spec.expand_zoo`)
    into models and compose each one's config with ``overrides``; nothing is written. A model
    file with ``model.revisions`` becomes a sweep named after it: one model per revision,
    ``<name>@<revision>``.

    Args:
        config_dir: the config folder (default: :func:`find_config_dir`).
        explicit_name: the zoo's folder under ``results/`` (:func:`zoo_name`).
        root: the config composed without a model (default: composed here); its ``zoo`` is the default zoo.

    Raises:
        ConfigError: a bad entry, or a model's config is bad (:func:`compose`).
    """
    cdir = Path(config_dir).resolve() if config_dir else find_config_dir()
    known = available_models(cdir)
    root = root or compose(None, overrides, cdir)
    pairs = []
    for spec in expand_zoo(entries := list(entries), known):
        cfg = compose(spec, overrides, cdir)
        revs = list(cfg.model.revisions) if spec.kind == "name" and spec.revision is None else []
        if not revs:
            pairs.append((spec, cfg))
        for r in revs:  # a file's revisions form a sweep named after it
            member = dataclasses.replace(parse_model(f"{spec.name}@{r}", known), sweep=spec.name, label=r)
            pairs.append((member, compose(member, overrides, cdir)))
    name = zoo_name([s.slug for s, _ in pairs], entries == list(root.zoo), explicit_name)
    return Zoo({s.slug: c for s, c in pairs}, sweeps(s for s, _ in pairs), name)
