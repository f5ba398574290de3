"""Fixtures of the device tests."""

import pytest


@pytest.fixture(scope="module")
def one_numba_thread():
    """One numba thread while a module runs (use it autouse in the module): on a shared machine, waking a parallel
    kernel's threads for tiny matrices costs far more than the work."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)
