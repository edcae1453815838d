"""successor-heads: regenerates Gould et al., *Successor Heads* (ICLR 2024) on a model zoo.

Dimension names used in every signature and docstring (fixed once, as in TransformerLens):
``batch pos d_model n_layers n_heads d_head d_vocab n_tokens``.
"""

__version__ = "0.1.0"
