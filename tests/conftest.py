"""Shared test set-up: every test starts from a known seed, on one thread.

The tests use tiny models, which run fastest on one thread (threads only add overhead there),
and one thread keeps the results the same however busy the machine is.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
