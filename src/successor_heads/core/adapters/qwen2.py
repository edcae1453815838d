"""Qwen2 adapter: Llama layout plus biases on q, k and v (so ``b_V`` is non-zero)."""

from .llama import LlamaAdapter


class Qwen2Adapter(LlamaAdapter):
    family = "qwen2"
