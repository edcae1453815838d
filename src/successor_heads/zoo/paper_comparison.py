"""The paper's numbers beside ours, across the zoo (Gould et al., ICLR 2024: Sections 2-5 and
Appendix J; docs/DESIGN.md, "Zoo table and paper comparison").

One row per reported quantity, one column per model. The paper's value and the model it was
measured on come first; a model whose stage did not run (or could not measure the quantity,
e.g. no single-token numbers 20-29) gets a cell that says so instead of a number.

Vector arithmetic is compared like for like: the paper's Figure 5 rows (numbers 20-29, months,
days, letters) show ours with the paper's mod-10 features; the runs of days with mod-7 and
months with mod-12 features follow as rows of ours, past the paper. Health checks of ours (SAE
dead-feature fraction, non-converged probe fits) have no paper value.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from successor_heads.core import layout
from successor_heads.core.paper import paper_number
from successor_heads.core.writers import write_csv, write_text

NOT_RUN = "stage not in this run"


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    return str(v)


def _paper(stage: str, key: str, part: str | None = None, model: bool = True) -> str:
    """The ``paper`` cell of a paper number (:mod:`successor_heads.core.paper`): its value (or
    ``value[part]``), "about" before an approximate one, and the model it was measured on."""
    n = paper_number(stage, key)
    value = n.value if part is None else n.value[part]
    cell = f"about {value}" if n.setting.get("approximate") else str(value)
    return f"{cell} ({n.model})" if model and n.model else cell


def _scores_rows(s: dict) -> list[tuple[str, str, str, str]]:
    d = s["default_mode"]
    modes = [d] + [m for m in ("mlp0", "resid") if m != d and f"top_head_{m}" in s]
    notes = {"mlp0": "the paper's effective embedding", d: "default mode"}  # the default's note wins
    rows = [("scores", f"top successor head ({m}{', ' + notes[m] if m in notes else ''})",
             "; ".join(f"{head} ({model})" for model, head in paper_number("scores", "successor_heads").value.items()),
             f"{s[f'top_head_{m}']} ({_fmt(s[f'top_score_{m}'])})")
            for m in modes]
    chance = s.get("chance_level")
    rows.append(("scores", "chance level (a head that always picks one task token; ours)", "not reported",
                 _fmt(chance, 3) if chance is not None else "n/a (summary predates this field)"))
    key = f"top_over_runner_up_{d}"
    ratio = s.get(key)
    rows.append(("scores", f"top score / runner-up ({d})", _paper("scores", "top_over_runner_up"),
                 _fmt(ratio, 1) if ratio is not None
                 else "n/a (runner-up scores 0)" if key in s else "n/a (summary predates this field)"))
    above = paper_number("scores", "heads_above_threshold")
    rows.append(("scores", f"heads above threshold ({d})", f"{above.value} (threshold {above.setting['threshold']})",
                 _fmt(s[f"n_above_threshold_{d}"])))
    checked = s.get("behaviour_heads_checked", "")
    rows.append(("scores", "top behavioural head agrees (our check)", "not in the paper",
                 f"{_fmt(s[f'agrees_{d}'])} ({s['top_behaviour_head']}"
                 + (f"; {checked} ablated)" if checked and not checked.startswith("all") else ")")))
    return rows


def _features_rows(f: dict) -> list[tuple[str, str, str, str]]:
    mods = f.get("moduli", {})
    m10 = mods.get("10", {})
    rows = [
        ("features", "mod-10 modal SAE feature coverage", _paper("features", "coverage_mod10", model=False),
         _fmt(m10.get("coverage_mean"))),
        ("features", "probe direction vs SAE feature cosine (mod 10)",
         _paper("features", "probe_sae_cosine_mod10", model=False), _fmt(m10.get("probe_sae_cosine_mean"))),
        ("features", "probe: non-numeric succession tokens right (mod 10)",
         _paper("features", "nonnumeric_probe_correct", model=False),
         f"{m10.get('probe_test_correct', 'n/a')}/{m10.get('probe_test_total', 'n/a')}"),
    ]
    for m, label in (("7", "mod 7 (days)"), ("12", "mod 12 (months)")):
        if m in mods:
            rows.append(("features", f"probe vs SAE cosine, {label}", "not studied",
                         _fmt(mods[m].get("probe_sae_cosine_mean"))))
    # health checks of ours (no paper value); summaries older than these fields say so
    dead = f.get("dead_fraction")
    rows.append(("features", "SAE dead features on validation rows: mean fraction (per SAE) (our check)",
                 "not reported",
                 f"{_fmt(f.get('dead_fraction_mean'))} ({', '.join(_fmt(d) for d in dead)})" if dead
                 else "n/a (summary predates this field)"))
    n_fits = f.get("probe_n_fits")
    rows.append(("features", "probe fits not converged (our check)", "not reported",
                 f"{f.get('probe_n_not_converged')}/{n_fits}" if n_fits is not None
                 else "n/a (summary predates this field)"))
    return rows


def _rate_cell(got: dict) -> str:
    """One cell from ``{source: rate or reason}``: the same reason for every source said once."""
    vals = {src: v for src, v in got.items() if src not in ("paper", "modulus")}
    if vals and all(isinstance(v, str) for v in vals.values()) and len(set(vals.values())) == 1:
        return next(iter(vals.values()))
    return "; ".join(f"{src} {_fmt(v)}" for src, v in vals.items()) or "n/a"


def _editing_rows(e: dict) -> list[tuple[str, str, str, str]]:
    """Vector arithmetic (paper Figure 5) like for like: each paper group with the paper's mod-10
    features beside the paper's number; then the families edited with their own modulus (days
    mod 7, months mod 12), ours, past the paper; then the greater-than bias."""
    rows = []
    scale = _fmt(e.get("scale"), 1)
    for group, paper in e.get("paper", {}).items():
        got = e.get("beside_paper", {}).get(group, {})
        m = got.get("modulus")  # absent in older summaries, whose months/days used editing.moduli
        paper_cell = f"{paper:.0%}" if isinstance(paper, float) else str(paper)
        rows.append(("editing", f"vector arithmetic success, {group}, "
                     f"{f'mod-{m} features' if m else 'modulus not recorded'} (scale {scale})",
                     paper_cell, _rate_cell(got)))
    for key, got in e.get("ours_past_paper", {}).items():
        group, _, m = key.rpartition("_mod")
        rows.append(("editing", f"vector arithmetic success, {group}, mod-{m} features (ours, past the paper; "
                     f"scale {scale})", "not studied (the paper: mod 10 only)", _rate_cell(got)))
    gt = e.get("greater_than", {})
    if gt:
        cell = "; ".join(f"{path} {_fmt(v.get('greater_share'))}" for path, v in gt.items())
        rows.append(("editing", "greater-than share of logit mass (head vs MLP0 alone)",
                     _paper("editing", "greater_than"), cell))
    return rows


def _wild_rows(w: dict) -> list[tuple[str, str, str, str]]:
    shares = w.get("category_shares_loss", {})
    n = w.get("n_listing_prompts")
    corpus = paper_number("wild", "corpus")
    return [
        ("wild", "corpus (contexts x tokens)",
         f"{corpus.value}, {corpus.setting['n_contexts']} x {corpus.setting['context_len']}",
         f"{w.get('corpus', '?')}, {w.get('n_contexts', '?')} x {w.get('context_len', '?')}"),
        ("wild", "acronym share of the successor head's winning tokens",
         _paper("wild", "winning_token_shares", "acronym"),
         f"{_fmt(shares.get('acronym'))} ({w.get('successor_head', '?')})"),
        ("wild", "greater-than share of its winning tokens", _paper("wild", "winning_token_shares", "greater-than"),
         _fmt(shares.get("greater-than"))),
        ("wild", "numbered listings won by the successor head", _paper("wild", "listing_wins", model=False),
         f"{w.get('listing_wins_loss', 'n/a')}/{n if n is not None else 'n/a'}"),
    ]


#: per stage whose summary the table reads (``layout.outputs(stage, ...)["summary"]``), in table order
ROWS = {"scores": _scores_rows, "features": _features_rows, "editing": _editing_rows, "wild": _wild_rows}


def _check_stages(stages) -> None:
    bad = [s for s in stages if s not in ROWS]
    if bad or "scores" not in stages:
        raise ValueError(f"stages={list(stages)}: need 'scores' and only {sorted(ROWS)}")


def summaries(results_dir: str | Path, models: list[str], stages: list[str]) -> dict[str, list[str]]:
    """The files the table reads (the paper_table rule's inputs): per stage that ran, its summary
    of each model, in model order, where :mod:`successor_heads.core.layout` puts it (the stage's
    ``summary`` output under ``results_dir``).

    Raises: ValueError: ``scores`` not in ``stages`` or an unknown stage.
    """
    _check_stages(stages)
    return {s: [layout.outputs(s, results_dir, m)["summary"] for m in models] for s in stages}


def table(summaries: Mapping[str, Sequence[str | Path]], models: list[str]) -> pd.DataFrame:
    """Paper beside ours: columns ``section``, ``quantity``, ``paper``, then one per model.

    Args:
        summaries: per stage that ran (``scores`` is required), its summary JSON of each model
            in ``models`` order (:func:`summaries`); the other stages' rows say ``stage not in this run``.
        models: the zoo, in column order.

    Raises:
        FileNotFoundError: a ran stage's summary is missing (the message names it and the rule to run).
        ValueError: ``scores`` not among the stages, an unknown stage, or a stage without one
            summary per model.
    """
    _check_stages(list(summaries))
    cells: dict[tuple[str, str], dict[str, str]] = {}
    papers: dict[tuple[str, str], str] = {}
    for stage in ROWS:  # stage-major, so a row only a later model has stays in its section
        if stage not in summaries:
            continue
        if len(summaries[stage]) != len(models):
            raise ValueError(f"{stage}: {len(summaries[stage])} summaries for {len(models)} models")
        for model, path in zip(models, summaries[stage]):
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"{p}: missing; run the {stage} stage for {model} first "
                                        f"(snakemake --cores N {p})")
            for section, quantity, paper, ours in ROWS[stage](json.loads(p.read_text())):
                papers[(section, quantity)] = paper
                cells.setdefault((section, quantity), {})[model] = ours
    rows = []
    for (section, quantity), paper in papers.items():
        row = {"section": section, "quantity": quantity, "paper": paper}
        row.update({m: cells[(section, quantity)].get(m, "n/a") for m in models})
        rows.append(row)
    for stage in ROWS:
        if stage not in summaries:
            rows.append({"section": stage, "quantity": "(all)", "paper": "see the paper",
                         **{m: NOT_RUN for m in models}})
    return pd.DataFrame(rows)


def to_html(df: pd.DataFrame, title: str) -> str:
    """A self-contained HTML page (inline CSS, no scripts) holding ``df`` (cells HTML-escaped);
    the report embeds it. Raises nothing."""
    style = ("body{font-family:sans-serif;font-size:13px;margin:12px}"
             "table{border-collapse:collapse}th,td{border:1px solid #bbb;padding:4px 8px;text-align:left;"
             "vertical-align:top}th{background:#eee}td.paper{background:#f6f6ff}")
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"{'paper' if c == 'paper' else ''}\">{html.escape(str(r[c]))}</td>"
                         for c in df.columns) + "</tr>"
        for _, r in df.iterrows())
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h3>{html.escape(title)}</h3>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>")


def run(summaries: Mapping[str, Sequence[str | Path]], models, csv_path, html_path) -> pd.DataFrame:
    """Write the comparison of :func:`table` as CSV and as a self-contained HTML table, atomically;
    returns it.

    Raises: as :func:`table`; OSError when a file cannot be written (nothing half-written is left).
    """
    df = table(summaries, list(models))
    write_csv(df, csv_path)
    write_text(to_html(df, "Successor Heads (Gould et al., ICLR 2024): the paper beside this run"), html_path)
    return df
