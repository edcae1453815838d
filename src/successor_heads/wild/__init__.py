"""wild: direct-effect mean ablation on natural text (paper Section 4.3, Appendix J)."""

#: ``wild.final_norm``: the final-norm scale of the clean run (the paper's direct effect) or
#: recomputed on the ablated residual (wild.direct_effect_norms)
FINAL_NORMS = ("frozen", "recomputed")
#: ``wild.compute_dtype``: the dtype of the per-head logit change (wild.direct_effect_fast; bfloat16: opt-in)
COMPUTE_DTYPE_NAMES = ("float32", "bfloat16")
