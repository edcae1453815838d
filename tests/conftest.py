import pytest

from successor_heads.tiny import make_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny byte-level BPE tokenizer shared by all tiny-model tests."""
    return make_tokenizer()
