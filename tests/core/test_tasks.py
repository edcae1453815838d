"""Succession datasets (tasks.py) against small in-memory tokenizers (offline, fast)."""

from __future__ import annotations


import re

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from successor_heads.core.tasks import TasksConfig
from successor_heads.core.tasks import (
    build_tasks,
    ordinal_list_prompts,
    scored_tasks,
    tasks_report,
)

DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = (
    "January February March April May June July August September October November December"
).split()


def fake_tokenizer(words, split_digits=False):
    """WordLevel tokenizer whose pieces are GPT-2-like words with their leading space.

    Only strings in ``words`` are in the vocabulary; anything else becomes [UNK]. With
    ``split_digits`` every digit is its own piece and a space before a digit is a separate
    " " piece (like SmolLM2 / Gemma3).
    """
    vocab = {"[UNK]": 0}
    for w in words:
        vocab.setdefault(w, len(vocab))
    if split_digits:
        pattern = r"[0-9]| ?[A-Za-z]+| ?[^A-Za-z0-9 ]| "
    else:
        pattern = r" ?[A-Za-z0-9]+| ?[^A-Za-z0-9 ]| "
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def by_name(tasks):
    return {t.name: t for t in tasks}


def test_days_and_months_wrap():
    tok = fake_tokenizer([" " + d for d in DAYS] + [" " + m for m in MONTHS])
    tasks = by_name(build_tasks(tok, numbers_max=5))
    days = tasks["days_spaced_title"]
    assert days.tokens == [" " + d for d in DAYS]
    assert days.successor == [1, 2, 3, 4, 5, 6, 0]  # Sunday -> Monday
    assert days.modulus == 7 and days.index == list(range(7))
    assert days.n_pairs_kept == 7 and days.n_pairs_dropped == 0 and days.usable
    months = tasks["months_spaced_title"]
    assert months.successor[-1] == 0 and months.modulus == 12  # December -> January
    assert months.pairs[-1] == (11, 0)
    assert months.positions[1] == 2  # February is the 2nd month
    assert tasks["day_prefixes_spaced_title"].modulus == 7
    assert tasks["month_prefixes_spaced_title"].modulus == 12


def test_numbers_do_not_wrap_and_use_their_value_as_index():
    tok = fake_tokenizer([f" {i}" for i in range(1, 6)])
    nums = by_name(build_tasks(tok, numbers_max=5, include_roman=False))["numbers_spaced"]
    assert nums.tokens == [" 1", " 2", " 3", " 4", " 5"]
    assert nums.successor == [1, 2, 3, 4, -1]
    assert nums.pairs == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert nums.index == [1, 2, 3, 4, 5] and nums.modulus is None
    assert nums.n_pairs_total == 4 and nums.n_pairs_dropped == 0


def test_dropped_middle_item_breaks_exactly_its_two_links():
    tok = fake_tokenizer([" " + d for d in DAYS if d != "Wednesday"])
    tasks = build_tasks(tok, numbers_max=5)
    days = by_name(tasks)["days_spaced_title"]
    assert days.tokens == [" Monday", " Tuesday", " Thursday", " Friday", " Saturday", " Sunday"]
    assert days.index == [0, 1, 3, 4, 5, 6]
    # Tuesday -> Wednesday and Wednesday -> Thursday are gone; the rest (with wrap) stay
    assert days.successor == [1, -1, 3, 4, 5, 0]
    assert days.n_pairs_kept == 5 and days.n_pairs_dropped == 2
    assert days.dropped == [" Wednesday"] and days.n_dropped == 1
    row = tasks_report(tasks).set_index("task").loc["days_spaced_title"]
    assert row["dropped"] == "Wednesday"
    assert (row["n_tokens_kept"], row["n_pairs_kept"], row["n_pairs_dropped"]) == (6, 5, 2)


def test_spacing_is_checked_exactly():
    # Only the spaced form is in the vocabulary: the unspaced item becomes [UNK] and is dropped.
    tok = fake_tokenizer([" " + d for d in DAYS])
    tasks = by_name(build_tasks(tok, numbers_max=5))
    assert len(tasks["days_spaced_title"].tokens) == 7
    unspaced = tasks["days_unspaced_title"]
    assert unspaced.tokens == [] and unspaced.n_dropped == 7 and not unspaced.usable
    assert tasks["days_spaced_lower"].tokens == []  # " monday" is not " Monday"


def test_sentencepiece_marker_and_prefix_space():
    # Llama-legacy style: a "▁" is prepended to every input, so "Monday" encodes to the
    # spaced token "▁Monday"; that id must count for " Monday" only, never for "Monday".
    vocab = {"[UNK]": 0, "▁Monday": 1, "▁Tuesday": 2, "▁": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    assert hf("Monday", add_special_tokens=False)["input_ids"] == [1]
    tasks = by_name(build_tasks(hf, numbers_max=5))
    spaced = tasks["days_spaced_title"]
    assert spaced.tokens == [" Monday", " Tuesday"] and spaced.token_ids == [1, 2]
    assert spaced.successor == [1, -1] and spaced.n_pairs_kept == 1 and not spaced.usable
    assert tasks["days_unspaced_title"].tokens == []


def test_roman_is_held_out():
    roman = ["I", "II", "III", "IV", "V"]
    tok = fake_tokenizer([" " + r for r in roman] + [" " + d for d in DAYS])
    tasks = build_tasks(tok, numbers_max=5, include_roman=True)
    rom = by_name(tasks)["roman_spaced"]
    assert rom.held_out and rom.family == "roman"
    assert rom.tokens == [" " + r for r in roman] and rom.index == [1, 2, 3, 4, 5]
    assert rom.usable
    assert all(not t.held_out for t in tasks if t.family != "roman")
    scored = scored_tasks(tasks)
    assert "roman_spaced" not in {t.name for t in scored}
    assert {t.name for t in scored} == {"days_spaced_title"}
    no_roman = build_tasks(tok, numbers_max=5, include_roman=False)
    assert not any(t.family == "roman" for t in no_roman)


@pytest.mark.parametrize("bad", [1, 0, -3, True, "10", 2.5])
def test_numbers_max_must_be_an_integer_at_least_two(bad):
    with pytest.raises(ValueError, match="numbers_max"):
        build_tasks(fake_tokenizer([]), numbers_max=bad)
    if not isinstance(bad, float):  # the config section says so when the run is composed
        with pytest.raises(ValueError, match=r"tasks\.numbers_max=.*must be >= 2"):
            TasksConfig(numbers_max=bad)


def test_names_and_report_columns():
    tasks = build_tasks(fake_tokenizer([" A", " B", " C"]))  # defaults: 200, roman
    names = [t.name for t in tasks]
    assert len(names) == len(set(names)) == 32
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", n) for n in names)
    for expected in ["days_spaced_title", "days_unspaced_lower", "numbers_spaced",
                     "letters_unspaced_upper", "number_words_spaced_title",
                     "ordinal_words_unspaced_lower", "month_prefixes_spaced_lower",
                     "roman_unspaced"]:
        assert expected in names
    df = tasks_report(tasks)
    assert list(df.columns) == ["task", "family", "spacing", "case", "n_items", "n_tokens_kept",
                                "n_pairs_kept", "n_pairs_dropped", "dropped", "held_out",
                                "usable"]
    assert len(df) == 32
    row = df.set_index("task").loc["numbers_spaced"]
    assert row["n_items"] == 200 and row["n_pairs_dropped"] == 199
    assert row["dropped"].startswith("1 2 3") and row["dropped"].endswith("(+192)")
    letters = df.set_index("task").loc["letters_spaced_upper"]
    assert (letters["n_tokens_kept"], letters["n_pairs_kept"], letters["usable"]) == (3, 2, True)


def test_ordinal_list_prompts():
    words = [" " + d for d in DAYS] + [",", " A", " B", " C", " D"]
    tok = fake_tokenizer(words + ["Monday"])
    tasks = build_tasks(tok, numbers_max=5)
    prompts = ordinal_list_prompts(tok, tasks, n_items=3)
    days = [p for p in prompts if p["family"] == "days"]
    assert len(days) == 7  # every start, wrapping
    first = days[0]
    assert first["prompt"] == "Monday, Tuesday, Wednesday,"
    assert first["target"] == " Thursday"
    assert first["target_id"] == tok.convert_tokens_to_ids(" Thursday")
    assert days[-1]["prompt"] == "Sunday, Monday, Tuesday," and days[-1]["target"] == " Wednesday"
    letters = [p for p in prompts if p["family"] == "letters"]
    assert [p["prompt"] for p in letters] == ["A, B, C,"]  # no wrap: only A..D
    assert ordinal_list_prompts(tok, tasks, n_items=3) == prompts  # deterministic
    assert len(ordinal_list_prompts(tok, tasks, n_items=3, max_per_family=2)) == 3
    with pytest.raises(ValueError):
        ordinal_list_prompts(tok, tasks, n_items=0)


def test_prompts_fall_back_to_unspaced_digits():
    # Digits split one by one and " 4" is [" ", "4"]: no spaced number is a single token,
    # so the prompt ends with ", " and the target is the bare digit.
    tok = fake_tokenizer([str(i) for i in range(10)] + [",", " "], split_digits=True)
    tasks = by_name(build_tasks(tok, numbers_max=200))
    assert tasks["numbers_spaced"].tokens == []
    assert tasks["numbers_unspaced"].tokens == [str(i) for i in range(1, 10)]
    assert tasks["numbers_unspaced"].dropped[:2] == ["10", "11"]
    prompts = ordinal_list_prompts(tok, list(tasks.values()), n_items=3)
    assert [p["prompt"] for p in prompts][:2] == ["1, 2, 3, ", "2, 3, 4, "]
    assert prompts[0]["target"] == "4" and prompts[0]["task"] == "numbers_unspaced"
    assert len(prompts) == 6  # 1..9, windows of 4
