import pytest
import torch
from transformers.utils import logging

from hf_select.testing import FAMILIES, tiny_model, tiny_tokenizer

logging.set_verbosity_error()
torch.set_num_threads(2)


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def llama():
    return tiny_model("llama")


@pytest.fixture
def one_thread():
    """Tiny models train ~10x faster on one thread when the 2 cores are shared (``usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
