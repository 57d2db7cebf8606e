"""Fixtures of tests/policy; the helpers live in policy_helpers.py (a unique module name: every test folder has a conftest)."""

import pytest

from cfgrl.policy import PI0Policy
from policy_helpers import make_policy


@pytest.fixture
def policy() -> PI0Policy:
    return make_policy()
