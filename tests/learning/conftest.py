"""Fixtures of the learning tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread while a module runs (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): the
    machine is shared, and a worker process on one thread is compared with results computed here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
