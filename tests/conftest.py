"""Fixtures shared by the test packages (the helpers that are not fixtures live in ``fixtures.py``)."""

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread while a module runs (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): the
    machine is shared, and a worker process on one thread is compared with results computed here."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_kernel_thread():
    """The device kernels on one thread while a module runs (use it autouse in the module): numba's (the learning
    step's integer kernels) and the C runtime's (the packed backend's kernels and the C model, ``cruntime``). On a
    shared machine, waking a parallel kernel's threads for tiny matrices costs far more than the work."""
    import numba

    from bnncl.device import cruntime

    before = numba.get_num_threads(), cruntime.get_num_threads()
    numba.set_num_threads(1)
    cruntime.set_num_threads(1)
    yield
    numba.set_num_threads(before[0])
    cruntime.set_num_threads(before[1])
