"""A small public Python API for notebooks: load a model folder, score its heads, run the
behavioural check and the direct effects, and get plain pandas DataFrames back.

Every function is built from the library functions the stages use, with the stages' config
defaults (the sections' dataclasses, e.g. :class:`successor_heads.scores.config.ScoresConfig`),
so it gives the same numbers as ``successor-heads scores`` and ``successor-heads wild`` for the
same options::

    import successor_heads as sh

    m = sh.load("results/smollm2-135m/model")         # written by `successor-heads fetch`
    scores = sh.successor_scores(m, mode="resid")      # one row per head, best first
    drops = sh.behavioural_check(m, heads=[(23, 3)])   # log-prob drop when each head is mean-ablated
    de = sh.direct_effects(m, heads=[(23, 3)])         # loss increase per corpus token, per head

Heads are ``(layer, head)`` pairs counted from 0 and labelled ``"L{layer}H{head}"``. Dimension
names follow docs/DESIGN.md: ``n_layers n_heads d_head n_tokens``.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Iterable, Mapping, Sequence

from successor_heads.core.heads import head_label as _label
from successor_heads.core.loading import LoadedModel, open_model
from successor_heads.core.corpus import CorpusConfig
from successor_heads.core.tasks import TasksConfig
from successor_heads.scores.config import BehaviourConfig, ScoresConfig
from successor_heads.wild.config import WildConfig

__all__ = ["LoadedModel", "load", "successor_scores", "behavioural_check", "direct_effects"]

_SCORES, _BEHAVIOUR, _WILD = ScoresConfig(), BehaviourConfig(), WildConfig()


def load(model_dir: str | os.PathLike, dtype: str = "float32", device: str = "cpu", memory: str = "auto") -> LoadedModel:
    """Load a model folder written by the models stage (``successor-heads fetch model=<name>``
    writes ``results/<name>/model``; a ``local`` source copies any transformers folder there).

    Args:
        model_dir: the folder; it must hold ``manifest.json`` (written last by the fetch).
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` (scores are computed in float32
            whatever the dtype).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        memory: ``"auto"`` (stream the weights from disk when they exceed half the memory
            available), ``"in_memory"`` or ``"streamed"``: a streamed model reads each layer's
            weights only while it is used, with the same numbers
            (:func:`~successor_heads.core.loading.open_model`; ``manifest["memory"]`` says which).

    Returns:
        A :class:`~successor_heads.core.loading.LoadedModel` ``(model, tokenizer, adapter,
        manifest)``: the transformers causal LM (eval mode, no gradients), its tokenizer, the
        family adapter (``W_E``, ``W_U``, each head's ``W_V``, ``W_O``; ``adapter.dims`` gives
        ``n_layers``, ``n_heads``, ``d_model``, ``d_head``, ``d_vocab``) and ``manifest.json``.

    Raises:
        successor_heads.core.loading.ModelFetchError: the folder or its manifest is missing (the
            message names the command that fetches it).
        ValueError: unknown dtype or memory choice, or a model family without an adapter.
    """
    return open_model(model_dir, dtype, device, memory)


def _tasks(loaded: LoadedModel, tasks) -> list:
    """Built tasks: ``None`` (the ``tasks`` config defaults), a ``tasks`` config section
    (mapping or :class:`~successor_heads.core.tasks.TasksConfig`), or already-built tasks."""
    from successor_heads.core.tasks import build_tasks

    if isinstance(tasks, (list, tuple)):
        return list(tasks)
    tasks = TasksConfig(**tasks) if isinstance(tasks, Mapping) else tasks or TasksConfig()
    return build_tasks(loaded.tokenizer, **asdict(tasks))


def successor_scores(loaded: LoadedModel, mode: str = _SCORES.default_mode, norms: str = _SCORES.norms,
                     tasks: TasksConfig | Mapping | Sequence | None = None, value_bias: bool = _SCORES.value_bias,
                     batch_heads: int = _SCORES.batch_heads, progress: bool = False):
    """Successor score of every head from its effective OV circuit (paper Section 2), as the
    ``scores`` stage computes it.

    Args:
        loaded: from :func:`load`.
        mode: effective embedding, ``"mlp0"`` (the paper's, ``MLP0(W_E[t])``) or ``"resid"``
            (the residual stream entering the head's layer over BOS + token).
        norms: ``"raw"`` or ``"applied"`` (docs/DESIGN.md, Norm conventions).
        tasks: ``None`` (the succession tasks of the ``tasks`` config defaults), a ``tasks``
            config section (``{"numbers_max": 100}``), or tasks already built by
            :func:`successor_heads.core.tasks.build_tasks` (a subset scores only those).
        value_bias: add ``b_V W_O`` to each head's OV output (ours, not the paper's circuit).
        batch_heads: heads per OV product (memory only; the scores do not depend on it).
        progress: show a progress bar.

    Returns:
        A DataFrame with one row per head (``n_layers * n_heads`` rows), highest score first
        (stable, so ties keep layer-major order): ``layer``, ``head``, ``label``
        (``"L{layer}H{head}"``), ``score`` (pair-weighted fraction of (token, successor) pairs
        the head gets right over the non-held-out tasks, in [0, 1]), then one column per usable
        task with that task's fraction (NaN for a task without pairs). ``df.attrs`` holds
        ``mode``, ``norms``, ``value_bias``, ``chance_level`` and ``n_pairs`` (per task).

    Raises:
        ValueError: unknown ``mode`` or ``norms``; no task kept a single-token item.
    """
    import pandas as pd

    from successor_heads.core.effective_embedding import effective_embeddings, head_input_norm, neutral_prefix
    from successor_heads.scores.stage import task_indices
    from successor_heads.scores.successor_score import chance_level
    from successor_heads.scores.successor_score import successor_scores as score_heads

    head_input_norm(mode, norms)  # fails on a bad mode or norms before any forward pass
    idx, token_ids = task_indices(_tasks(loaded, tasks))
    a = loaded.adapter
    x = effective_embeddings(a, token_ids, mode, norms, prefix_ids=neutral_prefix(loaded.tokenizer),
                             progress=progress)
    r = score_heads(a, x, token_ids, idx, norms, batch_heads, progress, bool(value_bias), head_input_norm(mode, norms))
    d = a.dims
    rows = []
    for layer in range(d.n_layers):
        for head in range(d.n_heads):
            row = {"layer": layer, "head": head, "label": _label(layer, head), "score": float(r.overall[layer, head])}
            row.update({name: float(r.per_task[layer, head, k]) for k, name in enumerate(r.task_names)})
            rows.append(row)
    df = pd.DataFrame(rows).sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    df.attrs.update(mode=mode, norms=norms, value_bias=bool(value_bias), chance_level=float(chance_level(idx)),
                    n_pairs=dict(zip(r.task_names, (int(n) for n in r.n_pairs))))
    return df


def behavioural_check(loaded: LoadedModel, heads: Iterable[tuple[int, int]] | None = None,
                      ablation: str = _BEHAVIOUR.ablation, n_items: int = _BEHAVIOUR.n_items,
                      max_per_family: int = _BEHAVIOUR.max_per_family,
                      tasks: TasksConfig | Mapping | Sequence | None = None, progress: bool = False):
    """Behavioural check (ours, not the paper's): the drop in log-probability of the next item
    of ordinal lists (``"Monday, Tuesday, Wednesday,"`` -> ``" Thursday"``) when one head's ``z``
    is mean-ablated, as the ``scores`` stage computes it. A total effect: the ablation
    propagates through later layers; a BOS position is neither ablated nor in the mean.

    Args:
        loaded: from :func:`load`.
        heads: ``(layer, head)`` pairs to ablate; ``None``: every head.
        ablation: ``"mean"`` (mean ``z`` over the prompt positions) or ``"zero"``.
        n_items: list items shown before the one to predict.
        max_per_family: prompts per list family (days, months, number words, letters, numbers).
        tasks: as in :func:`successor_scores` (the prompts are built from them).
        progress: show a progress bar.

    Returns:
        A DataFrame with one row per checked head, largest drop first (stable): ``layer``,
        ``head``, ``label``, ``logprob_drop`` (nats, mean over prompts; positive: the head helps).
        ``df.attrs`` holds ``baseline_logprob`` (clean mean log-prob of the targets, nats),
        ``n_prompts`` and ``ablation``.

    Raises:
        ValueError: no ordinal-list prompt survives the tokenizer, unknown ``ablation``, an
            empty ``heads`` or a head out of range, ``n_items`` or ``max_per_family`` < 1.
    """
    import numpy as np
    import pandas as pd

    from successor_heads.core.tasks import ordinal_list_prompts
    from successor_heads.scores.behaviour import behavioural_drops

    tok = loaded.tokenizer
    prompts = ordinal_list_prompts(tok, _tasks(loaded, tasks), n_items, max_per_family)
    checked = None if heads is None else [(int(layer), int(head)) for layer, head in heads]
    drops, base = behavioural_drops(loaded.adapter, tok, prompts, ablation, progress, checked)
    rows = [{"layer": layer, "head": head, "label": _label(layer, head), "logprob_drop": float(drops[layer, head])}
            for layer, head in zip(*np.nonzero(~np.isnan(drops)))]
    df = pd.DataFrame(rows, columns=["layer", "head", "label", "logprob_drop"])
    df = df.astype({"layer": int, "head": int})
    df = df.sort_values("logprob_drop", ascending=False, kind="stable").reset_index(drop=True)
    df.attrs.update(baseline_logprob=base, n_prompts=len(prompts), ablation=ablation)
    return df


def direct_effects(loaded: LoadedModel, corpus=None, heads: Iterable[tuple[int, int]] | None = None,
                   final_norm: str = _WILD.final_norm, batch_size: int = _WILD.batch_size,
                   max_chunk_mb: int = _WILD.max_chunk_mb, compute_dtype: str = _WILD.compute_dtype,
                   progress: bool = False):
    """Direct-effect mean ablation on natural text (paper Section 4.3): for every next-token
    prediction of the corpus, how much the loss rises when one head's output is replaced by its
    mean on the direct path to the logits only, as the ``wild`` stage computes it.

    Args:
        loaded: from :func:`load`.
        corpus: ``None`` (the ``corpus`` config defaults: CPython's reference text, 16 contexts
            of 128 tokens), a ``corpus`` config section (mapping or
            :class:`~successor_heads.core.corpus.CorpusConfig`), a
            :class:`~successor_heads.core.corpus.Corpus`, or token ids
            ``[n_contexts, context_len]`` (tensor or array; a first column of the tokenizer's BOS
            is left out of the mean ``z``, as for a cut corpus).
        heads: ``(layer, head)`` pairs whose columns are returned; ``None``: every head. All
            heads are ablated in one pass either way, so this does not change the cost.
        final_norm: ``"frozen"`` (the final norm's scale of the clean run, the paper's) or
            ``"recomputed"``.
        batch_size: contexts per forward pass.
        max_chunk_mb: memory cap (MiB) of the activations captured for one pooled ablation.
        compute_dtype: ``"float32"`` or ``"bfloat16"`` (the per-head logit change, fast path only).
        progress: show a progress bar.

    Returns:
        A DataFrame with one row per scored token (``n_tokens = n_contexts * (context_len - 1)``,
        context-major): ``context_index``, ``position`` (of the token that predicts the target),
        ``target_id``, ``base_loss`` (clean loss, nats), then one column per head labelled
        ``"L{layer}H{head}"`` holding the loss increase (ablated loss - clean loss, nats).
        ``df.attrs`` holds ``method`` (``"fast"`` or ``"exact"``, both exact), ``final_norm``,
        ``compute_dtype``, ``corpus`` and ``memory`` (``"in_memory"`` or ``"streamed"``: a streamed
        model runs the whole corpus through one decoder layer at a time, as far as memory allows).

    Raises:
        successor_heads.core.corpus.CorpusError: the corpus cannot be loaded or is too short.
        ValueError: contexts shorter than 2 tokens, unknown ``final_norm`` or
            ``compute_dtype``, or a head out of range.
    """
    import numpy as np
    import pandas as pd
    import torch

    from successor_heads.core.corpus import Corpus, load_corpus
    from successor_heads.wild.direct_effect import check_compute_dtype, check_final_norm, corpus_direct_effects, mean_z
    from successor_heads.wild.winners import effects

    check_final_norm(final_norm)
    check_compute_dtype(compute_dtype)
    a, tok = loaded.adapter, loaded.tokenizer
    d = a.dims
    cols = ([(layer, head) for layer in range(d.n_layers) for head in range(d.n_heads)] if heads is None
            else [(int(layer), int(head)) for layer, head in heads])
    for layer, head in cols:
        if not (0 <= layer < d.n_layers and 0 <= head < d.n_heads):
            raise ValueError(f"head {_label(layer, head)} is out of range: the model has {d.n_layers} layers "
                             f"of {d.n_heads} heads")
    if corpus is None or isinstance(corpus, (Mapping, CorpusConfig)):
        corpus = CorpusConfig(**corpus) if isinstance(corpus, Mapping) else corpus or CorpusConfig()
        corpus = load_corpus(tok, **asdict(corpus), progress=progress)
    if isinstance(corpus, Corpus):
        tokens, has_bos, name = corpus.tokens, corpus.has_bos, corpus.name
    else:
        tokens = torch.as_tensor(np.asarray(corpus), dtype=torch.long)
        if tokens.ndim != 2:
            raise ValueError(f"corpus token ids must be [n_contexts, context_len]; got shape {tuple(tokens.shape)}")
        bos = getattr(tok, "bos_token_id", None)
        has_bos, name = bos is not None and bool((tokens[:, 0] == bos).all()), "token ids"
    mz = mean_z(a, tokens, int(batch_size), skip_first=has_bos, progress=progress)
    de = corpus_direct_effects(a, tokens, mz, int(batch_size), int(max_chunk_mb), progress=progress,
                               final_norm=final_norm, compute_dtype=compute_dtype)
    increase = effects(de.loss, de.base_loss, de.target_logit, de.base_logit)["loss"]
    data = {"context_index": de.context_index, "position": de.position, "target_id": de.target_ids,
            "base_loss": de.base_loss}
    data.update({_label(layer, head): increase[layer, head] for layer, head in cols})
    df = pd.DataFrame(data)
    df.attrs.update(method=de.method, final_norm=de.final_norm, compute_dtype=de.compute_dtype, corpus=name,
                    memory=loaded.manifest.get("memory", "in_memory"))
    return df
