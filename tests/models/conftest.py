"""Fixtures of the models tests: one tiny Llama (folder and GGUF) shared by every test."""

import pytest

from tests.models.tiny_llama import build_tiny_llama


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(HF folder, GGUF path, original model) of one tiny random Llama; read-only for the tests."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny"))
