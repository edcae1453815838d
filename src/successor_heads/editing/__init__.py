"""editing: vector arithmetic, greater-than bias, edit -> loss (paper Section 3.2)."""

#: sets of feature directions in ``directions.h5`` (editing.vector_arithmetic; ``editing.sources``)
SOURCES = ("sae", "probe")
#: edit scale relative to the projection on the feature or to the norm of the MLP0 output
#: (editing.vector_arithmetic; ``editing.scale_ref``)
SCALE_REFS = ("projection", "norm")
