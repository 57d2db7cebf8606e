"""Fixtures of tests/policy; the helpers live in policy_helpers.py (a unique module name: every test folder has a conftest)."""

import pytest
import torch

from cfgrl.policy import PI0Policy
from policy_helpers import make_policy


@pytest.fixture
def policy() -> PI0Policy:
    return make_policy()


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models run fastest on one thread; with other tests busy, two threads thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
