"""One adapter per model family; :func:`get_adapter` picks it from ``model.config.model_type``."""

from __future__ import annotations

from .base import NORM_OPTIONS, Adapter, Dims
from .gemma3 import Gemma3Adapter
from .gpt2 import GPT2Adapter
from .gpt_neox import GPTNeoXAdapter
from .llama import LlamaAdapter
from .qwen2 import Qwen2Adapter

ADAPTERS: dict[str, type[Adapter]] = {
    "gpt2": GPT2Adapter,
    "gpt_neox": GPTNeoXAdapter,
    "llama": LlamaAdapter,
    "qwen2": Qwen2Adapter,
    "gemma3_text": Gemma3Adapter,
    "gemma3": Gemma3Adapter,
}


def get_adapter(model) -> Adapter:
    """Wrap a transformers causal LM in the adapter for its family.

    Raises:
        ValueError: the model type has no adapter (the message lists the supported ones).
    """
    mt = getattr(model.config, "model_type", None)
    if mt not in ADAPTERS:
        raise ValueError(
            f"no adapter for model_type={mt!r}; supported: {', '.join(sorted(ADAPTERS))}. "
            "Add one in successor_heads/adapters/ (one small file per family)."
        )
    return ADAPTERS[mt](model)


__all__ = ["Adapter", "Dims", "NORM_OPTIONS", "get_adapter", "ADAPTERS"]
