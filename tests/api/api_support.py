"""What the control API tests share: a spec, and the ``api`` fixture: the control API over a real
SQLite store and the session's real MLflow registry, called through FastAPI's TestClient (the real
app, in process), with a token per role. Test modules load it with ``pytest_plugins``: a conftest.py in
this folder would shadow tests/conftest.py when pytest imports conftests for their doctests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from modelcanary.api.app import create_api
from modelcanary.domain.access import Role

if TYPE_CHECKING:
    from modelcanary.adapters.registry.mlflow import MlflowRegistry
    from modelcanary.adapters.store.sql import SqlStore

SPEC = """\
apiVersion: modelcanary/v1
kind: Rollout
metadata: {name: fraud-v2}
spec:
  endpoint: fraud
  baseline: models:/fraud/1
  candidate: models:/fraud/2
  traffic:
    steps:
      - {weight: 5, minRequests: 10, minDuration: 1s}
  analysis:
    metrics: [{kind: error_rate}]
"""


def spec_for(endpoint: str) -> str:
    return SPEC.replace("endpoint: fraud", f"endpoint: {endpoint}")


@dataclass
class Api:
    client: TestClient
    store: SqlStore
    secrets: dict[str, str]  # token name -> secret; one token per role, named after it

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[name]}"}

    def call(self, who: str | None, method: str, path: str, **kwargs: Any) -> Any:
        headers = self.headers(who) if who is not None else {}
        return self.client.request(method, path, headers=headers, **kwargs)

    def token(self, name: str, role: Role, endpoints: list[str] | None = None) -> str:
        _, secret = self.store.create_token(name=name, role=role, endpoints=endpoints, actor="test")
        self.secrets[name] = secret
        return secret

    def start(self, who: str = "operator", spec: str = SPEC) -> str:
        response = self.call(who, "POST", "/api/v1/rollouts", json={"spec": spec})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


@pytest.fixture
def api(store: SqlStore, registry: MlflowRegistry) -> Iterator[Api]:
    with TestClient(create_api(store, registry)) as client:
        found = Api(client=client, store=store, secrets={})
        for role in Role:
            found.token(role.value, role)
        yield found
