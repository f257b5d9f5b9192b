"""Shared test set-up: keep torch on few threads and make every test start from a known seed."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
