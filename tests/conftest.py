import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module of tiny networks (waking idle threads costs more
    than they save), restored afterwards; nothing without torch.

    Use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    try:
        import torch
    except ImportError:
        yield
        return
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)
