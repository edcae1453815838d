"""Gemma3 adapter.

Gemma3 scales embeddings by sqrt(d_model) (inside its embedding module, so :meth:`embed` has
it), normalises the attention output and the MLP output before each residual add
(``post_attention_layernorm``, ``post_feedforward_layernorm``), feeds the MLP through
``pre_feedforward_layernorm``, ties W_U to W_E and may soft-cap the final logits.
"""

from .llama import LlamaAdapter


class Gemma3Adapter(LlamaAdapter):
    family = "gemma3"

    def mlp_in_norm(self, layer):
        return self.layers()[layer].pre_feedforward_layernorm

    def attn_out_norm(self, layer):
        return self.layers()[layer].post_attention_layernorm

    def mlp_out_norm(self, layer):
        return self.layers()[layer].post_feedforward_layernorm
