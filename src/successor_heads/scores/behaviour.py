"""Behavioural check (ours, not the paper's; docs/DESIGN.md): how much each head matters for
continuing ordinal lists.

For prompts such as ``"Monday, Tuesday, Wednesday,"`` -> ``" Thursday"``, the drop in the
log-probability of the correct next item when one head is ablated (its ``z``, the input slice
of the attention output projection, replaced by its mean over the prompt positions, or by
zero). Positive drop = the head helps. This is a total effect (the ablation propagates).

Cost: the ablations at layer L leave layers 0..L-1 untouched, so by default each layer's batch of
K ablated copies forks from the clean pass at layer L and runs layers L..end only, alongside the
clean pass (``cached_prefix=True``; about half the work of running the whole model per layer, the
same drops up to float rounding). Each decoder layer is called once per prompt-length group for
all ablations together, so a model streamed from disk reads its layers once per group.

When the tokenizer puts a BOS token first (:func:`prompts_carry_bos`), that position is neither
ablated nor part of the mean: it is the attention sink that later layers read, and ablating a
head there would move it too.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from successor_heads.core.adapters import Adapter
from successor_heads.core.heads import head_label
from successor_heads.core.hooks import contiguous_readout, hooks, mean_z
from successor_heads.core.streaming import readout_modules, resident
from successor_heads.scores import ABLATIONS


@contextlib.contextmanager
def patch_head_z(adapter: Adapter, layer: int, head: int, value: torch.Tensor, start: int = 0):
    """Within the block, head ``head`` of ``layer`` outputs ``value [d_head]`` in place of its ``z``
    at positions ``start`` onwards (``start=1`` leaves a BOS position clean).

    Implemented as a forward pre-hook on the layer's output projection; the hook is removed
    on exit even when the forward pass raises.
    """
    dh = adapter.dims.d_head
    sl = slice(head * dh, (head + 1) * dh)

    def hook(_mod, args):
        z = args[0].clone()
        z[:, start:, sl] = value.to(z.dtype)
        return (z, *args[1:])

    with hooks((adapter.o_proj(layer), "pre", hook)):
        yield


def prompts_carry_bos(tokenizer, prompts: list[dict]) -> bool:
    """True when the tokenizer puts its BOS token first in every prompt (then position 0 is
    left out of the ablation and the mean); False when it adds none (e.g. GPT-2's tokenizer).
    ``prompts`` as for :func:`behavioural_drops`."""
    bos = tokenizer.bos_token_id
    return bos is not None and all(tokenizer(p["prompt"])["input_ids"][:1] == [bos] for p in prompts)


def _group_by_length(tokenizer, prompts: list[dict]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    groups: dict[int, list] = defaultdict(list)
    for p in prompts:
        ids = tokenizer(p["prompt"])["input_ids"]
        groups[len(ids)].append((ids, p["target_id"]))
    return {n: (torch.tensor([g[0] for g in gs]), torch.tensor([g[1] for g in gs])) for n, gs in groups.items()}


@torch.no_grad()
def _target_logprobs(adapter: Adapter, groups, repeat: int = 1) -> torch.Tensor:
    """Log-prob of each prompt's target, ``[repeat, n_prompts]``; every group is run ``repeat``
    times in one batch (copy k is what a hook patches for head k)."""
    out = []
    for ids, tgt in groups.values():
        ids_rep = ids.repeat(repeat, 1).to(adapter.device)
        with contiguous_readout(adapter):
            logits = adapter.model(input_ids=ids_rep, logits_to_keep=1).logits[:, -1].float()
        lp = logits.log_softmax(-1).gather(1, tgt.repeat(repeat).to(logits.device)[:, None])[:, 0]
        out.append(lp.reshape(repeat, -1).cpu())
    return torch.cat(out, 1)


@contextlib.contextmanager
def patch_each_head(adapter: Adapter, layer: int, values: torch.Tensor, heads=None, start: int = 0):
    """For a batch made of ``K`` stacked copies of the same prompts, copy k has head
    ``heads[k]`` of ``layer`` replaced by ``values[k] [d_head]`` (``values [K, d_head]``;
    ``heads`` default: every head, ``K = n_heads``) at positions ``start`` onwards
    (``start=1`` leaves a BOS position clean).

    One forward pass then ablates all those heads of the layer; the hook is removed on exit
    even when the forward pass raises. The batch must be ``K x n_prompts`` rows and ``values``
    must have ``K`` rows, or the forward pass raises RuntimeError (shape mismatch in the hook).
    Ours, not the paper's (docs/DESIGN.md, Behavioural check).
    """
    n_heads, dh = adapter.dims.n_heads, adapter.dims.d_head
    heads = list(range(n_heads)) if heads is None else [int(h) for h in heads]
    k = len(heads)

    def hook(_mod, args):
        z = args[0].clone()
        z_KBPHD = z.view(k, -1, z.shape[-2], n_heads, dh)
        z_KBPHD[torch.arange(k, device=z.device), :, start:, torch.tensor(heads, device=z.device)] = \
            values.to(z.dtype)[:, None, None, :]
        return (z, *args[1:])

    with hooks((adapter.o_proj(layer), "pre", hook)):
        yield


@torch.no_grad()
def behavioural_drops(
    adapter: Adapter, tokenizer, prompts: list[dict], ablation: str = "mean", progress: bool = False,
    heads=None, cached_prefix: bool = True,
) -> tuple[np.ndarray, float]:
    """Mean log-prob drop of the correct successor when each head is ablated.

    Args:
        prompts: dicts with ``prompt`` (str) and ``target_id`` (int), e.g. from
            :func:`successor_heads.core.tasks.ordinal_list_prompts`.
        ablation: ``"mean"`` (mean ``z`` over prompt positions, BOS left out) or ``"zero"``.
        heads: ``(layer, head)`` pairs to ablate; ``None`` ablates every head.
        cached_prefix: ``True`` (default): one clean pass per prompt-length group; the ablated
            batch of layer L (``K x n_prompts`` rows for the K heads of L being checked) forks
            from the residual the clean pass gives layer L and runs layers L..end only, each
            right after its clean call (:class:`_Forks`), then the final norm and unembedding
            of the last position. ``False``: the whole model is run on the
            ablated batch (the original method; kept for comparison and benchmarks). Both give
            the same drops up to float rounding (tests: within 1e-5 nats).

    Returns:
        ``(drops [n_layers, n_heads]`` in nats (NaN for heads not in ``heads``), ``baseline``
        mean log-prob of the target in nats).

    Raises:
        ValueError: no prompts, an unknown ablation, an empty ``heads`` or one out of range.
        RuntimeError: ``cached_prefix=True`` and the cached path does not reproduce the model's
            own clean log-probs on this architecture (checked once, on the smallest group); pass
            ``cached_prefix=False`` to use the full-forward path.
    """
    if not prompts:
        raise ValueError("no ordinal-list prompts: the tokenizer kept no list task with consecutive single tokens")
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation={ablation!r}: must be mean or zero")
    groups = _group_by_length(tokenizer, prompts)
    start = int(prompts_carry_bos(tokenizer, prompts))
    d = adapter.dims
    by_layer = _heads_by_layer(heads, d.n_layers, d.n_heads)
    # float32 sums over the prompt positions (BOS left out): the scores outputs' convention
    means = (mean_z(adapter, (ids for ids, _ in groups.values()), start, accumulate=torch.float32)
             if ablation == "mean" else torch.zeros(d.n_layers, d.n_heads, d.d_head))
    run = _drops_cached_prefix if cached_prefix else _drops_full_forward
    base, lp = run(adapter, groups, by_layer, means, start, progress)
    drops = np.full((d.n_layers, d.n_heads), np.nan)
    for layer, hs in by_layer.items():
        drops[layer, hs] = (base[None] - lp[layer]).mean(1).numpy()
    return drops, float(base.mean())


def _drops_full_forward(adapter: Adapter, groups, by_layer, means, start: int, progress: bool):
    """The original check: per layer, the whole model on ``K x n_prompts`` rows (copy k with
    head ``by_layer[layer][k]`` replaced by its mean). Returns ``(base [n_prompts], {layer:
    logprobs [K, n_prompts]})`` in nats, prompts in group order."""
    base = _target_logprobs(adapter, groups)[0]
    lp = {}
    for layer, hs in tqdm(by_layer.items(), desc="behavioural check (ablating each head)", disable=not progress):
        with patch_each_head(adapter, layer, means[layer, hs].to(adapter.device), hs, start):
            lp[layer] = _target_logprobs(adapter, groups, repeat=len(hs))
    return base, lp


def _drops_cached_prefix(adapter: Adapter, groups, by_layer, means, start: int, progress: bool):
    """As :func:`_drops_full_forward`, in one clean pass per prompt-length group: each ablated
    batch forks from the clean residual entering its layer L and rides along the clean pass
    through layers L..end (:class:`_Forks`), so every decoder layer is called (and, streamed, read
    from disk) once per group for the clean prompts and all ablations together: about
    ``(n_layers + 1) / 2`` of the layers' work per ablated batch instead of all. Returns as
    :func:`_drops_full_forward`.

    Raises:
        RuntimeError: as :func:`behavioural_drops` (the replay check, or a layer not called once).
    """
    base_parts: list[torch.Tensor] = []
    lp_parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in by_layer}
    smallest = min(len(ids) for ids, _ in groups.values())
    checked = False
    layers = adapter.layers()
    bar = tqdm(total=len(groups) * len(layers), desc="behavioural check (ablating each head, cached prefix)",
               disable=not progress)
    for ids, tgt in groups.values():
        check = not checked and len(ids) == smallest  # the cheapest group proves the replay once
        forks = _Forks(adapter, by_layer, means, start, len(ids), check, bar)
        with forks.attached(), contiguous_readout(adapter):
            out = adapter.model(input_ids=ids.to(adapter.device), logits_to_keep=1, use_cache=False)
        forks.check_calls()
        logits = out.logits[:, -1].float()
        base_g = logits.log_softmax(-1).gather(1, tgt.to(logits.device)[:, None])[:, 0].cpu()
        with resident(adapter.model, *readout_modules(adapter)):
            lp = {key: _logprobs_last(adapter, h, tgt.repeat(k)).reshape(k, -1) for key, (h, k) in forks.ends.items()}
        if check:
            _check_replay(adapter, lp.pop(_REPLAY), base_g)
            checked = True
        base_parts.append(base_g)
        for layer in by_layer:
            lp_parts[layer].append(lp[layer])
    bar.close()
    # concatenated in group order, as _target_logprobs does, so the reduction is the same
    return torch.cat(base_parts), {layer: torch.cat(parts, 1) for layer, parts in lp_parts.items()}


# --------------------------------------------------------------------------------------------
# cached prefix: ablated batches fork from the clean pass and ride along it

_REPLAY = "replay"  # the unablated fork from layer 0 that checks the replay


def _hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    """The residual stream a decoder layer received (first positional argument or ``hidden_states=``)."""
    return args[0] if args else kwargs["hidden_states"]


class _Forks:
    """The ablated batches of one prompt-length group (``n`` prompts), carried through the clean
    forward pass by hooks on the decoder layers.

    At decoder layer ``attention_layers[L]`` (L in ``by_layer``) the residual the clean pass gives
    it is stacked ``K`` times (copy k for head ``by_layer[L][k]``) and run through that layer with
    those heads ablated (:func:`patch_each_head`); each later layer, right after its clean call
    (and, streamed, before its weights are freed), runs every open batch with the arguments the
    clean call got (rotary embeddings, the mask of its layer type), repeated along the batch
    (:func:`_repeat_batch`). With ``check``, an unablated 2-copy batch forks at layer 0
    (:func:`_check_replay`). Valid because the layers below L see nothing of an ablation at L
    (causal order of the residual stream).

    Attributes:
        ends: ``{L or "replay": (residual after the last layer at the last position [K * n, 1,
            d_model], K)}`` once the pass is done.
    """

    def __init__(self, adapter: Adapter, by_layer, means, start: int, n: int, check: bool, bar):
        self.adapter, self.by_layer, self.means, self.start, self.n, self.bar = adapter, by_layer, means, start, n, bar
        self.fork_at = {adapter.attention_layers[layer]: layer for layer in by_layer}
        if check:
            self.fork_at.setdefault(0, None)
        self.check = check
        self.open: dict = {}  # key -> (residual [K * n, pos, d_model], K)
        self.memos: dict[int, dict] = defaultdict(dict)  # per K: a mask shared by all layers repeated once
        self.saved: dict[int, torch.Tensor] = {}
        self.calls: dict[int, int] = defaultdict(int)
        self.ends: dict = {}

    @contextlib.contextmanager
    def attached(self):
        layers = self.adapter.layers()
        handles = []
        try:
            for i, layer in enumerate(layers):
                handles.append(layer.register_forward_pre_hook(self._pre(i), with_kwargs=True))
                # prepended: runs before a streamed model's hook frees the layer's weights
                handles.append(layer.register_forward_hook(self._post(i), with_kwargs=True, prepend=True))
            yield
        finally:
            for handle in handles:
                handle.remove()
        self.ends = {key: (h[:, -1:], k) for key, (h, k) in self.open.items()}
        self.open.clear()

    def check_calls(self) -> None:
        """Raises RuntimeError when a decoder layer was not called exactly once in the pass."""
        bad = [i for i in range(len(self.adapter.layers())) if self.calls[i] != 1]
        if bad:
            raise RuntimeError(f"decoder layers {bad} were not called exactly once in a forward pass; "
                               "use behavioural_drops(cached_prefix=False)")

    def _pre(self, i: int):
        def hook(_mod, args, kwargs):
            if i in self.fork_at:  # a copy: never aliased by the layer's in-place ops
                self.saved[i] = _hidden_of(args, kwargs).detach().clone()
        return hook

    def _post(self, i: int):
        def hook(mod, args, kwargs, _out):
            self.calls[i] += 1
            if i in self.saved:
                h = self.saved.pop(i)
                if self.check and i == 0:
                    self.open[_REPLAY] = (h.repeat(2, 1, 1), 2)
                layer = self.fork_at[i]
                if layer is not None:
                    hs = self.by_layer[layer]
                    with patch_each_head(self.adapter, layer, self.means[layer, hs].to(self.adapter.device), hs,
                                         self.start):
                        self.open[layer] = (self._run(mod, h.repeat(len(hs), 1, 1), args, kwargs, len(hs)), len(hs))
            for key, (h, k) in self.open.items():
                if key != self.fork_at.get(i, ()):  # a batch forked here has run this layer already
                    self.open[key] = (self._run(mod, h, args, kwargs, k), k)
            self.bar.update()
        return hook

    def _run(self, layer: nn.Module, h: torch.Tensor, args: tuple, kwargs: dict, k: int) -> torch.Tensor:
        """``layer`` on the ``k``-copy batch ``h [k * n, pos, d_model]`` with the clean call's other
        arguments; its ``forward`` directly, so the layer's own hooks (these, a streamed model's
        load and free) do not fire again; hooks inside it (ablation) do."""
        memo = self.memos[k]
        alibi = kwargs.get("alibi")
        kwargs = _repeat_batch(kwargs, k, self.n, memo)
        if alibi is not None and k > 1 and alibi.shape[0] == self.n * self.adapter.dims.n_heads != self.n:
            # BLOOM's ALiBi bias [n * n_heads, 1, pos], batch-major: one block per prompt
            kwargs["alibi"] = alibi.repeat(k, *([1] * (alibi.dim() - 1)))
        if args:
            out = layer.forward(h, *_repeat_batch(args[1:], k, self.n, memo), **kwargs)
        else:
            out = layer.forward(**{**kwargs, "hidden_states": h})
        return out[0] if isinstance(out, (tuple, list)) else out


def _repeat_batch(x, k: int, n: int, memo: dict):
    """``x`` with every tensor of batch size ``n`` (first dim ``n``, at least 2-D) stacked ``k``
    times along dim 0 (copy j = rows ``j*n .. (j+1)*n - 1``, as ``ids.repeat(k, 1)``), recursing
    into tuples, lists and dicts. Tensors shared by the batch (first dim 1 when ``n > 1``, e.g.
    rotary ``cos``/``sin [1, pos, d_head]``) broadcast and are left alone; so are non-tensors
    (None caches, flags). ``memo`` (by ``id``) repeats a mask shared by all layers only once."""
    if torch.is_tensor(x):
        if x.dim() >= 2 and x.shape[0] == n and k > 1:
            if id(x) not in memo:
                memo[id(x)] = (x, x.repeat(k, *([1] * (x.dim() - 1))))  # keep x alive: ids stay unique
            return memo[id(x)][1]
        return x
    if isinstance(x, tuple):
        return tuple(_repeat_batch(v, k, n, memo) for v in x)
    if isinstance(x, list):
        return [_repeat_batch(v, k, n, memo) for v in x]
    if isinstance(x, dict):
        return {key: _repeat_batch(v, k, n, memo) for key, v in x.items()}
    return x


def _logprobs_last(adapter: Adapter, h_last: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Log-prob of ``tgt [B]`` from the last-position residual ``h_last [B, 1, d_model]`` after the
    last layer: final norm, the model's output embedding, the logit scale (:attr:`Adapter.logit_scale`,
    Cohere) and the final logit soft-cap (:attr:`Adapter.logit_softcap`, Gemma 2/3) when set, as
    the causal-LM heads do.
    ``[B]`` float32 on CPU."""
    logits = adapter.model.get_output_embeddings()(adapter.final_norm()(h_last))
    if adapter.logit_scale is not None:  # Cohere: logits times logit_scale
        logits = logits * adapter.logit_scale
    cap = adapter.logit_softcap
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    logits = logits[:, -1].float()
    return logits.log_softmax(-1).gather(1, tgt.to(logits.device)[:, None])[:, 0].cpu()


def _check_replay(adapter: Adapter, lp: torch.Tensor, base: torch.Tensor) -> None:
    """The unablated 2-copy fork from layer 0 (``lp [2, n]``) must give the model's own clean
    log-probs ``base [n]``; else the architecture passes something to its layers (or after them)
    that the forks do not reproduce.

    Raises:
        RuntimeError: the replay differs by more than float rounding.
    """
    dtype = next(adapter.model.parameters()).dtype  # a streamed model's meta parameters carry the run's dtype
    tol = 1e-3 if dtype == torch.float32 else 5e-2
    err = float((lp - base[None]).abs().max())
    if not err <= tol:
        raise RuntimeError(
            f"the cached-prefix behavioural check does not reproduce the clean log-probs of this "
            f"{adapter.family} model (max difference {err:.3g} nats > {tol}); "
            "use behavioural_drops(cached_prefix=False)")


def _heads_by_layer(heads, n_layers: int, n_heads: int) -> dict[int, list[int]]:
    if heads is None:
        return {layer: list(range(n_heads)) for layer in range(n_layers)}
    out: dict[int, set] = defaultdict(set)
    for layer, head in heads:
        if not (0 <= int(layer) < n_layers and 0 <= int(head) < n_heads):
            raise ValueError(f"head {head_label(layer, head)} is outside this model ({n_layers} layers x {n_heads} heads)")
        out[int(layer)].add(int(head))
    if not out:
        raise ValueError("heads=[]: give at least one (layer, head) or None for every head")
    return {layer: sorted(out[layer]) for layer in sorted(out)}
