"""Shared test setup."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest, and reproducibly, on one torch thread on shared 2-core
    machines (two threads spinning on busy cores made generation ~25x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
