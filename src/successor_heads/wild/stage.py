"""Stage ``wild``: successor heads in the wild (paper Section 4.3 and Appendix J; DESIGN.md,
In the wild).

Direct-effect mean ablation of every head on natural-text contexts (paper: 128 x 512 tokens of
The Pile; embedded default: 16 x 128 tokens of CPython's reference text, so the main command
stays quick on two cores), which head wins each token, the categories of the successor head's
winning tokens, and numbered-listing prompts.

Outputs in ``out_dir / "wild"`` (``out_dir`` = ``results/{model}``): ``direct_effect.h5``
(per-token losses ``[n_layers, n_heads, n_tokens]``, baseline ``[n_tokens]``, token ids,
context index, mean ``z``), ``winners.csv`` (the successor head's winning tokens with context
and category), ``categories.csv`` (shares per category, the paper's beside them),
``head_wins.csv`` (tokens won per head), ``listings.csv``, ``loss_increase_heatmap.png``,
``category_shares.png``, ``wild_summary.json``. ``wild.final_norm`` (default ``frozen``: the
final norm's scale of the clean run, as in the paper's direct effect; ``recomputed``: the
norm recomputed on the ablated residual) and ``wild.compute_dtype`` (default ``float32``;
``bfloat16``: the per-head logit change in bfloat16 on the fast path) are recorded in the h5
attributes and the summary.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from successor_heads.core import plots
from successor_heads.core.adapters import get_adapter
from successor_heads.core.atomic import atomic_path
from successor_heads.core.corpus import load_corpus
from successor_heads.wild.direct_effect import check_compute_dtype, check_final_norm, corpus_direct_effects, mean_z
from successor_heads.core.h5io import IncompleteOutputError, provenance, write_h5
from successor_heads.wild.listings import listing_direct_effects, listing_prompts
from successor_heads.core.loading import load_model, read_manifest
from successor_heads.core.tasks import build_tasks
from successor_heads.wild.winners import (CATEGORIES, PAPER_SHARES, SuccessionIndex, categorise, effects, token_strings,
                       win_counts, winning_heads)
from successor_heads.core.handoff import load_top_heads, write_json

log = logging.getLogger(__name__)

OUTPUTS = ("direct_effect.h5", "winners.csv", "categories.csv", "head_wins.csv", "listings.csv",
           "loss_increase_heatmap.png", "category_shares.png", "wild_summary.json")
PAPER = {"n_contexts": 128, "context_len": 512, "head": "Pythia-1.4B L12H0", "listing_wins": "64/64",
         "shares": PAPER_SHARES}


class WildInputError(ValueError):
    """An input of the wild stage (the successor scores) is missing; the message says how to make it."""


def successor_heads_of(out_dir: Path, cfg) -> list[tuple[int, int]]:
    """Top ``wild.n_successor_heads`` heads of ``out_dir/successor_scores.h5`` (mode ``wild.score_mode``).

    Raises: WildInputError when the scores file is missing or unfinished.
    """
    path = out_dir / "successor_scores.h5"
    hint = (f"The wild stage needs the successor scores: run `successor-heads scores model={cfg.model.name}` "
            "(or snakemake) first")
    if not path.is_file():
        raise WildInputError(f"{path} is missing. {hint}")
    try:
        return load_top_heads(path, int(cfg.wild.n_successor_heads), cfg.wild.score_mode)
    except (IncompleteOutputError, KeyError) as e:
        raise WildInputError(f"{e}. {hint}") from None


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
                rows.append({"criterion": crit, "head": f"L{layer}H{head}", "token": int(k), "context_index": c,
                             "position": p, "target_id": int(de.target_ids[k]), "target": target,
                             "context": "".join(ctx)[-chars:], "category": categorise(ctx, target, index),
                             "effect": float(e[flat]), "runner_up": f"L{runner // n_heads}H{runner % n_heads}",
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
    series.append(("paper (Pythia-1.4B L12H0)", np.array([PAPER_SHARES.get(c, np.nan) for c in CATEGORIES])))
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
            row[f"winner_{c}"] = f"L{wf // n_heads}H{wf % n_heads}" if wf >= 0 else "none"
            row[f"successor_head_wins_{c}"] = wf == sflat
            row[f"successor_head_effect_{c}"] = float(leff[c].reshape(-1, len(prompts))[sflat, i])
        rows.append(row)
    return pd.DataFrame(rows)


def _write_csv(df: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.5g")


def run(cfg, model_dir: str | Path, out_dir: str | Path, progress: bool = True) -> dict:
    """Run the wild stage for ``cfg.model`` and write the outputs of the module docstring.

    Args:
        cfg: resolved config (full, or the ``wild`` stage view).
        model_dir: folder written by :func:`successor_heads.models.fetch_model`.
        out_dir: ``results/{model}``; must hold ``successor_scores.h5``.

    Returns: the summary dict also written to ``wild/wild_summary.json``.
    Raises: WildInputError (no successor scores), successor_heads.core.corpus.CorpusError (corpus),
    ValueError (unknown ``wild.final_norm`` or ``wild.compute_dtype``, or ``frozen`` with an
    unrecognised final norm).
    """
    t0 = time.time()
    final_norm = check_final_norm(cfg.wild.get("final_norm", "frozen"))
    compute_dtype = cfg.wild.get("compute_dtype", "float32")
    check_compute_dtype(compute_dtype)
    out_dir = Path(out_dir)
    wdir = out_dir / "wild"
    heads = successor_heads_of(out_dir, cfg)
    model, tok = load_model(model_dir, cfg.model.dtype, cfg.device)
    manifest = read_manifest(model_dir)
    adapter = get_adapter(model)
    d = adapter.dims
    w = cfg.wild
    corpus = load_corpus(cfg.corpus, tok, progress)
    mz = mean_z(adapter, corpus.tokens, int(w.batch_size), skip_first=corpus.has_bos, progress=progress)
    de = corpus_direct_effects(adapter, corpus.tokens, mz, int(w.batch_size), int(w.max_chunk_mb), progress=progress,
                               final_norm=final_norm, compute_dtype=compute_dtype)
    method = de.method
    scale_note = (f"{corpus.n_contexts} contexts x {corpus.context_len} tokens of {corpus.name} "
                  f"(paper: {PAPER['n_contexts']} x {PAPER['context_len']} of The Pile)")
    attrs = provenance(cfg, manifest, corpus=corpus.name, corpus_source=corpus.description, n_contexts=corpus.n_contexts,
                       context_len=corpus.context_len, has_bos=corpus.has_bos, scale_note=scale_note, method=method,
                       final_norm=final_norm, compute_dtype=de.compute_dtype,
                       ablation="direct-effect mean ablation (mean z over all corpus positions"
                       + (" but the BOS token)" if corpus.has_bos else ")"), units="nats",
                       successor_heads=[f"L{i}H{h}" for i, h in heads],
                       dims="loss, target_logit: [n_layers, n_heads, n_tokens]; baseline_*, target_ids, context_index, "
                            "position: [n_tokens]; contexts: [n_contexts, context_len]; mean_z: [n_layers, n_heads, d_head]")
    write_h5(wdir / "direct_effect.h5",
             {"loss": de.loss, "target_logit": de.target_logit, "baseline_loss": de.base_loss,
              "baseline_logit": de.base_logit, "target_ids": de.target_ids, "context_index": de.context_index,
              "position": de.position, "contexts": corpus.tokens, "mean_z": mz}, attrs)

    eff = effects(de.loss, de.base_loss, de.target_logit, de.base_logit)
    win = {c: winning_heads(e, float(w.min_increase)) for c, e in eff.items()}
    counts = {c: win_counts(v, d.n_layers, d.n_heads) for c, v in win.items()}
    index = SuccessionIndex.from_tasks(build_tasks(tok, cfg.tasks))
    winners = _winner_rows(tok, corpus.tokens.numpy(), de, win, eff, heads, d.n_heads, index, int(w.context_chars))
    _write_csv(winners, wdir / "winners.csv")
    table = _category_table(winners[winners["head"] == f"L{heads[0][0]}H{heads[0][1]}"])
    _write_csv(table, wdir / "categories.csv")
    mean_inc = eff["loss"].mean(-1)
    hw = pd.DataFrame([{"layer": i, "head": h, "wins_loss": int(counts["loss"][i, h]), "wins_logit": int(counts["logit"][i, h]),
                        "mean_loss_increase": float(mean_inc[i, h]), "successor_head": (i, h) in heads}
                       for i in range(d.n_layers) for h in range(d.n_heads)])
    _write_csv(hw.sort_values("wins_loss", ascending=False, kind="stable"), wdir / "head_wins.csv")

    prompts = listing_prompts(int(w.n_listing_prompts))
    ls = listing_direct_effects(adapter, tok, prompts, mz, int(w.max_chunk_mb), bool(cfg.corpus.get("prepend_bos", True)),
                                progress, final_norm, compute_dtype)
    listings = _listing_table(prompts, ls, heads[0], d.n_heads, float(w.min_increase))
    _write_csv(listings, wdir / "listings.csv")

    label = f"{cfg.model.name} ({scale_note})"
    _heatmap_figure({"mean loss increase (nats)": mean_inc, "tokens won (loss criterion)": counts["loss"],
                     "tokens won (logit criterion)": counts["logit"]}, heads,
                    f"{label}: direct-effect mean ablation per head (red: successor head)",
                    wdir / "loss_increase_heatmap.png")
    _category_figure(table, f"{cfg.model.name} L{heads[0][0]}H{heads[0][1]}: categories of its winning tokens",
                     wdir / "category_shares.png")

    succ = f"L{heads[0][0]}H{heads[0][1]}"
    top = {c: np.unravel_index(int(counts[c].argmax()), counts[c].shape) for c in counts}
    summary = {
        "model": cfg.model.name, "successor_head": succ, "successor_heads": [f"L{i}H{h}" for i, h in heads],
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
        summary[f"top_winning_head_{c}"] = f"L{top[c][0]}H{top[c][1]}"
        summary[f"category_shares_{c}"] = {k: float(sub.share[k]) for k in CATEGORIES}
        summary[f"listing_wins_{c}"] = int(listings[f"successor_head_wins_{c}"].sum())
        summary[f"listing_top_winner_{c}"] = listings[f"winner_{c}"].value_counts().index[0]
    summary["wall_s"] = round(time.time() - t0, 1)
    write_json(summary, wdir / "wild_summary.json")
    return summary
