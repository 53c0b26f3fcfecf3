"""The store contract runs on both engines: every test here that takes ``store``, ``store_url`` or
``open_store`` runs once on SQLite and once on PostgreSQL (see ``store_url`` in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from modelcanary.adapters.store.sql import SqlStore


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test here that touches a store runs once per engine."""
    if "store_url" in metafunc.fixturenames:
        metafunc.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def store(open_store: Callable[[], SqlStore]) -> SqlStore:
    return open_store()
