"""The paper's numbers (core/paper.py and paper_numbers.yaml): every entry says where the paper
reports it, and the stages and the paper table show the values of the data file."""

import pytest

from successor_heads.core.paper import PaperNumber, _load, paper_number, paper_values


def test_every_number_has_a_section_and_a_value():
    numbers = _load()
    assert set(numbers) == {"scores", "features", "editing", "wild"}
    for stage, entries in numbers.items():
        for key in entries:
            n = paper_number(stage, key)
            assert isinstance(n, PaperNumber) and n.value is not None
            assert n.section.startswith(("Section", "Appendix")), (stage, key, n.section)


def test_values_and_settings():
    assert paper_values("features") == {"coverage_mod10": 0.585, "nonnumeric_probe_correct": "94/102",
                                        "probe_sae_cosine_mod10": 0.71}
    va = paper_number("editing", "vector_arithmetic")
    assert va.value["numbers_20_29"] == 0.89 and va.setting == {"modulus": 10} and va.model == "Pythia-1.4B"
    assert paper_number("scores", "successor_heads").value == {"Pythia-1.4B": "L12H0", "GPT-2 small": "L9H1"}
    # callers get a copy: changing it does not change the next reader's value
    va.value["months"] = 0.0
    assert paper_number("editing", "vector_arithmetic").value["months"] == 0.53


def test_stages_read_the_data_file():
    from successor_heads.editing import vector_arithmetic
    from successor_heads.features import stage as features
    from successor_heads.wild import stage as wild
    from successor_heads.wild import winners
    from successor_heads.zoo import table

    assert features.PAPER == paper_values("features")
    assert vector_arithmetic.PAPER == paper_number("editing", "vector_arithmetic").value
    assert vector_arithmetic.PAPER_MODULUS == 10
    assert winners.PAPER_SHARES == {"acronym": 0.24, "greater-than": 0.19}
    assert wild.PAPER == {"n_contexts": 128, "context_len": 512, "head": "Pythia-1.4B L12H0",
                          "listing_wins": "64/64", "shares": winners.PAPER_SHARES}
    assert table.PAPER == {"pythia-1.4b": "L12H0", "gpt2-small": "L9H1"}


def test_unknown_keys():
    with pytest.raises(KeyError, match="known"):
        paper_number("scores", "nope")
    with pytest.raises(KeyError, match="known"):
        paper_values("zoo")
