"""An autouse fixture for test modules that train tiny models: import it as ``from single_thread import one_thread``."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: torch's thread pool costs far more than it saves (10x on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
