"""Fixtures of tests/train; the helpers live in train_helpers.py (a unique module name: every test folder has a conftest)."""

from pathlib import Path

import pytest

from train_helpers import label, write_store


@pytest.fixture(scope="session")
def small_run_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(store, label version dir) shared by tests that only read them."""
    root = tmp_path_factory.mktemp("data")
    store = write_store(root / "s.zarr")
    return store, label([store])
