import pytest

from tests.support.tiny import FAMILIES, make_model, make_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny byte-level BPE tokenizer shared by all tiny-model tests."""
    return make_tokenizer()


@pytest.fixture(autouse=True)
def _grad_mode_is_left_as_found():
    """Fail the test that leaves autograd switched off globally: it breaks SAE training in later tests."""
    import torch

    before = torch.is_grad_enabled()
    yield
    after = torch.is_grad_enabled()
    torch.set_grad_enabled(before)
    assert after == before, "this test changed torch's global grad mode; use a torch.no_grad() block instead"


@pytest.fixture(params=FAMILIES)
def tiny_model(request, tokenizer):
    """A fresh tiny random-weight model of each family (parametrised over
    :data:`tests.support.tiny.FAMILIES`): ``.family``, ``.model``, ``.tok``, ``.adapter``."""
    from types import SimpleNamespace

    from successor_heads.core.adapters import get_adapter

    model, tok = make_model(request.param, tokenizer)
    return SimpleNamespace(family=request.param, model=model, tok=tok, adapter=get_adapter(model))
