"""Hooks (core/hooks.py): always removed, and the one mean ``z`` both mean ablations use."""

import pytest
import torch

from successor_heads.core.adapters import get_adapter
from successor_heads.core.hooks import contiguous_readout, first_input, hooks, mean_z
from tests.support.tiny import FAMILIES, make_model


def _n_hooks(module):
    return len(module._forward_pre_hooks) + len(module._forward_hooks)


def test_hooks_are_removed_on_exit_and_on_errors(tokenizer):
    model, _ = make_model("llama", tokenizer)
    a = get_adapter(model)
    o, n = a.o_proj(0), a.final_norm()
    seen = []
    with hooks((o, "pre", lambda _m, args: seen.append("pre")), (n, "forward", lambda _m, args, out: seen.append("fwd"))):
        assert _n_hooks(o) == _n_hooks(n) == 1
        model(input_ids=torch.tensor([[1, 2, 3]]))
    assert seen == ["pre", "fwd"] and _n_hooks(o) == _n_hooks(n) == 0

    def boom(_m, args):
        raise RuntimeError("inside the forward pass")

    with pytest.raises(RuntimeError, match="inside the forward pass"):
        with hooks((o, "pre", boom)):
            model(input_ids=torch.tensor([[1, 2, 3]]))
    assert _n_hooks(o) == 0
    # a bad kind after a good one leaves nothing registered
    with pytest.raises(ValueError, match="hook kind"):
        with hooks((o, "pre", boom), (n, "after", boom)):
            pass
    assert _n_hooks(o) == _n_hooks(n) == 0


def test_first_input():
    x = torch.zeros(1)
    assert first_input((x,), {}) is x and first_input((), {"hidden_states": x}) is x


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("start", [0, 1])
def test_mean_z_is_the_mean_of_each_heads_z(family, start, tokenizer):
    model, _ = make_model(family, tokenizer)
    a = get_adapter(model)
    torch.manual_seed(0)
    batches = [torch.randint(1, 500, (3, 7)), torch.randint(1, 500, (2, 5))]
    zs = {i: [] for i in range(a.dims.n_layers)}
    with hooks(*[(a.o_proj(i), "pre", lambda _m, args, i=i: zs[i].append(args[0][:, start:].reshape(-1, args[0].shape[-1])))
                 for i in range(a.dims.n_layers)]):
        for ids in batches:
            model(input_ids=ids)
    d = a.dims
    want = torch.stack([torch.cat(zs[i]).double().mean(0) for i in range(d.n_layers)]).view(d.n_layers, d.n_heads, d.d_head)
    for acc in (torch.float32, torch.float64):
        got = mean_z(a, batches, start, acc)
        assert got.shape == (d.n_layers, d.n_heads, d.d_head) and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_contiguous_readout_hands_a_half_precision_unembedding_a_contiguous_input(dtype, tokenizer):
    """logits_to_keep slices the residual stream; in half precision the unembedding gets a
    contiguous copy (the same values), in float32 the slice as transformers passes it."""
    model, _ = make_model("llama", tokenizer)
    model.to(dtype)
    a = get_adapter(model)
    seen = []
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    record = (model.get_output_embeddings(), "pre", lambda _m, args: seen.append(args[0].is_contiguous()))
    with hooks(record):
        plain = model(input_ids=ids, logits_to_keep=1).logits
    with contiguous_readout(a), hooks(record):  # the recorder runs after the readout's hook
        fixed = model(input_ids=ids, logits_to_keep=1).logits
    assert seen == [False, dtype != torch.float32]
    torch.testing.assert_close(fixed, plain, rtol=0.02, atol=0.02)
    assert not model.get_output_embeddings()._forward_pre_hooks
