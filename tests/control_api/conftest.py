"""The control API over a real SQLite store and the session's real MLflow registry, called through
FastAPI's TestClient (the real app, in process), with a token per role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient

from modelcanary.api.app import create_api
from modelcanary.domain.access import Role

from .api_support import Api

if TYPE_CHECKING:
    from modelcanary.adapters.registry.mlflow import MlflowRegistry
    from modelcanary.adapters.store.sql import SqlStore


@pytest.fixture
def api(store: SqlStore, registry: MlflowRegistry) -> Iterator[Api]:
    with TestClient(create_api(store, registry)) as client:
        found = Api(client=client, store=store, secrets={})
        for role in Role:
            found.token(role.value, role)
        yield found


from .rollout_story import ended_story, story  # noqa: E402, F401  (fixtures of the dashboard and report tests)
