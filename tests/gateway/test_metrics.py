"""``/metrics`` over real HTTP: the counts match what was served, and every series the Grafana
dashboard charts is one a live gateway exports."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelcanary.domain.spec import CircuitBreaker, StickyKey
from modelcanary.domain.state import Route
from modelcanary.gateway.app import VARIANT_HEADER, Gateway

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "modelcanary.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _route(registry: Any, rollout_id: str, weight: float, breaker: CircuitBreaker | None = None) -> Route:
    return Route(
        endpoint="fraud",
        baseline=registry.resolve("models:/fraud@champion"),
        candidate=registry.resolve("models:/fraud@challenger"),
        weight=weight,
        rollout_id=rollout_id,
        sticky=StickyKey(header="x-user-id"),
        breaker=breaker,
    )


def _scrape(http: Any) -> tuple[Samples, dict[str, set[str]]]:
    """Every sample by (name, labels), and the label names each sample name carries."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
            labels.setdefault(sample.name, set()).update(sample.labels)
    return samples, labels


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def served(serve: Any, store: Any, pyfunc_backend: Any, registry: Any, mlflow_registry: Any) -> Any:
    """A gateway at 50% that served 40 requests of 1 to 3 rows and got labels for some of them."""
    store.put_route(_route(registry, "r-metrics", 50.0))
    running = serve.start(Gateway(routes=store, backend=pyfunc_backend, telemetry=store, source="gw-m"))
    requests, rows, labels = Counter[str](), Counter[str](), Counter[tuple[str, str]]()
    with running.client() as http:
        for who in range(40):
            batch = mlflow_registry.rows[: 1 + who % 3]
            response = http.post(
                "/v1/endpoints/fraud/invocations", json={"dataframe_records": batch}, headers={"x-user-id": f"u{who}"}
            )
            assert response.status_code == 200
            variant, ids = response.headers[VARIANT_HEADER], response.json()["prediction_ids"]
            requests[variant] += 1
            rows[variant] += len(ids)
            if who % 4 == 0:
                items = [{"prediction_id": i, "label": who % 8 // 4} for i in ids]
                assert http.post("/v1/feedback", json={"labels": items}).status_code == 200
                labels[(variant, str(who % 8 // 4))] += len(ids)
        yield http, requests, rows, labels


def test_metrics_count_what_was_served(served: Any) -> None:
    http, requests, rows, labels = served
    assert requests["baseline"] and requests["candidate"]
    samples, _ = _scrape(http)
    for variant in ("baseline", "candidate"):
        lane = {"endpoint": "fraud", "variant": variant, "lane": "live"}
        assert _value(samples, "modelcanary_requests_total", **lane) == requests[variant]
        assert _value(samples, "modelcanary_errors_total", **lane) == 0
        assert _value(samples, "modelcanary_predict_latency_seconds_count", **lane) == requests[variant]
        assert _value(samples, "modelcanary_predict_latency_seconds_bucket", **lane, le="+Inf") == requests[variant]
        assert _value(samples, "modelcanary_prediction_score_count", **lane) == rows[variant]
        for label in ("0", "1"):
            assert _value(samples, "modelcanary_labels_total", **lane, label=label) == labels[(variant, label)]
    assert _value(samples, "modelcanary_candidate_weight_percent", endpoint="fraud") == 50.0
    assert _value(samples, "modelcanary_circuit_breaker_open", endpoint="fraud") == 0.0


def test_a_tripped_breaker_shows_in_the_metrics(
    serve: Any, store: Any, registry: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    def broken(_inputs: dict[str, list[Any]]) -> list[Any]:
        raise RuntimeError("down")

    store.put_route(_route(registry, "r-metrics-broken", 100.0, CircuitBreaker(consecutive_failures=2)))
    running = serve.start(Gateway(routes=store, backend=with_candidate(broken), telemetry=store, source="gw-m"))
    with running.client() as http:
        for who in range(4):
            response = http.post(
                "/v1/endpoints/fraud/invocations",
                json={"dataframe_records": mlflow_registry.rows[:1]},
                headers={"x-user-id": f"u{who}"},
            )
            assert response.headers[VARIANT_HEADER] == "baseline"
        samples, _ = _scrape(http)
    candidate = {"endpoint": "fraud", "variant": "candidate", "lane": "live"}
    assert _value(samples, "modelcanary_requests_total", **candidate) == 2
    assert _value(samples, "modelcanary_errors_total", **candidate) == 2
    assert _value(samples, "modelcanary_requests_total", endpoint="fraud", variant="baseline", lane="live") == 4
    assert _value(samples, "modelcanary_circuit_breaker_open", endpoint="fraud") == 1.0
    assert _value(samples, "modelcanary_circuit_breaker_trips_total", endpoint="fraud") == 1.0
    assert _value(samples, "modelcanary_candidate_weight_percent", endpoint="fraud") == 0.0


def _expressions(node: Any) -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and template-variable queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_expressions(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_expressions(item))
    return found


def test_every_series_on_the_dashboard_is_exported(served: Any) -> None:
    http = served[0]
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"], "the dashboard has no panels"
    _, exported = _scrape(http)
    expressions = _expressions(dashboard)
    assert len(expressions) >= len(dashboard["panels"])
    for expression in expressions:
        names = re.findall(r"\bmodelcanary_[a-z0-9_]+", expression)
        assert names, f"no modelcanary series in {expression!r}"
        for name in names:
            assert name in exported, f"the dashboard charts {name}, which the gateway does not export"
        # and the labels it groups by are labels those series carry
        carried = set().union(*(exported[name] for name in names))
        for group in re.findall(r"by \(([^)]*)\)", expression):
            for label in (part.strip() for part in group.split(",")):
                assert label in carried, f"{expression!r} groups by {label!r}, which {names} do not carry"
