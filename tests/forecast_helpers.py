"""Shared by the forecast tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: a second torch thread only waits for the
    first (a 6-step search took 22 s with two threads, 4.4 s with one, under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
