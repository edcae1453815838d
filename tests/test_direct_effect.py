"""Direct-effect mean ablation: the one-pass computation of every head equals ablating one
head at a time (a hook adding the head's mean-minus-actual direct contribution to the input of
the final norm, then the model's own final norm, unembedding and soft-cap), on a tiny random
model of every family, for both the fast (rank-d_head) and the exact path."""

import numpy as np
import pytest
import torch

from successor_heads.adapters import get_adapter
from successor_heads.direct_effect import (DirectEffectAblator, capture, corpus_direct_effects, mean_z,
                                           reference_per_head)
from successor_heads.tiny import FAMILIES, make_model

TEXTS = ["Monday, Tuesday, Wednesday, Thursday 1 2 3 4 the lazy dog jumps over the fox",
         "January February March April May June 7 8 9 10 11 12 one two three"]
ATOL = 2e-5


def _ids(tok, n=14):
    return torch.tensor([tok(t)["input_ids"][:n] for t in TEXTS])


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request, tokenizer):
    model, tok = make_model(request.param, tokenizer)
    a = get_adapter(model)
    ids = _ids(tok)
    mz = mean_z(a, ids, batch_size=1, skip_first=False)
    ref = reference_per_head(a, ids, mz)
    return request.param, a, ids, mz, ref


@pytest.mark.parametrize("fast", [None, False])
def test_one_pass_equals_one_head_at_a_time(setup, fast):
    family, a, ids, mz, ref = setup
    de = corpus_direct_effects(a, ids, mz, batch_size=1, fast=fast)
    d = a.dims
    assert de.loss.shape == (d.n_layers, d.n_heads, ids.shape[0] * (ids.shape[1] - 1))
    np.testing.assert_allclose(de.loss.reshape(len(ref), -1), ref, atol=ATOL, rtol=0)
    # the ablations do something (otherwise the comparison would be vacuous)
    assert np.abs(de.loss - de.base_loss).max() > 100 * ATOL
    if fast is None:  # Gemma3's post-attention norm forces the exact path
        assert DirectEffectAblator(a, mz).fast == (family != "gemma3")


def test_baseline_equals_model_loss(setup):
    _, a, ids, mz, _ = setup
    de = corpus_direct_effects(a, ids, mz, batch_size=2)
    with torch.no_grad():
        logits = a.model(input_ids=ids).logits.float()  # includes Gemma3's soft-cap
    lp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    np.testing.assert_allclose(de.base_loss, (-lp).reshape(-1).numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(de.base_logit, logits[:, :-1].gather(-1, ids[:, 1:, None]).reshape(-1).numpy(),
                               atol=1e-4, rtol=0)
    assert list(de.context_index[:3]) == [0, 0, 0] and de.position[1] == 1
    assert np.array_equal(de.target_ids, ids[:, 1:].reshape(-1).numpy())


def test_chunking_does_not_change_results(setup):
    """A tiny memory cap (5 rows of d_vocab logits) forces token chunks and one head per block."""
    _, a, ids, mz, ref = setup
    mb = 5 * 2 * 4 * a.dims.d_vocab / 2**20
    de = corpus_direct_effects(a, ids, mz, batch_size=2, max_chunk_mb=mb)
    assert DirectEffectAblator(a, mz, max_chunk_mb=mb).block_rows == 5
    np.testing.assert_allclose(de.loss.reshape(len(ref), -1), ref, atol=ATOL, rtol=0)


def test_mean_ablation_of_a_constant_head_is_a_no_op(setup):
    """When the mean equals the head's actual z everywhere, nothing changes (exactly)."""
    _, a, ids, mz, _ = setup
    sel = torch.ones_like(ids, dtype=torch.bool)
    sel[:, -1] = False
    cap = capture(a, ids, sel)
    z0 = cap.z[0, 1, 2].clone()
    cap.z[:, 1, 2] = z0
    mz2 = mz.clone()
    mz2[1, 2] = z0
    loss, _, base, _ = DirectEffectAblator(a, mz2).run(cap, ids[:, 1:].reshape(-1))
    np.testing.assert_allclose(loss[1, 2].numpy(), base.numpy(), atol=ATOL, rtol=0)


def test_gemma3_post_norm_is_not_linear(tokenizer):
    """Guard for the test above: on Gemma3, treating the head's contribution as linear (no
    post-attention norm) gives a measurably different answer, so the parity test can fail."""
    model, tok = make_model("gemma3", tokenizer)
    a = get_adapter(model)
    ids = _ids(tok)
    mz = mean_z(a, ids, skip_first=False)
    ref = reference_per_head(a, ids, mz, heads=[(1, 0)])
    ab = DirectEffectAblator(a, mz)
    ab.post = False  # wrong on purpose
    sel = torch.ones_like(ids, dtype=torch.bool)
    sel[:, -1] = False
    loss, *_ = ab.run(capture(a, ids, sel), ids[:, 1:].reshape(-1))
    assert np.abs(loss[1, 0].numpy() - ref[0]).max() > 100 * ATOL


def test_targets_must_match_capture(setup):
    _, a, ids, mz, _ = setup
    cap = capture(a, ids)
    with pytest.raises(ValueError, match="positions"):
        DirectEffectAblator(a, mz).run(cap, torch.zeros(3, dtype=torch.long))
