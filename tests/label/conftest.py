"""Fixtures of the label tests."""

import pytest

from label_stores import write_store


@pytest.fixture
def make_store(tmp_path):
    def make(episodes, name: str = "s"):
        return write_store(tmp_path / f"{name}.zarr", episodes)

    return make
