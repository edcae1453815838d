"""Llama-family adapter (Llama, SmolLM2; Qwen2 and Gemma3 subclass it).

Grouped-query attention: ``v_proj`` holds ``n_kv_heads`` heads; the base class expands them so
query head h reads KV head ``h // (n_heads // n_kv_heads)``.
"""

from .base import Adapter


class LlamaAdapter(Adapter):
    family = "llama"

    def layers(self):
        return self.model.model.layers

    def attn(self, layer):
        return self.layers()[layer].self_attn

    def o_proj(self, layer):
        return self.attn(layer).o_proj

    def attn_in_norm(self, layer):
        return self.layers()[layer].input_layernorm

    def mlp_in_norm(self, layer):
        return self.layers()[layer].post_attention_layernorm

    def mlp(self, layer):
        return self.layers()[layer].mlp

    def final_norm(self):
        return self.model.model.norm

    def _v_weight(self, layer):
        dh, Hkv = self._d_head(), self._n_kv()
        v = self.attn(layer).v_proj
        W = v.weight.reshape(Hkv, dh, -1).transpose(1, 2)
        b = None if v.bias is None else v.bias.reshape(Hkv, dh)
        return W, b

    def _o_weight(self, layer):
        o = self.o_proj(layer)
        H, dh = self.cfg.num_attention_heads, self._d_head()
        return o.weight.T.reshape(H, dh, -1), o.bias

    def _d_head(self):
        c = self.cfg
        return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads

    def _n_kv(self):
        c = self.cfg
        return getattr(c, "num_key_value_heads", None) or c.num_attention_heads
