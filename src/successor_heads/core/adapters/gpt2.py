"""GPT-2 adapter. GPT-2 stores Conv1D weights transposed (``y = x @ W + b``)."""

from .base import Adapter


class GPT2Adapter(Adapter):
    family = "gpt2"

    def layers(self):
        return self.model.transformer.h

    def attn(self, layer):
        return self.layers()[layer].attn

    def o_proj(self, layer):
        return self.attn(layer).c_proj

    def attn_in_norm(self, layer):
        return self.layers()[layer].ln_1

    def mlp_in_norm(self, layer):
        return self.layers()[layer].ln_2

    def mlp(self, layer):
        return self.layers()[layer].mlp

    def final_norm(self):
        return self.model.transformer.ln_f

    def _v_weight(self, layer):
        d, H = self.cfg.n_embd, self.cfg.n_head
        dh = d // H
        c_attn = self.attn(layer).c_attn
        W = c_attn.weight[:, 2 * d : 3 * d].reshape(d, H, dh).permute(1, 0, 2)
        b = c_attn.bias[2 * d : 3 * d].reshape(H, dh)
        return W, b

    def _o_weight(self, layer):
        H = self.cfg.n_head
        c_proj = self.o_proj(layer)
        d = c_proj.weight.shape[1]
        return c_proj.weight.reshape(H, -1, d), c_proj.bias
