"""core: what every stage shares.

The method's named conventions are defined here, without torch, so that a run's config is checked
(successor_heads.config) before any heavy import; the modules that implement them use them from here.
"""

#: effective-embedding modes of the successor score (core.effective_embedding; docs/DESIGN.md,
#: "Effective embedding modes")
MODES = ("mlp0", "resid")
#: layer-norm conventions of the weight reads (core.adapters; docs/DESIGN.md, "Norm conventions"):
#: raw skips the norms, applied folds them in
NORMS = ("raw", "applied")
#: the dtypes a model is loaded in (core.loading.open_model; bfloat16 only on GPU)
DTYPES = ("float32", "float16", "bfloat16")
#: how a stage holds a model's weights (core.loading.open_model, core.streaming; docs/DESIGN.md,
#: "Large models"): auto streams them from disk when they exceed a share of the memory available
MEMORY = ("auto", "in_memory", "streamed")
