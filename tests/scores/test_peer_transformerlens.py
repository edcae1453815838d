"""Parity with an implementation this project did not write: TransformerLens 4.x
(``TransformerBridge.boot_transformers`` on a local transformers folder, offline).

On a tiny random model of every family (random value biases, random norm weights), our per-head
``W_OV``, our raw ``mlp0`` effective embedding, every head's OV read-out and the successor
scores on our tasks equal what TransformerLens' own matrices and modules give. The references
are the paper's circuit: no value bias, and in ``resid`` mode the head's input norm (TL's
``ln1``) applied; both tests fail when either is changed in our default.
"""

import numpy as np
import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoModelForCausalLM

from successor_heads.core.adapters import get_adapter
from successor_heads.core.effective_embedding import effective_embeddings, head_input_norm, neutral_prefix
from successor_heads.scores.successor_score import successor_scores
from successor_heads.scores.stage import task_indices
from successor_heads.core.tasks import build_tasks
from tests.support.tiny import FAMILIES, make_model, randomize_biases

TOL = dict(rtol=1e-4, atol=1e-4)


#: Families TransformerLens 4.3 does not boot from a transformers folder, and why.
TL_DOES_NOT_BOOT = {
    "phimoe": "TransformerLens 4.3 looks for PhiMoEForCausalLM; transformers 5 names it PhimoeForCausalLM",
    "granitemoeshared": "TransformerLens 4.3 has no adapter for GraniteMoeSharedForCausalLM",
}
#: Families whose MLP0 TransformerLens 4.3 cannot run alone, and why (W_OV, read-outs and the
#: ``resid`` scores still compared).
TL_NO_MLP0 = {
    "mpt": "TransformerLens 4.3 calls MPT's MLP module without the residual it needs, and its W_in, W_out "
           "and act_fn give an MLP 1e-3 apart from transformers' own module (which our mlp0 runs)",
}
#: Families whose ``resid`` read-out TransformerLens 4.3 cannot give, and why (the other checks run).
TL_NO_RESID = {
    "codegen": "TransformerLens 4.3's run_with_cache fails on CodeGen (CodeGenAttention has no embed_positions)",
    "cohere": "TransformerLens 4.3's ln1 output for Cohere differs from transformers' input_layernorm "
              "(read-outs up to 6e-3 apart); transformers parity holds (tests/core/test_adapters.py)",
}


@pytest.fixture(scope="module", params=[
    pytest.param(f, marks=pytest.mark.skip(reason=TL_DOES_NOT_BOOT[f])) if f in TL_DOES_NOT_BOOT else f
    for f in FAMILIES])
def peers(request, tmp_path_factory, tokenizer):
    """``(adapter, tokenizer, bridge)`` for one family: our adapter on the transformers model and
    TransformerLens' bridge booted from the same saved folder."""
    model, tok = make_model(request.param, tokenizer, seed=7)
    randomize_biases(model, 0.5)  # zero biases would hide a value bias put back into the circuit
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    ours = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    bridge = TransformerBridge.boot_transformers(str(path), device="cpu", dtype=torch.float32)
    return get_adapter(ours), tok, bridge


def _tl_x(bridge, ids: torch.Tensor, mode: str, prefix: list[int], layers=None) -> torch.Tensor:
    """TransformerLens' input to each attention layer's OV circuit ``[n_layers, n_tokens, d_model]``:
    ``blocks[0].mlp(embed(t))`` (mlp0, raw) or ``ln1`` of the residual stream at the token after
    ``prefix`` (resid: what the head reads). ``layers``: the blocks that are attention layers (a
    hybrid's ``Adapter.attention_layers``; TL stacks a hybrid's ``W_V``, ``W_O`` over those only);
    None: every block."""
    layers = range(bridge.cfg.n_layers) if layers is None else layers
    with torch.no_grad():
        if mode == "mlp0":
            x = _tl_mlp0(bridge, _tl_embed(bridge, ids[None]))[0]
            return x.expand(len(layers), *x.shape)
        seq = torch.cat([torch.tensor(prefix).expand(len(ids), len(prefix)), ids[:, None]], 1)
        _, cache = bridge.run_with_cache(seq)
        # a block without ln1 (OLMo-2 has no input norms) feeds the head the residual itself
        keys = [f"blocks.{layer}.ln1.hook_out" if f"blocks.{layer}.ln1.hook_out" in cache
                else f"blocks.{layer}.hook_resid_pre" for layer in layers]
        return torch.stack([cache[k][:, -1] for k in keys])


def _tl_embed(bridge, ids: torch.Tensor) -> torch.Tensor:
    """TransformerLens' token embedding as the first layer receives it: what its ``embed.hook_out``
    exposes (Granite's ``embedding_multiplier`` included), through ``embed_ln`` where TL has one
    (BLOOM's embedding LayerNorm)."""
    seen = []
    bridge.embed.hook_out.add_hook(lambda x, hook: seen.append(x))
    try:
        with torch.no_grad():
            bridge.embed(ids)
    finally:
        bridge.embed.hook_out.remove_hooks()
    ln = getattr(bridge, "embed_ln", None)
    return seen[0] if ln is None else ln(seen[0])


def _tl_mlp0(bridge, x: torch.Tensor) -> torch.Tensor:
    """TransformerLens' first MLP on ``x``: its module (given a zero residual where the module
    adds one: BLOOM, MPT), or where TL cannot call it (OPT: a "containerless" MLP) TL's own
    ``W_in``, ``b_in``, ``W_out``, ``b_out`` and ``cfg.act_fn``."""
    try:
        out = bridge.blocks[0].mlp(x)
        return out[0] if isinstance(out, tuple) else out  # gpt-oss's MLP: (out, router scores)
    except (RuntimeError, TypeError) as err:
        if "residual" in str(err):  # BLOOM, MPT: the MLP module adds the residual it is given
            out = bridge.blocks[0].mlp(x, torch.zeros_like(x))
            return out[0] if isinstance(out, tuple) else out
        if "containerless" not in str(err):  # OPT: TL's MLP is no module of its own
            raise
    act = {"relu": torch.relu, "gelu": torch.nn.functional.gelu}[bridge.cfg.act_fn]
    return act(x @ bridge.W_in[0] + _bias(bridge, "b_in")) @ bridge.W_out[0] + _bias(bridge, "b_out")


def _bias(bridge, name: str):
    """TL's layer-0 MLP bias ``name``, or 0.0 where the model has none (MPT: TL raises then)."""
    try:
        return getattr(bridge, name)[0]
    except AttributeError:
        return 0.0


def _tl_OV(bridge) -> torch.Tensor:
    """TL's ``OV`` ``[n_layers, n_heads, d_model, d_model]`` times Granite's ``residual_multiplier``
    (1 elsewhere): TL applies it in its residual blocks, our ``W_O`` holds it."""
    return bridge.OV.AB.detach() * getattr(bridge.cfg, "residual_multiplier", 1.0)


def _tl_W_U(bridge) -> torch.Tensor:
    """TL's ``W_U`` over Granite's ``logits_scaling`` (1 elsewhere): TL divides its logits by it,
    our ``W_U`` holds it."""
    return bridge.W_U.detach() / getattr(bridge.cfg, "logits_scaling", 1.0)


def _tl_scores(bridge, x_LTM, token_ids, tasks) -> np.ndarray:
    """Successor scores ``[n_layers, n_heads, n_tasks]`` from TL's ``OV`` and ``W_U`` alone."""
    pos = {int(t): i for i, t in enumerate(token_ids.tolist())}
    OV, W_U = _tl_OV(bridge), _tl_W_U(bridge)  # OV: [n_layers, n_heads, d_model, d_model], GQA expanded
    out = np.full((*OV.shape[:2], len(tasks)), np.nan)
    for k, task in enumerate(tasks):
        succ = torch.tensor(task.successor)
        has = succ >= 0
        if not has.any():
            continue
        rows = torch.tensor([pos[t] for t in task.token_ids])[has]
        logits = torch.einsum("ltm,lhmn,nv->lhtv", x_LTM[:, rows], OV, W_U[:, task.token_ids])
        logits = logits + bridge.b_U.detach()[task.token_ids]  # zeros but for GPT-J (ov.py: "@ W_U + b_U")
        out[..., k] = (logits.argmax(-1) == succ[has]).float().mean(-1).numpy()
    return out


def test_W_OV_equals_transformerlens(peers):
    a, _, bridge = peers
    ours = torch.stack([a.W_V_layer(layer)[0] @ a.W_O_layer(layer)[0] for layer in range(a.dims.n_layers)])
    torch.testing.assert_close(ours, _tl_OV(bridge), **TOL)


def test_ov_read_out_is_the_bias_free_circuit(peers):
    """``Adapter.ov`` by default is ``x W_OV`` with TL's ``OV``: no ``b_V W_O`` term."""
    a, _, bridge = peers
    x = torch.randn(6, a.dims.d_model)
    OV = _tl_OV(bridge)
    for layer in range(a.dims.n_layers):
        torch.testing.assert_close(a.ov(layer, x), torch.einsum("tm,hmn->htn", x, OV[layer]), **TOL)


def test_mlp0_effective_embedding_equals_transformerlens(peers):
    a, tok, bridge = peers
    if a.family in TL_NO_MLP0:
        pytest.skip(TL_NO_MLP0[a.family])
    ids = torch.arange(5, 40)
    ours = effective_embeddings(a, ids, "mlp0", "raw")
    # atol relative to the vectors' size: a tiny model's MLP0 outputs can be far below 1e-4
    torch.testing.assert_close(ours, _tl_x(bridge, ids, "mlp0", [], a.attention_layers), rtol=1e-4, atol=1e-4 * float(ours.abs().max()))
    if a.spec.embed_scale == "none":  # Gemma 2/3 embedding modules scale W_E by sqrt(d_model)
        torch.testing.assert_close(bridge.embed(ids[None])[0], bridge.W_E[ids], **TOL)


@pytest.mark.parametrize("mode", ["mlp0", "resid"])
def test_successor_scores_equal_transformerlens(peers, mode):
    a, tok, bridge = peers
    if mode == "resid" and a.family in TL_NO_RESID:
        pytest.skip(TL_NO_RESID[a.family])
    if mode == "mlp0" and a.family in TL_NO_MLP0:
        pytest.skip(TL_NO_MLP0[a.family])
    tasks, ids = task_indices(build_tasks(tok))
    prefix = neutral_prefix(tok)
    x = effective_embeddings(a, ids, mode, "raw", prefix_ids=prefix)
    ours = successor_scores(a, x, ids, tasks, "raw", input_norm=head_input_norm(mode, "raw"))
    x_tl = _tl_x(bridge, ids, mode, prefix, a.attention_layers)
    # the read-out itself, before any argmax: what the head writes for each token, unembedded
    for layer in range(a.dims.n_layers):
        got = a.unembed(a.ov(layer, x[layer], "raw", input_norm=head_input_norm(mode, "raw")))
        want = torch.einsum("tm,hmn,nv->htv", x_tl[layer], _tl_OV(bridge)[layer], _tl_W_U(bridge))
        want = want + bridge.b_U.detach()
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(ours.per_task, _tl_scores(bridge, x_tl, ids, tasks))
