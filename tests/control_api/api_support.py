"""What the control API tests share: a spec, and a client holding a token per role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi.testclient import TestClient

from modelcanary.domain.access import Role

if TYPE_CHECKING:
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
