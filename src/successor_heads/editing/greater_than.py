"""Greater-than bias of the successor head, from weights (paper, Section 3 / Appendix on the
greater-than bias; docs/DESIGN.md "Greater-than bias").

The paper observes that the successor head's OV circuit, fed a number token ``n``, favours
tokens *larger* than ``n``, while the MLP0 representation read directly through the
unembedding does not. We measure it per numeric token ``n`` of each numeric task (numbers by
value; number words one..twenty by value), on two paths:

* ``head``: ``unembed(OV_h(MLP0(W_E[n])))`` (the successor head's effective OV circuit),
* ``mlp0``: ``unembed(MLP0(W_E[n]))`` (the direct path through MLP0 alone),

each with ``norms`` as in :mod:`successor_heads.scores.successor_score`; the head's OV circuit has no value
bias unless ``value_bias`` (config ``scores.value_bias``) asks for ``b_V W_O``. Logits are restricted to the task's
tokens and turned into a distribution with a softmax; then

* ``share_greater`` / ``share_smaller`` / ``share_self``: the mass on tokens whose value is
  greater than / smaller than / equal to ``n``;
* ``greater_share = share_greater / (share_greater + share_smaller)``: of the mass that moves
  away from ``n``, the fraction that goes up. 1.0 = always up, 0.0 = always down.

**Summary number per model and path** (``greater_share``): the mean of ``greater_share`` over
tokens that have both a greater and a smaller token in their task (the first and last token are
left out, where one side is empty). Beside it, ``chance``: the same mean for a uniform
distribution (``#greater / (#greater + #smaller)``, 0.5 for a contiguous range), and
``greater_minus_smaller``: the mean of ``share_greater - share_smaller`` over the same tokens.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from successor_heads.core import plots
from successor_heads.core.adapters import Adapter
from successor_heads.core.effective_embedding import mlp0_embeddings
from successor_heads.core.ov import head_task_logits, task_logits

NUMERIC_FAMILIES = ("numbers", "number_words")
PATHS = ("head", "mlp0")


def shares(logits: torch.Tensor, values) -> dict[str, np.ndarray]:
    """Softmax shares above/below each token's own value.

    Shapes: ``logits [n_tokens, n_tokens]`` (row: input token ``n``; column: output token, both
    in the order of ``values``), ``values [n_tokens]`` -> dict of ``[n_tokens]`` arrays
    ``share_greater, share_smaller, share_self, greater_share`` (NaN where both shares are 0)
    and ``n_greater, n_smaller`` (token counts).
    Raises: ValueError if the shapes disagree.
    """
    v = torch.as_tensor(np.asarray(values, dtype=float))
    if logits.ndim != 2 or logits.shape != (len(v), len(v)):
        raise ValueError(f"logits must be [n_tokens, n_tokens] = [{len(v)}, {len(v)}], got {tuple(logits.shape)}")
    p = logits.double().softmax(-1)
    gt, lt = v[None, :] > v[:, None], v[None, :] < v[:, None]
    g, s = (p * gt).sum(-1), (p * lt).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gs = (g / (g + s)).numpy()
    return {"share_greater": g.numpy(), "share_smaller": s.numpy(), "share_self": (1 - g - s).numpy(),
            "greater_share": gs, "n_greater": gt.sum(-1).numpy(), "n_smaller": lt.sum(-1).numpy()}


@torch.no_grad()
def greater_than(adapter: Adapter, layer: int, head: int, tasks, norms: str = "raw",
                 families=NUMERIC_FAMILIES, value_bias: bool = False) -> pd.DataFrame:
    """Per-token greater-than shares on both paths (see module docstring).

    Args:
        tasks: from :func:`successor_heads.core.tasks.build_tasks`; tasks of ``families`` with at
            least 2 tokens are used (their ``index`` is the value for numbers and number words).
        value_bias: add ``b_V W_O`` on the ``head`` path (``scores.value_bias``; default False,
            the paper's circuit). The ``mlp0`` path has no head, so it is unaffected.

    Returns: DataFrame, one row per (path, task, token): ``path, task, family, value, token,
    share_greater, share_smaller, share_self, greater_share, chance, both_sides``.
    Raises: ValueError when no task of ``families`` has 2 or more tokens.
    """
    frames = []
    for task in tasks:
        if task.family not in families or len(task.token_ids) < 2:
            continue
        x = mlp0_embeddings(adapter, task.token_ids, norms)
        ids = torch.tensor(task.token_ids)
        for path in PATHS:
            if path == "head":
                logits = head_task_logits(adapter, layer, head, x, ids, norms, value_bias)
            else:
                logits = task_logits(adapter, x, ids, norms)
            sh = shares(logits, task.index)
            ng, ns = sh.pop("n_greater"), sh.pop("n_smaller")
            frames.append(pd.DataFrame({"path": path, "task": task.name, "family": task.family,
                                        "value": task.index, "token": task.tokens, **sh,
                                        "chance": ng / np.maximum(ng + ns, 1),
                                        "both_sides": (ng > 0) & (ns > 0)}))
    if not frames:
        raise ValueError(f"no task of families {list(families)} kept 2 or more single tokens: "
                         "the greater-than bias needs numeric tokens")
    return pd.concat(frames, ignore_index=True)


def summarise(df: pd.DataFrame) -> dict:
    """Per path: ``greater_share`` (headline), ``chance``, ``greater_minus_smaller``, ``n_tokens``,
    over rows with ``both_sides``, pooled over tasks; also per family. Input: :func:`greater_than`'s output."""
    out: dict = {}
    d = df[df.both_sides]
    for path, g in d.groupby("path"):
        entry = {"greater_share": float(g.greater_share.mean()), "chance": float(g.chance.mean()),
                 "greater_minus_smaller": float((g.share_greater - g.share_smaller).mean()),
                 "n_tokens": len(g)}
        for fam, gf in g.groupby("family"):
            entry[f"greater_share_{fam}"] = float(gf.greater_share.mean())
        out[path] = entry
    return out


def plot(df: pd.DataFrame, title: str, path) -> None:
    """``greater_share`` over the token value ``n``, one panel per family, head (solid) and MLP0
    (dashed), the uniform-distribution chance in grey. Writes ``path`` atomically."""
    import matplotlib.pyplot as plt

    fams = [f for f in NUMERIC_FAMILIES if f in set(df.family)] or sorted(set(df.family))
    fig, axes = plt.subplots(1, len(fams), figsize=(5.2 * len(fams), 3.4), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        d = df[(df.family == fam) & df.both_sides]
        for k, (task, g) in enumerate(d.groupby("task")):
            for route, ls in (("head", "-"), ("mlp0", "--")):
                gp = g[g.path == route].sort_values("value")
                ax.plot(gp.value, gp.greater_share, ls, color=f"C{k}", lw=1.2, marker=".", ms=3,
                        label=f"{route}: {task}")
            gc = g[g.path == "head"].sort_values("value")
            ax.plot(gc.value, gc.chance, ":", color="grey", lw=0.8)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"n ({fam}, by value)")
        ax.set_ylabel("share of off-n mass on tokens > n")
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    plots.save(fig, path)
