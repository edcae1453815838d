"""Direct-effect mean ablation: the one-pass computation of every head equals ablating one
head at a time (a hook on the final norm, then the model's own unembedding and soft-cap), on a
tiny random model of every family, for both the fast (rank-d_head) and the exact path and for
both final-norm options: "frozen" (scale of the clean run, the paper's direct effect; a forward
hook adds the head's delta through the norm's linear part) and "recomputed" (a pre-hook adds
the delta to the norm's input)."""

import numpy as np
import pytest
import torch
from torch import nn

from successor_heads.adapters import get_adapter
from successor_heads.direct_effect import (FINAL_NORMS, DirectEffectAblator, capture, corpus_direct_effects, mean_z,
                                           reference_per_head)
from successor_heads.tiny import FAMILIES, make_model

TEXTS = ["Monday, Tuesday, Wednesday, Thursday 1 2 3 4 the lazy dog jumps over the fox",
         "January February March April May June 7 8 9 10 11 12 one two three"]
ATOL = 2e-5


def _ids(tok, n=14):
    return torch.tensor([tok(t)["input_ids"][:n] for t in TEXTS])


def _sel(ids):
    sel = torch.ones_like(ids, dtype=torch.bool)
    sel[:, -1] = False
    return sel


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request, tokenizer):
    model, tok = make_model(request.param, tokenizer)
    a = get_adapter(model)
    ids = _ids(tok)
    mz = mean_z(a, ids, batch_size=1, skip_first=False)
    refs = {fn: reference_per_head(a, ids, mz, final_norm=fn) for fn in FINAL_NORMS}
    return request.param, a, ids, mz, refs


@pytest.mark.parametrize("final_norm", FINAL_NORMS)
@pytest.mark.parametrize("fast", [None, False])
def test_one_pass_equals_one_head_at_a_time(setup, fast, final_norm):
    family, a, ids, mz, refs = setup
    ref = refs[final_norm]
    de = corpus_direct_effects(a, ids, mz, batch_size=1, fast=fast, final_norm=final_norm)
    d = a.dims
    assert de.loss.shape == (d.n_layers, d.n_heads, ids.shape[0] * (ids.shape[1] - 1))
    assert de.final_norm == final_norm
    np.testing.assert_allclose(de.loss.reshape(len(ref), -1), ref, atol=ATOL, rtol=0)
    # the ablations do something (otherwise the comparison would be vacuous)
    assert np.abs(de.loss - de.base_loss).max() > 100 * ATOL
    # Gemma3's post-attention norm forces the exact path
    assert de.method == ("fast" if fast is None and family != "gemma3" else "exact")


def test_frozen_and_recomputed_differ(setup):
    """The option is not a no-op: one pass and the references both tell the two apart."""
    _, a, ids, mz, refs = setup
    assert np.abs(refs["frozen"] - refs["recomputed"]).max() > 100 * ATOL
    for fast in (None, False):
        lo = {fn: corpus_direct_effects(a, ids, mz, batch_size=2, fast=fast, final_norm=fn).loss for fn in FINAL_NORMS}
        assert np.abs(lo["frozen"] - lo["recomputed"]).max() > 100 * ATOL


def _hand_frozen_loss(a, ids, mz, layer, head):
    """Per-token loss of one head ablated, final norm scale frozen at the clean run, written out
    by hand from the modules' weights (no NormSpec)."""
    cap = capture(a, ids, _sel(ids))
    W_O = a.W_O_layer(layer)[0][head].float()
    delta = (mz[layer, head] - cap.z[:, layer, head]) @ W_O
    post = a.attn_out_norm(layer)
    if post is not None:  # Gemma3: the layer's own post-attention norm is not linear
        at = cap.attn_out[:, layer]
        delta = post(at + delta) - post(at)
    x, fn = cap.resid, a.final_norm()
    if isinstance(fn, nn.LayerNorm):
        xc = x - x.mean(-1, keepdim=True)
        dc = delta - delta.mean(-1, keepdim=True)
        y = (xc + dc) / torch.sqrt(xc.pow(2).mean(-1, keepdim=True) + fn.eps) * fn.weight + fn.bias
    else:
        eps = getattr(fn, "variance_epsilon", getattr(fn, "eps", None))
        w = 1 + fn.weight if "Gemma" in type(fn).__name__ else fn.weight
        y = (x + delta) / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
    logits = y @ a.W_U.float()
    if a.b_U is not None:
        logits = logits + a.b_U
    cap_ = getattr(a.cfg, "final_logit_softcapping", None)
    if cap_:
        logits = torch.tanh(logits / cap_) * cap_
    tgt = ids[:, 1:].reshape(-1)
    return (logits.logsumexp(-1) - logits.gather(-1, tgt[:, None])[:, 0]).detach().numpy()


def test_frozen_equals_hand_formula(setup):
    """Frozen, default path (fast except Gemma3) on head L1H2 equals the formula by hand, and
    the recomputed result does not."""
    _, a, ids, mz, _ = setup
    with torch.no_grad():
        hand = _hand_frozen_loss(a, ids, mz, 1, 2)
    de = corpus_direct_effects(a, ids, mz, batch_size=2)
    np.testing.assert_allclose(de.loss[1, 2], hand, atol=ATOL, rtol=0)
    rec = corpus_direct_effects(a, ids, mz, batch_size=2, final_norm="recomputed")
    assert np.abs(rec.loss[1, 2] - hand).max() > 10 * ATOL


def test_baseline_equals_model_loss(setup):
    _, a, ids, mz, _ = setup
    with torch.no_grad():
        logits = a.model(input_ids=ids).logits.float()  # includes Gemma3's soft-cap
    lp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    for fn in FINAL_NORMS:
        de = corpus_direct_effects(a, ids, mz, batch_size=2, final_norm=fn)
        np.testing.assert_allclose(de.base_loss, (-lp).reshape(-1).numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(de.base_logit, logits[:, :-1].gather(-1, ids[:, 1:, None]).reshape(-1).numpy(),
                                   atol=1e-4, rtol=0)
    assert list(de.context_index[:3]) == [0, 0, 0] and de.position[1] == 1
    assert np.array_equal(de.target_ids, ids[:, 1:].reshape(-1).numpy())


@pytest.mark.parametrize("final_norm", FINAL_NORMS)
def test_chunking_does_not_change_results(setup, final_norm):
    """A tiny memory cap (5 rows of d_vocab logits) forces token chunks and one head per block."""
    _, a, ids, mz, refs = setup
    ref = refs[final_norm]
    mb = 5 * 2 * 4 * a.dims.d_vocab / 2**20
    de = corpus_direct_effects(a, ids, mz, batch_size=2, max_chunk_mb=mb, final_norm=final_norm)
    assert DirectEffectAblator(a, mz, max_chunk_mb=mb).block_rows == 5
    np.testing.assert_allclose(de.loss.reshape(len(ref), -1), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("final_norm", FINAL_NORMS)
def test_mean_ablation_of_a_constant_head_is_a_no_op(setup, final_norm):
    """When the mean equals the head's actual z everywhere, nothing changes (exactly)."""
    _, a, ids, mz, _ = setup
    cap = capture(a, ids, _sel(ids))
    z0 = cap.z[0, 1, 2].clone()
    cap.z[:, 1, 2] = z0
    mz2 = mz.clone()
    mz2[1, 2] = z0
    loss, _, base, _ = DirectEffectAblator(a, mz2, final_norm=final_norm).run(cap, ids[:, 1:].reshape(-1))
    np.testing.assert_allclose(loss[1, 2].numpy(), base.numpy(), atol=ATOL, rtol=0)


def test_gemma3_post_norm_is_not_linear(tokenizer):
    """Guard for the test above: on Gemma3, treating the head's contribution as linear (no
    post-attention norm) gives a measurably different answer, so the parity test can fail."""
    model, tok = make_model("gemma3", tokenizer)
    a = get_adapter(model)
    ids = _ids(tok)
    mz = mean_z(a, ids, skip_first=False)
    for fn in FINAL_NORMS:
        ref = reference_per_head(a, ids, mz, heads=[(1, 0)], final_norm=fn)
        ab = DirectEffectAblator(a, mz, final_norm=fn)
        ab.post = False  # wrong on purpose
        loss, *_ = ab.run(capture(a, ids, _sel(ids)), ids[:, 1:].reshape(-1))
        assert np.abs(loss[1, 0].numpy() - ref[0]).max() > 100 * ATOL


def test_targets_must_match_capture(setup):
    _, a, ids, mz, _ = setup
    cap = capture(a, ids)
    with pytest.raises(ValueError, match="positions"):
        DirectEffectAblator(a, mz).run(cap, torch.zeros(3, dtype=torch.long))


def test_unknown_final_norm_value_is_rejected(tokenizer):
    from successor_heads.config import ConfigError, validate

    model, tok = make_model("llama", tokenizer)
    a = get_adapter(model)
    ids = _ids(tok, 6)
    mz = mean_z(a, ids, skip_first=False)
    for call in (lambda: DirectEffectAblator(a, mz, final_norm="fixed"),
                 lambda: corpus_direct_effects(a, ids, mz, final_norm="fixed"),
                 lambda: reference_per_head(a, ids, mz, heads=[(0, 0)], final_norm="fixed")):
        with pytest.raises(ValueError, match=r"wild.final_norm='fixed'.*frozen, recomputed"):
            call()
    with pytest.raises(ConfigError, match="wild.final_norm='fixed'"):
        validate({"model": {"name": "tiny", "family": "llama", "source": {"kind": "local", "path": "x"}},
                  "wild": {"final_norm": "fixed"}})
    assert validate({"model": {"name": "tiny", "family": "llama", "source": {"kind": "local", "path": "x"}}}
                    ).wild.final_norm == "frozen"


class _OddNorm(nn.Module):
    """A final norm that ``norm_spec`` does not recognise (it wraps a real one)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


class _FakeRMSNorm(nn.Module):
    """Named like an RMSNorm, with weight and eps, but computes something else (tanh first)."""

    def __init__(self, inner):
        super().__init__()
        self.weight, self.variance_epsilon, self.inner = inner.weight, inner.variance_epsilon, inner

    def forward(self, x):
        return self.inner(torch.tanh(x))


@pytest.mark.parametrize("wrapper", [_OddNorm, _FakeRMSNorm])
def test_unrecognised_final_norm(tokenizer, wrapper):
    """Frozen needs a recognised norm and says to use recomputed; recomputed still works (exact path)."""
    model, tok = make_model("llama", tokenizer)
    model.model.norm = wrapper(model.model.norm)
    a = get_adapter(model)
    ids = _ids(tok, 8)
    mz = mean_z(a, ids, skip_first=False)
    with pytest.raises(ValueError, match="wild.final_norm=recomputed"):
        corpus_direct_effects(a, ids, mz, final_norm="frozen")
    if wrapper is _OddNorm:
        with pytest.raises(ValueError, match="wild.final_norm=recomputed"):
            reference_per_head(a, ids, mz, heads=[(0, 0)], final_norm="frozen")
    de = corpus_direct_effects(a, ids, mz, final_norm="recomputed")
    assert de.method == "exact"
    ref = reference_per_head(a, ids, mz, final_norm="recomputed")
    np.testing.assert_allclose(de.loss.reshape(len(ref), -1), ref, atol=ATOL, rtol=0)
