"""Direct-effect mean ablation (paper Section 4.3): the one-pass computation of every head
equals ablating one head at a time (a hook on the final norm, then the model's own unembedding
and soft-cap), on a tiny random model of every family (Gemma3's post-attention norm included),
for both the fast (rank-d_head, successor_heads.wild.direct_effect_fast) and the exact path and for
both final-norm options: "frozen" (scale of the clean run, the paper's direct effect; a forward
hook adds the head's delta through the norm's linear part) and "recomputed" (a pre-hook adds
the delta to the norm's input). bfloat16 (wild.compute_dtype) is checked with a looser
tolerance, BF16_ATOL + BF16_RTOL x the head's effect."""

import numpy as np
import pytest
import torch
from torch import nn

from successor_heads.core.adapters import get_adapter
from successor_heads.wild import direct_effect_fast
from successor_heads.wild.capture import capture
from successor_heads.wild.direct_effect import FINAL_NORMS, DirectEffectAblator, corpus_direct_effects, mean_z
from successor_heads.wild.direct_effect_reference import reference_per_head
from tests.support.tiny import CORE_FAMILIES, FAMILIES, make_model

TEXTS = ["Monday, Tuesday, Wednesday, Thursday 1 2 3 4 the lazy dog jumps over the fox",
         "January February March April May June 7 8 9 10 11 12 one two three"]
ATOL = 2e-5
# bfloat16 keeps 8 significant bits of each head's logit change: 1% of the head's effect on the
# token's loss, plus 1e-4 nats for the rounding of small changes (observed: <= 2e-5 here).
BF16_ATOL, BF16_RTOL = 1e-4, 1e-2


def _ids(tok, n=14):
    return torch.tensor([tok(t)["input_ids"][:n] for t in TEXTS])


def _sel(ids):
    sel = torch.ones_like(ids, dtype=torch.bool)
    sel[:, -1] = False
    return sel


#: Code-path tests (not per-family facts) run on the families before the second wave only.
on_core_families = pytest.mark.parametrize("setup", CORE_FAMILIES, indirect=True)


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
    # every family has the fast path, Gemma3's post-attention norm included
    assert de.method == ("fast" if fast is None else "exact")


@pytest.mark.parametrize("final_norm", FINAL_NORMS)
def test_fast_equals_exact_and_bfloat16_is_close(setup, final_norm):
    """Fast == exact (float32 rounding) for the loss and the target logit; bfloat16 within
    BF16_ATOL + BF16_RTOL x |effect| of float32, with the target logits still exact."""
    _, a, ids, mz, _ = setup
    fast = corpus_direct_effects(a, ids, mz, batch_size=2, final_norm=final_norm)
    exact = corpus_direct_effects(a, ids, mz, batch_size=2, fast=False, final_norm=final_norm)
    bf = corpus_direct_effects(a, ids, mz, batch_size=2, final_norm=final_norm, compute_dtype="bfloat16")
    assert (fast.compute_dtype, exact.compute_dtype, bf.compute_dtype) == ("float32", "float32", "bfloat16")
    np.testing.assert_allclose(fast.loss, exact.loss, atol=ATOL, rtol=0)
    np.testing.assert_allclose(fast.target_logit, exact.target_logit, atol=1e-4, rtol=0)
    np.testing.assert_allclose(fast.base_loss, exact.base_loss, atol=ATOL, rtol=0)
    effect = np.abs(fast.loss - fast.base_loss)
    assert np.all(np.abs(bf.loss - fast.loss) <= BF16_ATOL + BF16_RTOL * effect)
    assert np.abs(bf.loss - fast.loss).max() > 0  # bfloat16 really ran
    np.testing.assert_array_equal(bf.target_logit, fast.target_logit)


@on_core_families
@pytest.mark.parametrize("final_norm", FINAL_NORMS)
def test_direct_form_for_few_positions(setup, final_norm):
    """With fewer positions than d_head * d_model / (d_model - d_head) the fast path skips
    forming K (direct form); it still equals the reference."""
    _, a, ids, mz, _ = setup
    short = ids[:1, :4]
    ab = DirectEffectAblator(a, mz, final_norm=final_norm)
    cap = capture(a, short, _sel(short))
    loss, *_ = ab.run(cap, short[:, 1:].reshape(-1))
    assert ab.fastc.direct
    ref = reference_per_head(a, short, mz, final_norm=final_norm)
    np.testing.assert_allclose(loss.numpy().reshape(len(ref), -1), ref, atol=ATOL, rtol=0)


@on_core_families
@pytest.mark.parametrize("final_norm", FINAL_NORMS)
def test_deltas_beyond_the_float_range_are_recomputed(setup, final_norm, monkeypatch):
    """A mean far from the head's outputs (ablation effects of 100+ nats without a soft-cap)
    overflows the shifted exp2 sum; those blocks are recomputed with a max shift and still equal
    the exact path."""
    family, a, ids, mz, _ = setup
    if getattr(a.cfg, "final_logit_softcapping", None):
        pytest.skip("a soft-cap bounds the shifted sum (cap * tanh - cap >= -2 cap): nothing to recompute")
    if a.attn_out_norm(0) is not None:
        pytest.skip("a post-attention norm (Gemma 2/3, OLMo-2) renormalises the ablated head's output: no logit "
                    "change reaches the float range, nothing to recompute (docs/DESIGN.md, Architecture facts)")
    calls = []
    natural = direct_effect_fast.FastContraction._natural
    monkeypatch.setattr(direct_effect_fast.FastContraction, "_natural",
                        lambda self, *args: calls.append(1) or natural(self, *args))
    mz2 = mz.clone()
    mz2[1, 2] *= 3e4
    fast = corpus_direct_effects(a, ids, mz2, final_norm=final_norm)
    exact = corpus_direct_effects(a, ids, mz2, fast=False, final_norm=final_norm)
    scale = max(1.0, float(np.abs(exact.loss).max()))
    np.testing.assert_allclose(fast.loss, exact.loss, atol=ATOL * scale, rtol=0)
    if final_norm == "frozen":  # (a recomputed final-norm scale shrinks the delta back)
        assert np.abs(exact.loss - exact.base_loss).max() > 100 and calls


@on_core_families
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


@on_core_families
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


@on_core_families
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


@on_core_families
@pytest.mark.parametrize("final_norm", FINAL_NORMS)
def test_chunking_does_not_change_results(setup, final_norm):
    """A tiny memory cap (5 rows of d_vocab logits) forces token chunks and one head per block."""
    _, a, ids, mz, refs = setup
    ref = refs[final_norm]
    mb = 5 * 2 * 4 * a.dims.d_vocab / 2**20
    de = corpus_direct_effects(a, ids, mz, batch_size=2, max_chunk_mb=mb, final_norm=final_norm)
    ab = DirectEffectAblator(a, mz, max_chunk_mb=mb)
    assert ab.block_rows == 5
    rows, width = ab.fastc.blocking(ids.shape[0] * (ids.shape[1] - 1))
    assert rows == 5 and width < a.dims.d_vocab  # several blocks and vocabulary chunks
    np.testing.assert_allclose(de.loss.reshape(len(ref), -1), ref, atol=ATOL, rtol=0)


@on_core_families
@pytest.mark.parametrize("final_norm", FINAL_NORMS)
def test_block_shape_and_threads_do_not_change_results(setup, final_norm, torch_threads):
    """Other block shapes and one worker thread give the same numbers; torch's thread count is
    restored after the multi-threaded contraction."""
    torch_threads(2)  # the default contraction then runs two workers
    _, a, ids, mz, _ = setup
    cap, tg = capture(a, ids, _sel(ids)), ids[:, 1:].reshape(-1)
    threads = torch.get_num_threads()
    base = DirectEffectAblator(a, mz, final_norm=final_norm).run(cap, tg)
    assert torch.get_num_threads() == threads
    for kw in ({"rows": 3, "width": 100, "workers": 2}, {"rows": 7, "width": 300, "workers": 1}):
        other = DirectEffectAblator(a, mz, final_norm=final_norm, **kw).run(cap, tg)
        for x, y in zip(base, other):
            np.testing.assert_allclose(x.numpy(), y.numpy(), atol=ATOL, rtol=0)


@on_core_families
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
        ab = DirectEffectAblator(a, mz, final_norm=fn, fast=False)
        ab.post = False  # wrong on purpose
        loss, *_ = ab.run(capture(a, ids, _sel(ids)), ids[:, 1:].reshape(-1))
        assert np.abs(loss[1, 0].numpy() - ref[0]).max() > 100 * ATOL


@on_core_families
def test_targets_must_match_capture(setup):
    _, a, ids, mz, _ = setup
    cap = capture(a, ids)
    with pytest.raises(ValueError, match="positions"):
        DirectEffectAblator(a, mz).run(cap, torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("key,bad,match", [("compute_dtype", "bf16", r"wild.compute_dtype='bf16'.*float32, bfloat16"),
                                           ("final_norm", "fixed", r"wild.final_norm='fixed'.*frozen, recomputed")])
def test_unknown_option_value_is_rejected(key, bad, match, tokenizer):
    model, tok = make_model("llama", tokenizer)
    a = get_adapter(model)
    ids = _ids(tok, 6)
    mz = mean_z(a, ids, skip_first=False)
    calls = [lambda: DirectEffectAblator(a, mz, **{key: bad}), lambda: corpus_direct_effects(a, ids, mz, **{key: bad}),
             (lambda: direct_effect_fast.check_compute_dtype(bad)) if key == "compute_dtype"
             else (lambda: reference_per_head(a, ids, mz, heads=[(0, 0)], final_norm=bad))]
    for call in calls:
        with pytest.raises(ValueError, match=match):
            call()
    if key == "compute_dtype":  # the exact path ignores it (float32) and says so in the result
        assert corpus_direct_effects(a, ids, mz, fast=False, compute_dtype="bfloat16").compute_dtype == "float32"


@pytest.mark.parametrize("key,default,bad,choices", [("final_norm", "frozen", "fixed", "frozen, recomputed"),
                                                     ("compute_dtype", "float32", "fp8", "float32, bfloat16")])
def test_bad_wild_value_fails_when_the_config_is_composed(key, default, bad, choices):
    """Checked at compose time, before any job starts (not hours into a SLURM run)."""
    from successor_heads.config import ConfigError, build as validate

    base = {"model": {"name": "tiny", "family": "llama", "source": {"kind": "local", "path": "x"}}}
    assert getattr(validate(base).wild, key) == default
    with pytest.raises(ConfigError, match=f"wild.{key}='{bad}': must be one of {choices}"):
        validate({**base, "wild": {key: bad}})


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
