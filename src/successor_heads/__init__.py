"""successor-heads: regenerates Gould et al., *Successor Heads* (ICLR 2024) on a model zoo.

Dimension names used in every signature and docstring (fixed once, as in TransformerLens):
``batch pos d_model n_layers n_heads d_head d_vocab n_tokens``.

The public Python API (:mod:`successor_heads.api`: :func:`load`, :func:`successor_scores`,
:func:`behavioural_check`, :func:`direct_effects`) is importable from here; it is loaded on
first use, so ``import successor_heads`` stays light (no torch, no transformers).
"""

__version__ = "0.1.0"

_API = ("LoadedModel", "load", "successor_scores", "behavioural_check", "direct_effects")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module("successor_heads.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
