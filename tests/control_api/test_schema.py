"""Schemathesis over the control API's own OpenAPI schema, as an admin: for every operation,
generated requests, valid and invalid, get no 5xx, and every response matches the schema (status
code, media type, body and headers). The responses are declared models, so a body that strays
from what the schema promises fails here."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from modelcanary.api.app import create_api
from modelcanary.controller.operations import start_rollout
from modelcanary.domain.access import Role

from .api_support import SPEC

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 20  # per operation and generation mode


def test_no_server_error_and_no_schema_violation(store: Any, registry: Any) -> None:
    _, secret = store.create_token(name="schemathesis-admin-0c1f", role=Role.ADMIN, endpoints=None, actor="test")
    # some real state for generated calls to meet: a rollout on fraud, a limited token
    start_rollout(store, registry, SPEC, source="spec", actor="test")
    store.create_token(name="fraud-viewer", role=Role.VIEWER, endpoints=["fraud"], actor="test")
    headers = {"Authorization": f"Bearer {secret}"}
    # the schema, like every path but health, needs a token
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_api(store, registry), headers=headers)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # an Err: an operation schemathesis cannot read
        operations.append(result.ok())
    assert len(operations) == 18  # the contract's 16 and the dashboard's whoami and report.html
    failures: list[str] = []
    for operation in operations:
        for mode in schemathesis.GenerationMode:

            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (health takes no input)
                assert mode is schemathesis.GenerationMode.NEGATIVE and not operation.body
            except Exception as exc:  # every operation's failures, not just the first one's
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert failures == [], "\n\n".join(failures)
