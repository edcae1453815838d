"""The ``features`` config section (stages ``activations`` and ``features``: mod-10 features from
SAEs and linear probes on MLP0 outputs; paper Section 3; docs/DESIGN.md, Mod-10 features)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from successor_heads.core import MODES, NORMS
from successor_heads.core.config import bounded, one_of, require
from successor_heads.core.tasks import RESIDUE_OF


@dataclass(frozen=True)
class FeaturesConfig:
    """Sized for ~1-2 minutes per small model on 2 CPU cores; raise n_saes/steps on a cluster."""

    numbers_max: int = 500  # number tokens 0..numbers_max, with and without a leading space
    norms: str = "raw"  # MLP0 norms; config.yaml ties it to scores.norms
    n_saes: int = 5
    d_sae: int = 256
    tied: bool = False  # tied decoder (W_enc = W_dec^T)
    l1_coeff: float = 0.1  # rows scaled to unit mean squared centred norm (features/sae.py)
    lr: float = 1e-3
    steps: int = 1000
    batch_size: int = 128
    val_fraction: float = 0.1
    moduli: list[int] = field(default_factory=lambda: [10, 7, 12])  # 10: the paper's; 7 (days), 12 (months): past it
    residue_of: str = "position"  # position: 1-based place in its list (Monday=1, February=2); index: Task.index
    match_cosine: float = 0.9  # SAE features from two SAEs are "the same" above this cosine
    probe_C: float = 1.0  # inverse L2 strength of the logistic-regression probes (standardised inputs)
    probe_max_iter: int = 5000  # lbfgs cap; fits that stop here are counted in features_summary.json
    cv_folds: int = 5
    head_mode: Optional[str] = None  # scores mode whose top head is the successor head; None: the file's default

    def __post_init__(self):
        k = "features."
        for key in ("n_saes", "d_sae", "steps", "batch_size", "probe_max_iter"):
            bounded(k + key, getattr(self, key), ge=1)
        bounded(k + "numbers_max", self.numbers_max, ge=0)
        one_of(k + "norms", self.norms, NORMS)
        bounded(k + "l1_coeff", self.l1_coeff, ge=0)
        bounded(k + "lr", self.lr, gt=0)
        bounded(k + "val_fraction", self.val_fraction, gt=0, lt=1)
        require(len(self.moduli) > 0, k + "moduli", self.moduli, "must not be empty")
        bounded(k + "moduli", self.moduli, ge=2)
        one_of(k + "residue_of", self.residue_of, RESIDUE_OF)
        bounded(k + "match_cosine", self.match_cosine, ge=-1, le=1)
        bounded(k + "probe_C", self.probe_C, gt=0)
        bounded(k + "cv_folds", self.cv_folds, ge=2)
        one_of(k + "head_mode", self.head_mode, MODES, optional=True)
