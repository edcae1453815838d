import os

import pytest
import torch

from tests.support.tiny import FAMILIES, make_model, make_tokenizer

# One torch thread in the test process (and, unless set, in the command lines it starts; workflow
# jobs set theirs from snakemake.threads): a tiny model's operations take microseconds, so a
# thread pool only adds hand-offs, and on cores shared with other work its waiting threads spin
# (a behavioural-check test took 7-20 s with two threads on loaded cores, 0.2 s with one). Tests
# of thread handling set their own count (the `torch_threads` fixture).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture
def torch_threads():
    """``torch_threads(n)``: run the rest of the test with ``n`` torch threads (restored after)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny byte-level BPE tokenizer shared by all tiny-model tests."""
    return make_tokenizer()


@pytest.fixture(autouse=True)
def _grad_mode_is_left_as_found():
    """Fail the test that leaves autograd switched off globally: it breaks SAE training in later tests."""
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
