"""Vector arithmetic with mod-m features through the successor head (paper, Section 3.2, Figure 5).

The paper edits a token's effective embedding with its mod-10 features and reads the result
through the successor head: for a token ``x`` whose value has residue ``i`` and a target
residue ``j``,

    ``logits = unembed(OV_h(MLP0(W_E[x]) - a f_i + a f_j))``,

and the edit *succeeds* when, among the task's tokens, the largest logit is the successor of
the **target token** ``y``: the token of the same task whose value is ``c*m + j``, where
``c = value(x) // m`` is the cycle (decade for ``m = 10``) that ``x`` lies in. For a wrapping
task edited with its own period (days mod 7, months mod 12) the cycle is the whole week or
year: ``y`` is the one item with residue ``j``. Example (numbers, ``m = 10``): ``x = " 23"``
(``i = 3``), ``j = 7`` -> ``y = " 27"``, success when the head's top task logit is ``" 28"``.
A token's *value* follows the features stage's ``features.residue_of``: ``position``
(:attr:`~successor_heads.core.tasks.Task.positions`, 1-based: Monday=1, January=1, A=1, 17=17) or
``index`` (:attr:`~successor_heads.core.tasks.Task.index`: Monday=0, January=0, A=0, 17=17), so
residue ``i`` means the same class as the features stage's ``f_i``. Pairs are skipped when
``j == i``, when ``y`` is not a single token of the tokenizer, when ``y`` has no successor in
the task, or when ``f_i`` or ``f_j`` is missing (NaN rows of the SAE directions).

The modulus per task family is a config choice (``editing.moduli``; default 10 for numbers,
number words, ordinal words and letters, 7 for days, 12 for months). The paper (Pythia-1.4B)
edits every family with its **mod-10** features and reports numbers 20-29 about 89%, months
about 53%, days and letters failing (Figure 5, :data:`PAPER`). So that those numbers are
compared like for like, a family whose own modulus differs from the paper's is edited twice
(``paper_modulus``, config ``editing.paper_modulus``, default :data:`PAPER_MODULUS` = 10):
once with the mod-10 features (the paper's setting, shown beside the paper's number) and once
with its own (days mod 7, months mod 12: ours, past the paper). Every output row carries the
``modulus`` it used. With ``m = 10`` a wrapping task is cut into cycles like numbers (values
by ``position``): months 1-9 are cycle 0 and October-December (10-12, residues 0-2) cycle 1;
days 1-7 all lie in cycle 0, so residues 8, 9 and 0 hold no day and give no pairs. Tokenizers that write numbers
digit by digit (SmolLM2, Gemma3) keep only 1-9 as number tokens, so "numbers 20-29" is empty
there and only the 1-9 cycle is measured.

The head's OV circuit is the paper's ``W_V W_O`` with no value bias by default
(``value_bias``, config ``scores.value_bias``; see :meth:`Adapter.ov`).

Scale ``a`` (``editing.scale_ref``):

* ``projection`` (default): ``a = scale * |<x, f_i>|`` per token, with ``f_i`` unit-norm. At
  ``scale = 1`` and orthogonal features, the edit moves the part of ``x`` that lies along
  ``f_i`` onto ``f_j`` (same length): "swap feature i for feature j".
* ``norm``: ``a = scale * ||x||``, an absolute scale in units of the embedding's norm.

``scale = 0`` is the unedited control: how often the head's prediction for ``x`` itself
happens to be the successor of ``y`` (rarely; ``n_source_successor`` counts the pairs where the
head still predicts the successor of ``x``).

Directions come from the features stage (``results/{model}/features/directions.h5``:
``sae_mod{m}`` and ``probe_mod{m}``, ``[m, d_model]``, unit rows, in the ``mlp0`` space).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from successor_heads.core.adapters import Adapter
from successor_heads.core.effective_embedding import mlp0_embeddings
from successor_heads.core.h5io import IncompleteOutputError, read_h5
from successor_heads.core.ov import head_task_logits
from successor_heads.core.paper import paper_number
from successor_heads.core.tasks import RESIDUE_OF
from successor_heads.editing import SCALE_REFS, SOURCES

_FIGURE5 = paper_number("editing", "vector_arithmetic")
#: Paper, Figure 5 (Pythia-1.4B, mod-10 features): success of vector arithmetic per task group.
PAPER = _FIGURE5.value
#: The modulus of the features behind :data:`PAPER` (Section 3.2 uses the mod-10 features only).
PAPER_MODULUS = int(_FIGURE5.setting["modulus"])
#: ``paper`` cell of summary rows edited with another modulus than the paper's.
PAST_PAPER = "ours, past the paper (the paper edits with mod-10 features only)"
DEFAULT_MODULI = {"numbers": 10, "number_words": 10, "ordinal_words": 10, "letters": 10,
                  "days": 7, "day_prefixes": 7, "months": 12, "month_prefixes": 12}


def load_directions(path: str | Path, d_model: int, sources=SOURCES) -> tuple[dict[tuple[str, int], torch.Tensor], dict]:
    """Read the features stage's directions: ``({(source, m): f [m, d_model]}, attrs)`` (float32,
    unit rows, NaN rows where a residue class had no tokens; ``attrs`` the file's attributes,
    e.g. ``successor_head``, ``space``, ``norms``).

    Source: ``results/{model}/features/directions.h5`` written by the ``features`` stage
    (datasets ``sae_mod{m}``, ``probe_mod{m}``).

    Raises:
        ValueError: the file is missing or unfinished (says which stage makes it), holds no
            ``{source}_mod{m}`` dataset, or a dataset is not ``[m, d_model]``.
    """
    try:
        data, attrs = read_h5(path)
    except IncompleteOutputError as e:
        raise ValueError(
            f"feature directions unavailable: {e}. They are made by the features stage "
            "(`successor-heads features model=...`, or snakemake's features rule)") from e
    out = {}
    for name, arr in data.items():
        src, _, m = name.partition("_mod")
        if src not in sources or not m.isdigit():
            continue
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim != 2 or arr.shape != (int(m), d_model):
            raise ValueError(f"{path}: dataset {name} has shape {arr.shape}, expected ({m}, {d_model})")
        out[(src, int(m))] = torch.from_numpy(arr)
    if not out:
        raise ValueError(f"{path} holds no {'/'.join(sources)}_mod<m> dataset; rerun the features stage")
    return out, attrs


def task_values(task, residue_of: str = "position") -> list[int]:
    """The values whose residues define feature classes: ``task.positions`` (``"position"``,
    1-based) or ``task.index`` (``"index"``). Raises: ValueError for another ``residue_of``."""
    if residue_of not in RESIDUE_OF:
        raise ValueError(f"residue_of={residue_of!r}: must be one of {RESIDUE_OF}")
    return list(task.positions if residue_of == "position" else task.index)


def edit_pairs(task, modulus: int, residue_of: str = "position") -> pd.DataFrame:
    """Every (source token, target residue) pair of one task; see the module docstring.

    Input: a :class:`successor_heads.core.tasks.Task`, its modulus ``m`` and the value convention.
    Output: DataFrame with columns ``src`` (position of ``x`` in ``task.tokens``), ``tgt`` (of
    ``y``), ``succ`` (of ``y``'s successor: the expected top token), ``i``, ``j`` (residues),
    ``cycle``; one row per pair, possibly none. Raises: ValueError if ``modulus < 2``.
    """
    if modulus < 2:
        raise ValueError(f"modulus must be >= 2, got {modulus}")
    values = task_values(task, residue_of)
    whole = task.modulus == modulus  # a wrapping task edited with its own period: one cycle
    where = {((0 if whole else v // modulus), v % modulus): k for k, v in enumerate(values)}
    rows = []
    for k, v in enumerate(values):
        i, c = v % modulus, (0 if whole else v // modulus)
        for j in range(modulus):
            t = where.get((c, j))
            if j == i or t is None or task.successor[t] < 0:
                continue
            rows.append((k, t, task.successor[t], i, j, c))
    return pd.DataFrame(rows, columns=["src", "tgt", "succ", "i", "j", "cycle"])


def edit_vectors(x: torch.Tensor, f_from: torch.Tensor, f_to: torch.Tensor, scale: float,
                 ref: str = "projection") -> torch.Tensor:
    """``x - a f_from + a f_to`` row by row.

    Shapes: ``x, f_from, f_to [n, d_model]`` (``f`` unit-norm) -> ``[n, d_model]``. ``a`` is
    ``scale * |<x, f_from>|`` (``ref="projection"``) or ``scale * ||x||`` (``"norm"``), per row.
    Raises: ValueError for an unknown ``ref``.
    """
    if ref not in SCALE_REFS:
        raise ValueError(f"scale_ref={ref!r}: must be one of {SCALE_REFS}")
    if ref == "projection":
        a = (x * f_from).sum(-1, keepdim=True).abs()
    else:
        a = x.norm(dim=-1, keepdim=True)
    return x + scale * a * (f_to - f_from)


@torch.no_grad()
def edit_success(adapter: Adapter, layer: int, head: int, task, x: torch.Tensor, feats: torch.Tensor,
                 scales, norms: str = "raw", ref: str = "projection", src_values=None,
                 residue_of: str = "position", value_bias: bool = False) -> pd.DataFrame:
    """Success of vector arithmetic on one task for each scale (paper Section 3.2, Figure 5);
    the modulus is ``feats.shape[0]``.

    Args:
        task: a :class:`~successor_heads.core.tasks.Task`.
        x: ``[len(task.tokens), d_model]`` effective embeddings of the task's tokens.
        feats: ``[m, d_model]`` unit feature directions (NaN rows = unavailable class).
        scales: the scales ``a`` is multiplied by (see :func:`edit_vectors`).
        src_values: if given, only source tokens whose value is in it (e.g. 20-29); targets
            may be any token of the task.
        residue_of: ``"position"`` or ``"index"`` (see :func:`task_values`).
        value_bias: passed to :func:`head_task_logits` (default False: the paper's circuit).

    Returns: one row per (scale, i, j) with ``n_pairs``, ``n_success``, ``success_rate`` and
    ``n_source_successor`` (pairs where the head still predicts the successor of ``x``).
    Raises: ValueError if ``x`` does not match the task or ``ref`` is unknown.
    """
    m = feats.shape[0]
    if x.shape[0] != len(task.tokens):
        raise ValueError(f"x has {x.shape[0]} rows, task {task.name} has {len(task.tokens)} tokens")
    pairs = edit_pairs(task, m, residue_of)
    if src_values is not None and len(pairs):
        keep, values = set(src_values), task_values(task, residue_of)
        pairs = pairs[[values[k] in keep for k in pairs.src.values]]
    ok = (~torch.isnan(feats).any(-1)).numpy()
    if len(pairs):
        pairs = pairs[ok[pairs.i.to_numpy()] & ok[pairs.j.to_numpy()]].reset_index(drop=True)
    cols = ["scale", "i", "j", "n_pairs", "n_success", "n_source_successor", "success_rate"]
    if not len(pairs):
        return pd.DataFrame(columns=cols)
    col = {c: torch.tensor(pairs[c].to_numpy(dtype=np.int64)) for c in ("src", "succ", "i", "j")}
    xs, fi, fj = x[col["src"]], feats[col["i"]], feats[col["j"]]
    src_succ = torch.tensor([task.successor[k] for k in col["src"].tolist()])
    scales = [float(s) for s in scales]
    edited = torch.cat([edit_vectors(xs, fi, fj, s, ref) for s in scales])  # [n_scales * n_pairs, d_model]
    pred = head_task_logits(adapter, layer, head, edited, task.token_ids, norms,
                            value_bias).argmax(-1).view(len(scales), -1)
    df = pd.DataFrame({"scale": np.repeat(scales, len(pairs)), "i": np.tile(pairs.i.to_numpy(), len(scales)),
                       "j": np.tile(pairs.j.to_numpy(), len(scales)),
                       "hit": (pred == col["succ"]).flatten().numpy(), "stay": (pred == src_succ).flatten().numpy()})
    out = df.groupby(["scale", "i", "j"]).agg(n_pairs=("hit", "size"), n_success=("hit", "sum"),
                                              n_source_successor=("stay", "sum")).reset_index()
    out["success_rate"] = out.n_success / out.n_pairs
    return out[cols]


def task_moduli(family: str, moduli: Mapping, paper_modulus: int = PAPER_MODULUS) -> list[int]:
    """The moduli a family is edited with: its own (``moduli[family]``) and, when that differs,
    the paper's ``paper_modulus`` too (module docstring); ``[]`` when the family is not listed
    or given a modulus below 2. ``paper_modulus < 2`` (e.g. 0) adds nothing. Sorted ascending.
    Example: ``task_moduli("months", DEFAULT_MODULI) == [10, 12]``."""
    own = int(moduli.get(family) or 0)
    if own < 2:
        return []
    paper = int(paper_modulus or 0)
    return sorted({own} | ({paper} if paper >= 2 else set()))


def vector_arithmetic(adapter: Adapter, layer: int, head: int, tasks, directions: Mapping, scales,
                      norms: str = "raw", ref: str = "projection", moduli: Mapping | None = None,
                      residue_of: str = "position", mlp0_norms: str | None = None,
                      paper_modulus: int = PAPER_MODULUS, value_bias: bool = False) -> pd.DataFrame:
    """Vector arithmetic on every usable task, with each modulus of :func:`task_moduli` that has
    directions (paper Section 3.2, Figure 5).

    Args:
        tasks: from :func:`successor_heads.core.tasks.build_tasks` (unusable and held-out tasks skipped).
        directions: ``{(source, m): [m, d_model]}`` from :func:`load_directions`.
        norms: for the head's OV circuit and the unembedding (``scores.norms``).
        moduli: family -> modulus (default :data:`DEFAULT_MODULI`); families not listed, or
            given a modulus below 2 (e.g. 0), are skipped.
        residue_of: value convention of the features (``features.residue_of``).
        mlp0_norms: norms of the MLP0 space the directions live in (default ``norms``).
        paper_modulus: also edit each family whose modulus differs with this one (the paper's
            mod 10, ``editing.paper_modulus``); below 2: only ``moduli``.
        value_bias: add ``b_V W_O`` to the head's OV output (``scores.value_bias``; default
            False, the paper's circuit).

    Returns: long DataFrame, columns ``source, task, family, modulus, numbers_20_29, scale, i,
    j, n_pairs, n_success, n_source_successor, success_rate``; ``modulus`` is the modulus of the
    features the row was edited with; ``numbers_20_29`` is True on extra rows of the numbers
    tasks restricted to sources 20-29 (also counted in the full rows).
    Raises: ValueError as :func:`edit_success`.
    """
    moduli = dict(DEFAULT_MODULI if moduli is None else moduli)
    frames = []
    for task in tasks:
        ms = task_moduli(task.family, moduli, paper_modulus)
        if not ms or not task.usable or task.held_out:
            continue
        x = mlp0_embeddings(adapter, task.token_ids, mlp0_norms or norms).cpu()  # edited on the CPU with the directions
        values = task_values(task, residue_of)
        for m in ms:
            for (source, dm), feats in directions.items():
                if dm != m:
                    continue
                meta = {"source": source, "task": task.name, "family": task.family, "modulus": m}
                df = edit_success(adapter, layer, head, task, x, feats, scales, norms, ref, None, residue_of,
                                  value_bias)
                frames.append(df.assign(**meta, numbers_20_29=False))
                if task.family == "numbers" and any(20 <= v <= 29 for v in values):
                    df = edit_success(adapter, layer, head, task, x, feats, scales, norms, ref, range(20, 30),
                                      residue_of, value_bias)
                    frames.append(df.assign(**meta, numbers_20_29=True))
    cols = ["source", "task", "family", "modulus", "numbers_20_29", "scale", "i", "j", "n_pairs",
            "n_success", "n_source_successor", "success_rate"]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def group_key(group: str, modulus: int) -> str:
    """Summary key of a group edited with ``modulus``: ``f"{group}_mod{modulus}"``
    (e.g. ``months_mod10``, the paper's setting, beside ``months_mod12``, ours)."""
    return f"{group}_mod{int(modulus)}"


def paper_value(group: str, modulus: int, paper_modulus: int = PAPER_MODULUS):
    """The paper's figure for ``group`` when it was edited with the paper's modulus (``""`` for
    groups the paper does not report), else :data:`PAST_PAPER`."""
    return PAPER.get(group, "") if int(modulus) == int(paper_modulus) else PAST_PAPER


def per_task(df: pd.DataFrame) -> pd.DataFrame:
    """Success per (source, scale, task), pooled over residues: columns ``source, task, family,
    modulus, numbers_20_29, scale, n_pairs, n_success, n_source_successor, success_rate``.
    Input: :func:`vector_arithmetic`'s output."""
    keys = ["source", "task", "family", "modulus", "numbers_20_29", "scale"]
    g = df.groupby(keys, as_index=False)[["n_pairs", "n_success", "n_source_successor"]].sum()
    g["success_rate"] = g.n_success / g.n_pairs
    return g


def per_residue(df: pd.DataFrame, scale: float) -> pd.DataFrame:
    """Success per (source, family, source residue i, target residue j) at ``scale``, pooled over
    the family's spacing/case variants (the numbers 20-29 rows left out, they repeat the
    numbers rows): columns ``source, family, modulus, i, j, n_pairs, n_success, success_rate``."""
    d = df[np.isclose(df.scale.astype(float), scale) & ~df.numbers_20_29.astype(bool)]
    g = d.groupby(["source", "family", "modulus", "i", "j"], as_index=False)[["n_pairs", "n_success"]].sum()
    g["success_rate"] = g.n_success / g.n_pairs
    return g


def sweep_table(df: pd.DataFrame) -> pd.DataFrame:
    """Success per (source, family or ``numbers_20_29``, modulus, scale), pooled over tasks,
    residues and variants: columns ``source, group, modulus, scale, n_pairs, n_success,
    success_rate``. Input: :func:`vector_arithmetic`'s output."""
    d = df.assign(group=np.where(df.numbers_20_29.astype(bool), "numbers_20_29", df.family))
    g = d.groupby(["source", "group", "modulus", "scale"], as_index=False)[["n_pairs", "n_success"]].sum()
    g["success_rate"] = g.n_success / g.n_pairs
    return g


def plot_scale_sweep(df: pd.DataFrame, title: str, path) -> None:
    """Success rate against the edit scale, one panel per direction source, one line per family
    (and numbers 20-29) and modulus: solid for the paper's mod 10, dashed for a family's own
    modulus (ours, past the paper); the paper's reported rates as stars at scale 1. Writes
    ``path`` atomically."""
    import matplotlib.pyplot as plt

    from successor_heads.core import plots

    t = sweep_table(df) if len(df) else pd.DataFrame(columns=["source", "group", "modulus", "scale", "success_rate"])
    sources = sorted(set(t.source)) or ["(no directions)"]
    fig, axes = plt.subplots(1, len(sources), figsize=(4.8 * len(sources), 3.4), squeeze=False, sharey=True)
    groups = sorted(set(t.group))
    for ax, source in zip(axes[0], sources):
        for k, grp in enumerate(groups):
            for m in sorted(set(t[t.group == grp].modulus)):
                g = t[(t.source == source) & (t.group == grp) & (t.modulus == m)].sort_values("scale")
                if len(g):
                    ax.plot(g.scale, g.success_rate, "-" if m == PAPER_MODULUS else "--", marker="o", ms=3,
                            color=f"C{k % 10}", label=f"{grp} (mod {m})")
            paper = PAPER.get(grp)
            if isinstance(paper, float):
                ax.plot([1.0], [paper], "*", color=f"C{k % 10}", ms=9)
        ax.set_title(f"{source} directions", fontsize=9)
        ax.set_xlabel("scale (a / reference)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("success rate (top task token = successor of target)")
    fig.suptitle(title + f"  (*: paper, Pythia-1.4B, mod {PAPER_MODULUS}; dashed: ours, past the paper)", fontsize=10)
    plots.save(fig, path)
