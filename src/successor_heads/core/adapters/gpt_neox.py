"""GPT-NeoX / Pythia adapter.

Pythia runs attention and MLP in parallel, so MLP0's input is the embedding alone, and its
fused QKV weight is laid out per head as ``[n_heads, 3, d_head]`` rows (q, k, v).
"""

from .base import Adapter


class GPTNeoXAdapter(Adapter):
    family = "gpt_neox"

    def __init__(self, model):
        super().__init__(model)
        self.parallel_attn_mlp = bool(getattr(self.cfg, "use_parallel_residual", True))

    def layers(self):
        return self.model.gpt_neox.layers

    def attn(self, layer):
        return self.layers()[layer].attention

    def o_proj(self, layer):
        return self.attn(layer).dense

    def attn_in_norm(self, layer):
        return self.layers()[layer].input_layernorm

    def mlp_in_norm(self, layer):
        return self.layers()[layer].post_attention_layernorm

    def mlp(self, layer):
        return self.layers()[layer].mlp

    def final_norm(self):
        return self.model.gpt_neox.final_layer_norm

    def _v_weight(self, layer):
        H, dh, d = self.dims_raw()
        qkv = self.attn(layer).query_key_value
        W = qkv.weight.reshape(H, 3, dh, d)[:, 2].transpose(1, 2)
        b = None if qkv.bias is None else qkv.bias.reshape(H, 3, dh)[:, 2]
        return W, b

    def _o_weight(self, layer):
        H, dh, d = self.dims_raw()
        dense = self.o_proj(layer)
        return dense.weight.T.reshape(H, dh, d), dense.bias

    def dims_raw(self):
        H = self.cfg.num_attention_heads
        d = self.cfg.hidden_size
        return H, d // H, d
