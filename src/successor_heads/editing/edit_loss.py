"""What a feature edit does inside the real forward pass, and to the loss (paper, Section 3.2
"vector arithmetic" carried into the model, and docs/DESIGN.md "Editing and loss").

The weight-level edit of :mod:`successor_heads.editing.vector_arithmetic` is applied to the model's own
activations: a forward hook on layer 0's MLP adds ``-a f_i + a f_j`` to its output at chosen
(batch, position) pairs, with ``a`` from :func:`~successor_heads.editing.vector_arithmetic.edit_vectors`
computed on the activation being edited (``projection``: ``scale * |<mlp0_out, f_i>|``). The
hook sits where the directions live: on ``adapter.mlp(0)``'s output, except with
``norms="applied"`` on a model with a post-MLP norm (Gemma3), where the MLP0 space of the
features is the post-norm output and the hook sits on that norm. Hooks are removed on exit,
even when the forward pass raises.

Two measurements:

* **Ordinal-list prompts** (``"Monday, Tuesday, Wednesday,"`` -> ``" Thursday"``, months,
  number words, letters, numbers; :func:`successor_heads.core.tasks.ordinal_list_prompts`): the last
  list item (residue ``i``) is edited towards residue ``j``; the *edited successor* is the
  successor of the item with residue ``j`` in the same cycle (as in vector arithmetic). We
  report the next-token loss of the original target and of the edited successor, before and
  after, and how often the model's top next token is the edited successor.
* **Natural text** (the configured corpus, default CPython's ``pydoc_data.topics``): the edit
  ``i -> (i + shift) mod m`` is applied at *every* token of residue class ``i`` (task tokens of
  the families with modulus ``m``), and the change in per-token next-token loss is measured
  over the whole corpus, at the edited positions, and at the later positions of edited contexts,
  so side effects are visible.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from successor_heads.core.adapters import Adapter
from successor_heads.core.hooks import contiguous_readout, hooks
from successor_heads.core.streaming import pass_size, sequence_mb
from successor_heads.core.tasks import ordinal_list_prompts
from successor_heads.editing.vector_arithmetic import DEFAULT_MODULI, edit_pairs, edit_vectors, task_values


def edit_site(adapter: Adapter, norms: str = "raw") -> torch.nn.Module:
    """The module whose output the edit is added to: ``adapter.mlp_out(0)`` (the MLP, or OPT's
    ``fc2``), or layer 0's post-MLP norm when ``norms == "applied"`` and the model has one
    (Gemma 2/3, OLMo-2)."""
    post = adapter.mlp_out_norm(0)
    return post if (norms == "applied" and post is not None) else adapter.mlp_out(0)


@contextlib.contextmanager
def edit_mlp0(adapter: Adapter, batch_idx, pos_idx, f_from: torch.Tensor, f_to: torch.Tensor,
              scale: float, ref: str = "projection", norms: str = "raw"):
    """Within the block, MLP0's output at ``(batch_idx[k], pos_idx[k])`` becomes
    ``out - a f_from[k] + a f_to[k]`` (``a`` per :func:`~successor_heads.editing.vector_arithmetic.edit_vectors`).

    Shapes: ``batch_idx, pos_idx [n_edits]`` (int), ``f_from, f_to [n_edits, d_model]`` (unit
    rows). A forward hook on :func:`edit_site`; removed on exit even when the forward pass raises.

    Raises: ValueError when the lengths disagree or ``d_model`` does not match the model.
    """
    b = torch.as_tensor(batch_idx, dtype=torch.long).flatten()
    p = torch.as_tensor(pos_idx, dtype=torch.long).flatten()
    if not (len(b) == len(p) == f_from.shape[0] == f_to.shape[0]):
        raise ValueError(f"edit lengths differ: batch_idx {len(b)}, pos_idx {len(p)}, "
                         f"f_from {f_from.shape[0]}, f_to {f_to.shape[0]}")
    if f_from.shape[-1] != adapter.dims.d_model or f_to.shape[-1] != adapter.dims.d_model:
        raise ValueError(f"directions have d_model={f_from.shape[-1]}, the model has {adapter.dims.d_model}")

    n_pos = {}

    def hook(_mod, _inputs, out):
        t = out[0] if isinstance(out, tuple) else out
        t = t.clone()
        rows = (b, p) if t.dim() == 3 else (b * n_pos["P"] + p,)  # OPT's MLP runs on [batch * pos] rows
        v = t[rows].float()
        t[rows] = edit_vectors(v, f_from.to(v), f_to.to(v), scale, ref).to(t.dtype)
        return (t, *out[1:]) if isinstance(out, tuple) else t

    with hooks((adapter.model.get_input_embeddings(), "forward", lambda _m, _i, e: n_pos.update(P=e.shape[1])),
               (edit_site(adapter, norms), "forward", hook)):
        yield


def _spread(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """At most ``k`` rows of ``df``, evenly spaced, first and last included (deterministic)."""
    if len(df) <= k:
        return df
    return df.iloc[sorted({round(q * (len(df) - 1) / max(k - 1, 1)) for q in range(k)})]


def prompt_cases(tokenizer, tasks, moduli: Mapping | None = None, residue_of: str = "position",
                 n_items: int = 3, max_per_family: int = 12, max_targets: int = 3) -> list[dict]:
    """Edit cases on ordinal-list prompts (see module docstring).

    Returns: list of dicts ``prompt, ids`` (``tokenizer(prompt)`` with its special tokens),
    ``task, family, modulus, pos`` (position of the last list item in ``ids``), ``i, j``,
    ``item, target, target_id`` (the true next token), ``new, new_id`` (the edited successor).
    At most ``max_targets`` residues ``j`` per prompt, spread evenly (deterministic).
    Raises: ValueError as :func:`successor_heads.core.tasks.ordinal_list_prompts`.
    """
    moduli = dict(DEFAULT_MODULI if moduli is None else moduli)
    by_name = {t.name: t for t in tasks}
    out = []
    for pr in ordinal_list_prompts(tokenizer, tasks, n_items, max_per_family):
        task = by_name[pr["task"]]
        m = moduli.get(task.family) or 0
        if m < 2:
            continue
        kt = task.token_ids.index(pr["target_id"])
        k = task.successor.index(kt)  # the last list item
        ids = list(tokenizer(pr["prompt"])["input_ids"])
        where = [q for q, t in enumerate(ids) if t == task.token_ids[k]]
        if not where:
            continue
        pairs = edit_pairs(task, m, residue_of)
        pairs = pairs[(pairs.src == k) & (pairs.succ != kt)]
        for _, r in _spread(pairs, max_targets).iterrows():
            out.append({"prompt": pr["prompt"], "ids": ids, "task": task.name, "family": task.family,
                        "modulus": m, "pos": where[-1], "i": int(r.i), "j": int(r.j),
                        "item": task.tokens[k], "target": pr["target"], "target_id": int(pr["target_id"]),
                        "new": task.tokens[int(r.succ)], "new_id": int(task.token_ids[int(r.succ)])})
    return out


@torch.no_grad()
def prompt_edit_loss(adapter: Adapter, cases: list[dict], directions: Mapping, scale: float,
                     ref: str = "projection", norms: str = "raw", batch_rows: int = 64,
                     progress: bool = False) -> pd.DataFrame:
    """Run each case of :func:`prompt_cases` with and without the edit, for every direction source.

    Prompts of equal token length share forward passes (at most ``batch_rows`` sequences each);
    only the last position's logits are computed.

    Args:
        directions: ``{(source, m): [m, d_model]}`` (see
            :func:`successor_heads.editing.vector_arithmetic.load_directions`).

    Returns: one row per (case, source): the case's fields (without ``ids``) plus ``source``,
    ``loss_target_before/after`` and ``loss_new_before/after`` (nats, next-token cross-entropy),
    ``top_before/top_after`` (argmax token ids over the vocabulary), ``new_top_before/after``,
    ``target_top_before/after`` (bool). Cases whose ``f_i`` or ``f_j`` is NaN are skipped.
    """
    groups: dict[str, list[dict]] = {}
    for c in cases:
        groups.setdefault(c["prompt"], []).append(c)
    # one spec per sequence to run: (ids, edit or None, token ids whose log-prob is kept)
    specs, base_of, edits = [], {}, []
    for prompt, cs in groups.items():
        es = [(c, src, f) for c in cs for (src, m), f in directions.items()
              if m == c["modulus"] and not torch.isnan(f[[c["i"], c["j"]]]).any()]
        if not es:
            continue
        base_of[prompt] = len(specs)
        specs.append((cs[0]["ids"], None, {t for c, _, _ in es for t in (c["target_id"], c["new_id"])}))
        for c, src, f in es:
            edits.append((len(specs), c, src))
            specs.append((c["ids"], (c["pos"], f[c["i"]], f[c["j"]]), {c["target_id"], c["new_id"]}))
    kept: list[dict] = [{} for _ in specs]
    top = [0] * len(specs)
    by_len: dict[int, list[int]] = {}
    for r, sp in enumerate(specs):
        by_len.setdefault(len(sp[0]), []).append(r)
    longest = max((len(sp[0]) for sp in specs), default=1)
    batch_rows = pass_size(adapter.model, batch_rows, len(specs), sequence_mb(adapter, longest))  # streamed: more per pass
    chunks = [rs[k:k + batch_rows] for rs in by_len.values() for k in range(0, len(rs), batch_rows)]
    for rs in tqdm(chunks, desc="edit -> loss (prompts)", disable=not progress):
        ids = torch.tensor([specs[r][0] for r in rs], device=adapter.device)
        ed = [(k, specs[r][1]) for k, r in enumerate(rs) if specs[r][1] is not None]
        ctx = contextlib.nullcontext()
        if ed:
            ctx = edit_mlp0(adapter, [k for k, _ in ed], [e[0] for _, e in ed], torch.stack([e[1] for _, e in ed]),
                            torch.stack([e[2] for _, e in ed]), scale, ref, norms)
        with ctx, contiguous_readout(adapter):
            lp = adapter.model(input_ids=ids, logits_to_keep=1).logits[:, -1].float().log_softmax(-1).cpu()
        for k, r in enumerate(rs):
            top[r] = int(lp[k].argmax())
            kept[r] = {t: float(lp[k, t]) for t in specs[r][2]}
    rows = []
    for r, c, src in edits:
        b = base_of[c["prompt"]]
        t, n = c["target_id"], c["new_id"]
        row = {k: v for k, v in c.items() if k != "ids"}
        row.update(source=src, loss_target_before=-kept[b][t], loss_target_after=-kept[r][t],
                   loss_new_before=-kept[b][n], loss_new_after=-kept[r][n], top_before=top[b], top_after=top[r],
                   new_top_before=top[b] == n, new_top_after=top[r] == n,
                   target_top_before=top[b] == t, target_top_after=top[r] == t)
        rows.append(row)
    return pd.DataFrame(rows)


def residue_classes(tasks, moduli: Mapping | None = None, families=None,
                    residue_of: str = "position") -> dict[int, dict[int, int]]:
    """``{m: {token_id: residue}}`` over the tasks of ``families`` (default: every family in
    ``moduli``), for marking corpus tokens by class. A token claimed by two classes of the same
    modulus keeps the first (task order of ``build_tasks``)."""
    moduli = dict(DEFAULT_MODULI if moduli is None else moduli)
    out: dict[int, dict[int, int]] = {}
    for task in tasks:
        m = moduli.get(task.family) or 0
        if m < 2 or (families is not None and task.family not in families) or task.held_out:
            continue
        cls = out.setdefault(m, {})
        for tid, v in zip(task.token_ids, task_values(task, residue_of)):
            cls.setdefault(int(tid), v % m)
    return out


@torch.no_grad()
def token_losses(adapter: Adapter, tokens: torch.Tensor, batch_size: int = 8, edit=None,
                 base: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
    """Next-token cross-entropy ``[n_contexts, context_len - 1]`` (nats, float32) of ``tokens
    [n_contexts, context_len]``.

    ``edit`` (optional) is ``(batch_idx, pos_idx, f_from, f_to, scale, ref, norms)`` for
    :func:`edit_mlp0`, ``batch_idx`` indexing rows of ``tokens``. With ``base`` (the unedited
    losses of the same rows), logits are computed only from each batch's first edited position
    on (the model is causal, so earlier predictions are unchanged and are copied from ``base``).
    ``progress``: a bar over the batches.
    """
    out = []
    # a streamed model: as many rows per pass as fit, so each decoder layer is read once per pass
    batch_size = pass_size(adapter.model, batch_size, tokens.shape[0], sequence_mb(adapter, tokens.shape[1], True))
    for s in tqdm(range(0, tokens.shape[0], batch_size), desc="edit -> loss (corpus)", disable=not progress):
        chunk = tokens[s:s + batch_size].to(adapter.device)
        ctx, p0 = contextlib.nullcontext(), 0
        if edit is not None:
            b, p, ff, ft, scale, ref, norms = edit
            sel = (b >= s) & (b < s + len(chunk))
            ctx = edit_mlp0(adapter, b[sel] - s, p[sel], ff[sel], ft[sel], scale, ref, norms)
            if base is not None and sel.any():
                p0 = min(int(p[sel].min()), chunk.shape[1] - 2)
        with ctx, contiguous_readout(adapter):
            logits = adapter.model(input_ids=chunk, logits_to_keep=chunk.shape[1] - p0).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), chunk[:, p0 + 1:], reduction="none").cpu()
        if p0:
            loss = torch.cat([base[s:s + len(chunk), :p0], loss], 1)
        out.append(loss)
    return torch.cat(out)


def corpus_edit_loss(adapter: Adapter, tokens: torch.Tensor, classes: Mapping, directions: Mapping,
                     shift: int = 1, scale: float = 1.0, ref: str = "projection", norms: str = "raw",
                     sources=None, batch_size: int = 8, progress: bool = False) -> pd.DataFrame:
    """Loss change on natural text when every token of residue class ``i`` is edited to ``j = (i + shift) mod m``.

    Args:
        tokens: ``[n_contexts, context_len]`` corpus contexts (:func:`successor_heads.core.corpus.load_corpus`).
        classes: ``{m: {token_id: residue}}`` from :func:`residue_classes`.
        directions: ``{(source, m): [m, d_model]}``; ``sources`` restricts the sources used.

    Returns: one row per (source, m, i) with edited tokens present: ``source, modulus, i, j,
    n_edits, n_contexts_edited, base_loss`` (mean over the corpus), ``delta_loss_all`` (mean
    change over every prediction of the corpus), ``delta_loss_at_edit`` (predictions made at
    edited positions), ``delta_loss_later`` (other predictions after the first edit of an
    edited context). Losses in nats.
    Raises: ValueError if ``shift % m == 0`` for a modulus used.
    """
    base = token_losses(adapter, tokens, batch_size)
    n_pred = base.numel()
    jobs = [(src, m, f) for (src, m), f in directions.items()
            if m in classes and (sources is None or src in sources)]
    # every class's edited contexts are stacked and run together (one pass per batch of rows, so a
    # streamed model reads each decoder layer once per batch, not once per class)
    runs, ctx_rows, edits = [], [], []
    n_rows = 0
    for src, m, f in jobs:
        if shift % m == 0:
            raise ValueError(f"editing.corpus_shift={shift} is a multiple of modulus {m}: the edit would be empty")
        lut = torch.full((int(tokens.max()) + 1,), -1, dtype=torch.long)
        for tid, r in classes[m].items():
            if tid < len(lut):
                lut[tid] = r
        res = lut[tokens]
        for i in range(m):
            j = (i + shift) % m
            mask = res == i
            if not mask.any() or torch.isnan(f[[i, j]]).any():
                continue
            ctx = mask.any(1).nonzero()[:, 0]
            b, p = mask[ctx].nonzero(as_tuple=True)
            n = len(b)
            runs.append((src, m, i, j, ctx, b, p, n_rows))
            ctx_rows.append(ctx)
            edits.append((b + n_rows, p, f[i].expand(n, -1), f[j].expand(n, -1)))
            n_rows += len(ctx)
    rows = []
    if runs:
        ctx_all = torch.cat(ctx_rows)
        b, p, ff, ft = (torch.cat(parts) for parts in zip(*edits))
        losses = token_losses(adapter, tokens[ctx_all], batch_size, (b, p, ff, ft, scale, ref, norms), base[ctx_all],
                              progress)
    for src, m, i, j, ctx, b, p, r0 in runs:
        delta = losses[r0:r0 + len(ctx)] - base[ctx]
        n = len(b)
        at = torch.zeros_like(delta, dtype=torch.bool)
        keep = p < delta.shape[1]
        at[b[keep], p[keep]] = True
        first = torch.zeros(len(ctx), dtype=torch.long).scatter_reduce(0, b, p, "amin", include_self=False)
        later = (torch.arange(delta.shape[1])[None] > first[:, None]) & ~at
        rows.append({"source": src, "modulus": m, "i": i, "j": j, "n_edits": n,
                     "n_contexts_edited": len(ctx), "base_loss": float(base.mean()),
                     "delta_loss_all": float(delta.sum() / n_pred),
                     "delta_loss_at_edit": float(delta[at].mean()) if at.any() else float("nan"),
                     "delta_loss_later": float(delta[later].mean()) if later.any() else float("nan")})
    return pd.DataFrame(rows, columns=["source", "modulus", "i", "j", "n_edits", "n_contexts_edited", "base_loss",
                                       "delta_loss_all", "delta_loss_at_edit", "delta_loss_later"])


def summarise_prompts(df: pd.DataFrame) -> dict:
    """Per source (and per source x family): ``n``, mean ``delta_loss_target`` and
    ``delta_loss_new`` (after - before, nats), ``new_top_before/after`` and
    ``target_top_before/after`` rates. Input: :func:`prompt_edit_loss`'s output."""
    out: dict = {}
    if not len(df):
        return out

    def stats(g):
        return {"n": len(g),
                "delta_loss_target": float((g.loss_target_after - g.loss_target_before).mean()),
                "delta_loss_new": float((g.loss_new_after - g.loss_new_before).mean()),
                "new_top_before": float(g.new_top_before.mean()), "new_top_after": float(g.new_top_after.mean()),
                "target_top_before": float(g.target_top_before.mean()),
                "target_top_after": float(g.target_top_after.mean())}

    for src, g in df.groupby("source"):
        out[src] = stats(g)
        out[src]["by_family"] = {fam: stats(gf) for fam, gf in g.groupby("family")}
    return out


def summarise_corpus(df: pd.DataFrame) -> dict:
    """Per source: total ``n_edits``, the summed ``delta_loss_all`` (each class edited on its own,
    so this is the sum of separate experiments), the edit-weighted mean ``delta_loss_at_edit``,
    and the worst class. Input: :func:`corpus_edit_loss`'s output."""
    out = {}
    for src, g in df.groupby("source"):
        w = g.n_edits / g.n_edits.sum()
        worst = g.loc[g.delta_loss_all.idxmax()]
        out[src] = {"n_classes": len(g), "n_edits": int(g.n_edits.sum()),
                    "sum_delta_loss_all": float(g.delta_loss_all.sum()),
                    "mean_delta_loss_at_edit": float(np.nansum(w * g.delta_loss_at_edit)),
                    "worst_class": f"mod{int(worst.modulus)} {int(worst.i)}->{int(worst.j)}",
                    "worst_delta_loss_all": float(worst.delta_loss_all)}
    return out
