"""Winning heads on a hand-made loss table, the categorisation rules on hand-made examples,
token strings, and the numbered-listing prompts."""

import numpy as np
import pytest
import torch

from successor_heads.wild.winners import (CATEGORIES, SuccessionIndex, categorise, category_shares, effects,
                                     token_strings, win_counts, winning_heads)


def test_winning_heads_hand_made_table():
    # 2 layers x 2 heads x 4 tokens; baseline loss 1.0 everywhere
    base = np.ones(4)
    loss = np.array([[[1.5, 1.0, 0.9, 1.0], [1.2, 1.1, 0.8, 1.0]],
                     [[1.1, 3.0, 0.7, 1.0], [1.6, 1.0, 0.9, 1.0]]])
    logit = np.array([[[5.0, 5.0, 5.0, 5.0], [4.0, 5.0, 5.0, 5.0]],
                      [[5.0, 5.0, 5.0, 5.0], [5.0, 3.0, 5.0, 5.0]]])
    e = effects(loss, base, logit, np.full(4, 5.0))
    w = winning_heads(e["loss"])
    # token 0: L1H1 (+0.6) beats L0H0 (+0.5); token 1: L1H0; tokens 2 and 3: nothing hurts -> -1
    assert w.tolist() == [3, 2, -1, -1]
    assert winning_heads(e["logit"]).tolist() == [1, 3, -1, -1]
    assert winning_heads(e["loss"], min_effect=0.55).tolist() == [3, 2, -1, -1]
    assert winning_heads(e["loss"], min_effect=0.7).tolist() == [-1, 2, -1, -1]
    assert win_counts(w, 2, 2).tolist() == [[0, 0], [1, 1]]
    with pytest.raises(ValueError, match="n_layers, n_heads, n_tokens"):
        winning_heads(np.zeros((2, 3)))


@pytest.fixture(scope="module")
def index(tokenizer):
    from successor_heads.core.tasks import build_tasks

    return SuccessionIndex.from_tasks(build_tasks(tokenizer))


def _cat(index, text_tokens, target):
    return categorise(list(text_tokens), target, index)


@pytest.mark.parametrize("context,target,expected", [
    # successorship: the predecessor appears in the context
    (["1", ".", " apples", "\n", "2", ".", " pears", "\n"], "3", "successorship"),
    (["We", " met", " on", " Monday", " and", " again", " on"], " Tuesday", "successorship"),
    (["from", " December", " to"], " January", "successorship"),  # months wrap
    (["the", " first", " and", " the"], " second", "successorship"),
    (["chapter", " 1", "9", " then", " chapter"], " 20", "successorship"),  # digits merge into 19
    (["lists", "[", "0", "].", "append", "(", "3", ")", " lists", "["], "1", "successorship"),
    (["Sunday", " was", " the", " 5", "th", " and"], " Monday", "successorship"),  # days wrap
    (["chapter", " 1", "9", " then", " chapter"], " 2", "other"),  # 1 and 9 are one number, 19
    # acronym: letters continue the initials of preceding capitalised words
    (["the", " Application", " Programming", " Interface", " (", "AP"], "I", "acronym"),
    (["the", " Portable", " Document", " Format", " ("], "PDF", "acronym"),
    (["Python", " Enhancement", " Proposal", " ("], "PE", "acronym"),
    # greater-than: a bigger number than the most recent one, not its successor
    (["from", " 1990", " to"], " 1995", "greater-than"),
    (["pages", " 3", " to"], " 7", "greater-than"),
    (["the", " second", " and", " the"], " fifth", "greater-than"),
    # copying: the target already appears in the context
    (["the", " cat", " sat", " on", " the"], " cat", "copying"),
    (["x", " =", " 5", ";", " y", " =", " 7", " +"], " 5", "copying"),
    # other
    (["the", " cat", " sat", " on", " the"], " mat", "other"),
    (["hello", " world"], ",", "other"),
    (["the", " year", " 19"], "95", "other"),  # continues a number: not compared as a new number
    (["a", " cat"], " B", "other"),  # letters keep their case; one letter alone is not an acronym
    (["x", " =", " 5", ";", " y", " =", " 3", " +"], " 5", "greater-than"),
])
def test_categorise_hand_made(index, context, target, expected):
    assert _cat(index, context, target) == expected


def test_category_priority(index):
    # "3" after "2" is also a copy of an earlier "3": successorship wins
    assert _cat(index, ["3", " apples", " 2", " pears", "\n"], " 3") == "successorship"
    # a repeated acronym is still an acronym
    assert _cat(index, ["Portable", " Document", " Format", " PDF", " and", " the"], " PDF") == "acronym"
    # a number smaller than the last one that already appeared is copying, not greater-than
    assert _cat(index, [" 2", " then", " 9", " then"], " 2") == "copying"


def test_category_shares():
    s = category_shares(["acronym", "acronym", "other", "copying"])
    assert s["acronym"] == 0.5 and s["other"] == 0.25 and s["successorship"] == 0
    assert set(s) == set(CATEGORIES)
    assert sum(category_shares([]).values()) == 0


def test_token_strings_concatenate_to_text(tokenizer):
    text = "Monday, Tuesday and 12 apples\nthe lazy dog"
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    strs = token_strings(tokenizer, ids)
    assert strs[0] == "" and "".join(strs) == text and len(strs) == len(ids)


def test_listing_prompts_deterministic():
    from successor_heads.wild.listings import STYLES, listing_prompts

    ps = listing_prompts(64)
    assert len(ps) == 64 and len({p.prompt for p in ps}) == 64 and ps == listing_prompts(64)
    assert {p.style for p in ps} == set(STYLES) and {p.n_items for p in ps} == {2, 3, 4, 5}
    first = ps[0]
    assert (first.prompt, first.target) == ("1. apples\n2. pears\n", "3")
    assert any(p.prompt.endswith("Part") and p.target == " Four" for p in ps)
    with pytest.raises(ValueError, match="between 1 and 128"):
        listing_prompts(500)


def test_listing_encoding_and_direct_effects(tokenizer):
    from successor_heads.core.adapters import get_adapter
    from successor_heads.wild.direct_effect import mean_z
    from successor_heads.wild.listings import encode_listing, listing_direct_effects, listing_prompts
    from tests.support.tiny import make_model

    all_ps = listing_prompts(64)
    ps = [all_ps[i] for i in (0, 1, 12, 45, 52, 60, 4, 8)]  # 4 styles; with the tiny tokenizer, 0/60, 1/45/52, 4/8 share a length
    for p in ps:
        ids, tgt = encode_listing(tokenizer, p)
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode([tgt]).strip() and tokenizer.decode([tgt]).strip() in p.target
    model, tok = make_model("llama", tokenizer)
    a = get_adapter(model)
    ids = torch.tensor([tok("1. apples\n2. pears\n3. plums and Monday Tuesday")["input_ids"]])
    res = listing_direct_effects(a, tok, ps, mean_z(a, ids, skip_first=False))
    assert res["loss"].shape == (a.dims.n_layers, a.dims.n_heads, 8) and res["base_loss"].shape == (8,)
    # prompts are batched by length and put back in order: each equals its own single run
    from successor_heads.wild.direct_effect import corpus_direct_effects

    for i, p in enumerate(ps):
        pid, t = encode_listing(tok, p)
        de = corpus_direct_effects(a, torch.tensor([pid + [t]]), mean_z(a, ids, skip_first=False))
        np.testing.assert_allclose(de.loss[:, :, -1], res["loss"][:, :, i], atol=1e-5)
        assert res["target_ids"][i] == t


def test_wild_stage_end_to_end_on_a_tiny_model(tmp_path):
    """The stage runner writes every output, with shapes and provenance, from a tiny model."""
    import json

    from pathlib import Path

    from successor_heads.core import layout
    from successor_heads.config import build as validate
    from successor_heads.core.handoff import StageInputError
    from successor_heads.core.h5io import read_h5, write_h5
    from successor_heads.models.fetch import fetch_model
    from successor_heads.wild import stage as wild
    from tests.support.tiny import save_tiny_model

    src = save_tiny_model("llama", tmp_path / "src")
    cfg = validate({"model": {"name": "tiny", "family": "llama", "source": {"kind": "local", "path": str(src)}},
                    "corpus": {"n_contexts": 3, "context_len": 24}, "wild": {"n_listing_prompts": 4, "batch_size": 2}})
    results = tmp_path / "results"
    ins, outs = layout.inputs("wild", results, "tiny"), layout.outputs("wild", results, "tiny")
    with pytest.raises(StageInputError, match="successor-heads scores model=tiny"):
        wild.run(cfg, ins, outs, progress=False)
    fetch_model(layout.model_dir(ins["manifest"]), **cfg.model.fetch_args())
    overall = np.zeros((2, 4), dtype=np.float32)
    overall[1, 2] = 0.9
    write_h5(ins["scores"], {"overall_resid": overall}, {"default_mode": "resid"})
    summary = wild.run(cfg, ins, outs, progress=False)
    for name, path in outs.items():
        assert Path(path).is_file(), name
    data, attrs = read_h5(outs["h5"])
    assert data["loss"].shape == (2, 4, 3 * 23) and data["baseline_loss"].shape == (3 * 23,)
    assert data["contexts"].shape == (3, 24) and attrs["model"] == "tiny" and attrs["corpus"] == "pydoc"
    assert summary["successor_head"] == "L1H2" and summary["n_tokens"] == 69
    assert attrs["final_norm"] == summary["final_norm"] == "frozen"  # the paper's direct effect, by default
    assert json.loads(Path(outs["summary"]).read_text())["listing_wins_loss"] <= 4
    import pandas as pd

    cats = pd.read_csv(outs["categories"])
    assert len(cats) == 2 * len(CATEGORIES) and set(cats.criterion) == {"loss", "logit"}
    assert len(pd.read_csv(outs["listings"])) == 4
    hw = pd.read_csv(outs["head_wins"])
    assert hw.wins_loss.sum() <= 69 and len(hw) == 8
