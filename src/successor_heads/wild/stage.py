"""Stage ``wild``: successor heads in the wild (paper Section 4.3 and Appendix J; docs/DESIGN.md,
In the wild).

Direct-effect mean ablation of every head on natural-text contexts (paper: 128 x 512 tokens of
The Pile; embedded default: 16 x 128 tokens of CPython's reference text, so the main command
stays quick on two cores), which head wins each token, the categories of the successor head's
winning tokens, and numbered-listing prompts.

Outputs (:data:`successor_heads.core.layout.OUTPUTS` ``["wild"]``, in ``results/{model}/wild/``;
layout names in brackets): ``direct_effect.h5`` (``h5``: per-token losses ``[n_layers, n_heads,
n_tokens]``, baseline ``[n_tokens]``, token ids, context index, mean ``z``), ``winners.csv``
(``winners``: the successor head's winning tokens with context and category),
``categories.csv`` (``categories``: shares per category, the paper's beside them),
``head_wins.csv`` (``head_wins``: tokens won per head), ``listings.csv`` (``listings``),
``loss_increase_heatmap.png`` (``heatmap``), ``category_shares.png`` (``shares``),
``wild_summary.json`` (``summary``). ``wild.final_norm`` (default ``frozen``: the
final norm's scale of the clean run, as in the paper's direct effect; ``recomputed``: the
norm recomputed on the ablated residual) and ``wild.compute_dtype`` (default ``float32``;
``bfloat16``: the per-head logit change in bfloat16 on the fast path) are recorded in the h5
attributes and the summary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from successor_heads.core import plots
from successor_heads.core.heads import flat_head_label, head_label
from successor_heads.core.paper import paper_number
from successor_heads.core.corpus import load_corpus
from successor_heads.wild.direct_effect import corpus_direct_effects, mean_z
from successor_heads.core.h5io import provenance, write_h5
from successor_heads.wild.listings import listing_direct_effects, listing_prompts
from successor_heads.core.loading import open_for_stage
from successor_heads.core.tasks import build_tasks
from successor_heads.wild.winners import (CATEGORIES, PAPER_SHARES, SuccessionIndex, categorise, effects, token_strings,
                       win_counts, winning_heads)
from successor_heads.core.handoff import load_top_heads
from successor_heads.core.writers import SIGNIFICANT5, write_csv, write_json

log = logging.getLogger(__name__)

#: the paper's corpus (``value``: its name; ``setting``: ``n_contexts``, ``context_len``)
PAPER_CORPUS = paper_number("wild", "corpus")
PAPER = {**PAPER_CORPUS.setting, "head": paper_number("wild", "winning_token_shares").model,
         "listing_wins": paper_number("wild", "listing_wins").value, "shares": PAPER_SHARES}


def _winner_rows(tok, tokens: np.ndarray, de, win: dict, eff: dict, heads, n_heads: int, index, chars: int):
    rows, cache = [], {}
    for crit in ("loss", "logit"):
        for layer, head in heads:
            flat = layer * n_heads + head
            for k in np.flatnonzero(win[crit] == flat):
                c, p = int(de.context_index[k]), int(de.position[k])
                if c not in cache:
                    cache[c] = token_strings(tok, tokens[c].tolist())
                strs = cache[c]
                ctx, target = strs[: p + 1], strs[p + 1]
                e = eff[crit][:, :, k].reshape(-1)
                runner = np.argsort(-e)[1]
                rows.append({"criterion": crit, "head": head_label(layer, head), "token": int(k), "context_index": c,
                             "position": p, "target_id": int(de.target_ids[k]), "target": target,
                             "context": "".join(ctx)[-chars:], "category": categorise(ctx, target, index),
                             "effect": float(e[flat]), "runner_up": flat_head_label(runner, n_heads),
                             "runner_up_effect": float(e[runner]), "base_loss": float(de.base_loss[k]),
                             "loss_increase": float(de.loss[layer, head, k] - de.base_loss[k])})
    return pd.DataFrame(rows, columns=["criterion", "head", "token", "context_index", "position", "target_id", "target",
                                       "context", "category", "effect", "runner_up", "runner_up_effect", "base_loss",
                                       "loss_increase"])


def _category_table(winners: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for crit in ("loss", "logit"):
        sub = winners[winners.criterion == crit]
        for cat in CATEGORIES:
            n = int((sub.category == cat).sum())
            rows.append({"criterion": crit, "category": cat, "n_tokens": n, "share": n / len(sub) if len(sub) else 0.0,
                         "paper_share": PAPER_SHARES.get(cat, np.nan)})
    return pd.DataFrame(rows)


def _heatmap_figure(panels: dict[str, np.ndarray], heads, title: str, path) -> None:
    """Layer-by-head panels ``[n_layers, n_heads]``, each on its own colour scale; the successor
    head(s) boxed in red."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n_layers, n_heads = next(iter(panels.values())).shape
    fig, axes = plt.subplots(1, len(panels), squeeze=False, layout="constrained",
                             figsize=(1.2 + len(panels) * max(2.5, 0.35 * n_heads + 1.2), max(3, 0.22 * n_layers + 1.2)))
    for ax, (name, m) in zip(axes[0], panels.items()):
        im = ax.imshow(m, aspect="auto", origin="lower", cmap="viridis")
        for layer, head in heads:
            ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.suptitle(title, fontsize=9)
    plots.save(fig, path)


def _category_figure(table: pd.DataFrame, title: str, path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    x = np.arange(len(CATEGORIES))
    series = []
    for c in ("loss", "logit"):
        sub = table[table.criterion == c].set_index("category")
        series.append((f"ours, {c} criterion (n={int(sub.n_tokens.sum())})", sub.share.reindex(CATEGORIES).values))
    series.append((f"paper ({PAPER['head']})", np.array([PAPER_SHARES.get(c, np.nan) for c in CATEGORIES])))
    for i, (label, vals) in enumerate(series):
        ax.bar(x + (i - 1) * 0.27, np.nan_to_num(vals), width=0.27, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(CATEGORIES)
    ax.set_ylabel("share of the head's winning tokens")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    plots.save(fig, path)


def _listing_table(prompts, ls: dict, head: tuple[int, int], n_heads: int, min_effect: float) -> pd.DataFrame:
    """One row per listing prompt: winner per criterion and whether it is the successor ``head``."""
    leff = effects(ls["loss"], ls["base_loss"], ls["target_logit"], ls["base_logit"])
    lwin = {c: winning_heads(e, min_effect) for c, e in leff.items()}
    sflat = head[0] * n_heads + head[1]
    rows = []
    for i, lp in enumerate(prompts):
        row = {"prompt": lp.prompt, "target": lp.target, "target_id": int(ls["target_ids"][i]), "style": lp.style,
               "n_items": lp.n_items, "item_set": lp.item_set, "base_loss": float(ls["base_loss"][i])}
        for c in ("loss", "logit"):
            wf = int(lwin[c][i])
            row[f"winner_{c}"] = flat_head_label(wf, n_heads) if wf >= 0 else "none"
            row[f"successor_head_wins_{c}"] = wf == sflat
            row[f"successor_head_effect_{c}"] = float(leff[c].reshape(-1, len(prompts))[sflat, i])
        rows.append(row)
    return pd.DataFrame(rows)


def run(cfg, inputs: Mapping[str, str | Path], outputs: Mapping[str, str | Path], progress: bool = True,
        mem_mb: int | None = None) -> dict:
    """Run the wild stage for ``cfg.model`` and write the outputs of the module docstring.

    Args:
        cfg: the run's typed config (:class:`successor_heads.config.RootConfig`; a job's: its params).
        inputs: ``manifest`` (the model folder's ``manifest.json``) and ``scores``
            (``successor_scores.h5``; its top ``wild.n_successor_heads`` heads under
            ``wild.score_mode`` are the successor heads): :func:`successor_heads.core.layout.inputs`.
        outputs: the paths to write, by the names of the module docstring
            (:func:`successor_heads.core.layout.outputs`).
        mem_mb: the job's memory (MB; the workflow passes the rule's ``mem_mb`` resource), which
            ``model.memory=auto`` compares the weights with; None: ``cfg.model.resources.mem_mb``.

    Returns: the summary dict also written to ``outputs["summary"]``.
    Raises: :class:`~successor_heads.core.handoff.StageInputError` (no successor scores),
    successor_heads.core.corpus.CorpusError (corpus),
    ValueError (unknown ``wild.final_norm`` or ``wild.compute_dtype``, or ``frozen`` with an
    unrecognised final norm).
    """
    t0 = time.time()
    w = cfg.wild
    final_norm, compute_dtype = w.final_norm, w.compute_dtype
    heads = load_top_heads(inputs["scores"], w.n_successor_heads, w.score_mode, model=cfg.model.name,
                           option="wild.score_mode")
    model, tok, adapter, manifest = open_for_stage(cfg, inputs["manifest"], mem_mb)
    d = adapter.dims
    corpus = load_corpus(tok, **asdict(cfg.corpus), progress=progress)
    mz = mean_z(adapter, corpus.tokens, int(w.batch_size), skip_first=corpus.has_bos, progress=progress)
    de = corpus_direct_effects(adapter, corpus.tokens, mz, int(w.batch_size), int(w.max_chunk_mb), progress=progress,
                               final_norm=final_norm, compute_dtype=compute_dtype)
    method = de.method
    scale_note = (f"{corpus.n_contexts} contexts x {corpus.context_len} tokens of {corpus.name} "
                  f"(paper: {PAPER['n_contexts']} x {PAPER['context_len']} of {PAPER_CORPUS.value})")
    attrs = provenance(manifest, **cfg.model.provenance(), norms=cfg.scores.norms, corpus=corpus.name, corpus_source=corpus.description, n_contexts=corpus.n_contexts,
                       context_len=corpus.context_len, has_bos=corpus.has_bos, scale_note=scale_note, method=method,
                       final_norm=final_norm, compute_dtype=de.compute_dtype,
                       ablation="direct-effect mean ablation (mean z over all corpus positions"
                       + (" but the BOS token)" if corpus.has_bos else ")"), units="nats",
                       successor_heads=[head_label(*h) for h in heads],
                       dims="loss, target_logit: [n_layers, n_heads, n_tokens]; baseline_*, target_ids, context_index, "
                            "position: [n_tokens]; contexts: [n_contexts, context_len]; mean_z: [n_layers, n_heads, d_head]")
    write_h5(outputs["h5"],
             {"loss": de.loss, "target_logit": de.target_logit, "baseline_loss": de.base_loss,
              "baseline_logit": de.base_logit, "target_ids": de.target_ids, "context_index": de.context_index,
              "position": de.position, "contexts": corpus.tokens, "mean_z": mz}, attrs)

    eff = effects(de.loss, de.base_loss, de.target_logit, de.base_logit)
    win = {c: winning_heads(e, float(w.min_increase)) for c, e in eff.items()}
    counts = {c: win_counts(v, d.n_layers, d.n_heads) for c, v in win.items()}
    index = SuccessionIndex.from_tasks(build_tasks(tok, **asdict(cfg.tasks)))
    winners = _winner_rows(tok, corpus.tokens.numpy(), de, win, eff, heads, d.n_heads, index, int(w.context_chars))
    write_csv(winners, outputs["winners"], SIGNIFICANT5)
    table = _category_table(winners[winners["head"] == head_label(*heads[0])])
    write_csv(table, outputs["categories"], SIGNIFICANT5)
    mean_inc = eff["loss"].mean(-1)
    hw = pd.DataFrame([{"layer": i, "head": h, "wins_loss": int(counts["loss"][i, h]), "wins_logit": int(counts["logit"][i, h]),
                        "mean_loss_increase": float(mean_inc[i, h]), "successor_head": (i, h) in heads}
                       for i in range(d.n_layers) for h in range(d.n_heads)])
    write_csv(hw.sort_values("wins_loss", ascending=False, kind="stable"), outputs["head_wins"], SIGNIFICANT5)

    prompts = listing_prompts(int(w.n_listing_prompts))
    ls = listing_direct_effects(adapter, tok, prompts, mz, int(w.max_chunk_mb), cfg.corpus.prepend_bos,
                                progress, final_norm, compute_dtype)
    listings = _listing_table(prompts, ls, heads[0], d.n_heads, float(w.min_increase))
    write_csv(listings, outputs["listings"], SIGNIFICANT5)

    label = f"{cfg.model.name} ({scale_note})"
    _heatmap_figure({"mean loss increase (nats)": mean_inc, "tokens won (loss criterion)": counts["loss"],
                     "tokens won (logit criterion)": counts["logit"]}, heads,
                    f"{label}: direct-effect mean ablation per head (red: successor head)",
                    outputs["heatmap"])
    _category_figure(table, f"{cfg.model.name} {head_label(*heads[0])}: categories of its winning tokens",
                     outputs["shares"])

    succ = head_label(*heads[0])
    top = {c: np.unravel_index(int(counts[c].argmax()), counts[c].shape) for c in counts}
    summary = {
        "model": cfg.model.name, "successor_head": succ, "successor_heads": [head_label(*h) for h in heads],
        "corpus": corpus.name, "corpus_source": corpus.description, "n_contexts": corpus.n_contexts,
        "context_len": corpus.context_len, "n_tokens": int(de.base_loss.size), "scale_note": scale_note,
        "method": method, "final_norm": final_norm, "compute_dtype": de.compute_dtype,
        "baseline_loss": float(de.base_loss.mean()),
        "n_listing_prompts": len(prompts), "paper": PAPER,
    }
    for c in ("loss", "logit"):
        sub = table[table.criterion == c].set_index("category")
        summary[f"successor_head_tokens_won_{c}"] = int(counts[c][heads[0]])
        summary[f"successor_head_win_rank_{c}"] = int((counts[c] > counts[c][heads[0]]).sum() + 1)
        summary[f"top_winning_head_{c}"] = head_label(*top[c])
        summary[f"category_shares_{c}"] = {k: float(sub.share[k]) for k in CATEGORIES}
        summary[f"listing_wins_{c}"] = int(listings[f"successor_head_wins_{c}"].sum())
        summary[f"listing_top_winner_{c}"] = listings[f"winner_{c}"].value_counts().index[0]
    summary["memory"] = manifest["memory"]
    summary["wall_s"] = round(time.time() - t0, 1)
    write_json(summary, outputs["summary"])
    return summary
