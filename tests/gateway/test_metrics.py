"""``/metrics`` over real HTTP: the counts match what was served, and every query of the Grafana
dashboard runs in a real Prometheus scraping a live gateway (tests/prometheus_support.py) and
charts that gateway's traffic."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelcanary.domain.state import Route
from modelcanary.domain.traffic import Cache, CircuitBreaker, Shadow, StickyKey
from modelcanary.gateway.app import VARIANT_HEADER, Gateway
from tests.prometheus_support import api, prometheus_server, wait_for_value

from .support import wait_for

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "modelcanary.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _route(registry: Any, rollout_id: str, weight: float, breaker: CircuitBreaker | None = None, **more: Any) -> Route:
    return Route(
        endpoint="fraud",
        baseline=registry.resolve("models:/fraud@champion"),
        candidate=registry.resolve("models:/fraud@challenger"),
        weight=weight,
        rollout_id=rollout_id,
        sticky=StickyKey(header="x-user-id"),
        breaker=breaker,
        **more,
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


def _traffic(http: Any, mlflow_registry: Any) -> tuple[Counter[str], Counter[str], Counter[tuple[str, str]]]:
    """40 requests of 1 to 3 rows, labels for every fourth: the requests and rows each variant
    served, and the labels it got by (variant, label)."""
    requests, rows, labels = Counter[str](), Counter[str](), Counter[tuple[str, str]]()
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
    return requests, rows, labels


@pytest.fixture
def served(serve: Any, store: Any, pyfunc_backend: Any, registry: Any, mlflow_registry: Any) -> Any:
    """A gateway at 50% that served 40 requests of 1 to 3 rows and got labels for some of them."""
    store.put_route(_route(registry, "r-metrics", 50.0))
    running = serve.start(Gateway(routes=store, backend=pyfunc_backend, telemetry=store, source="gw-m"))
    with running.client() as http:
        yield (http, *_traffic(http, mlflow_registry))


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


def test_every_query_on_the_dashboard_reads_the_gateways_series_by_their_labels(served: Any) -> None:
    """What evaluating the queries (below) does not show: a query of no gateway series at all
    still answers, and so does one grouping ``by (...)`` a label no series carries (one group, the
    label empty; a legend need not name it: p50/p99 group by lane)."""
    http = served[0]
    _, exported = _scrape(http)
    for expression in _expressions(json.loads(DASHBOARD.read_text())):
        names = re.findall(r"\bmodelcanary_[a-z0-9_]+", expression)
        assert names, f"no modelcanary series in {expression!r}"
        carried = set().union(*(exported.get(name, set()) for name in names))
        for group in re.findall(r"by \(([^)]*)\)", expression):
            for label in (part.strip() for part in group.split(",")):
                assert label in carried, f"{expression!r} groups by {label!r}, which {names} do not carry"


# What Grafana puts for the dashboard's variables: $endpoint as it writes a selection of several
# endpoints for a =~ matcher (fraud and one with no series: a plain = matcher would match nothing);
# $__rate_interval and $__range as windows reaching back past this test's Prometheus's first sample,
# taken before the traffic (Grafana's $__rate_interval is 4 scrape intervals or more, 1m by default).
VARIABLES = {"$endpoint": "(fraud|gone)", "$__rate_interval": "5m", "$__range": "1h"}
# Panels (title, refId) that chart faults this traffic has none of: every series at 0. Every other
# query charts some series above 0.
AT_ZERO = {
    ("Error ratio", "A"),
    ("Circuit breaker", "A"),
    ("Circuit breaker", "B"),
    ("Candidate calls abandoned at their deadline", "A"),
    ("Shadow lane: copies predicted and shed", "B"),
}


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(panel title, refId, expression, legend) of every query the panels chart."""
    return [
        (panel["title"], target["refId"], target["expr"], target.get("legendFormat", ""))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def _substituted(expression: str) -> str:
    for variable in sorted(VARIABLES, key=len, reverse=True):  # the longest first: none is cut short
        expression = expression.replace(variable, VARIABLES[variable])
    assert "$" not in expression, f"a dashboard variable this test does not set: {expression!r}"
    return expression


def test_every_query_on_the_dashboard_charts_a_live_gateway_in_prometheus(
    serve: Any, store: Any, pyfunc_backend: Any, registry: Any, mlflow_registry: Any, tmp_path: Path
) -> None:
    # every lane the dashboard charts gets traffic: the candidate at 50%, a shadow copy of each
    # request the baseline serves, and a cache that the repeated rows hit
    route = _route(registry, "r-dashboard", 50.0, cache=Cache(), shadow=Shadow(sample=1.0))
    store.put_route(route)
    gateway = Gateway(routes=store, backend=pyfunc_backend, telemetry=store, source="gw-dash")
    running = serve.start(gateway)
    with prometheus_server(tmp_path, {"gateway": running.url.removeprefix("http://")}) as prometheus:
        # a sample of the endpoint's three lanes before any traffic, so rate() sees the traffic as growth
        lanes = 'count(modelcanary_requests_total{endpoint="fraud"})'
        wait_for_value(prometheus, lanes, 3, "scraped the endpoint's lanes")
        with running.client() as http:
            requests, _, _ = _traffic(http, mlflow_registry)
            wait_for(lambda: gateway.shadow.done == requests["baseline"], "the shadow copies", timeout=30.0)
            samples, _ = _scrape(http)
        total = sum(value for (name, _), value in samples.items() if name == "modelcanary_requests_total")
        assert total == 40 + requests["baseline"]
        wait_for_value(prometheus, "sum(modelcanary_requests_total)", total, "scraped the traffic")

        dashboard = json.loads(DASHBOARD.read_text())
        # the endpoint variable's query (Grafana's label_values(), not PromQL: Grafana asks this API)
        (variable,) = [each for each in dashboard["templating"]["list"] if each["name"] == "endpoint"]
        match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["definition"])
        assert match, f"an endpoint variable query this test cannot evaluate: {variable['definition']!r}"
        values = api(prometheus, f"/api/v1/label/{match[2]}/values", **{"match[]": match[1]})
        assert values == {"status": "success", "data": ["fraud"]}, values

        targets = _targets(dashboard)
        assert dashboard["panels"] and all(panel["targets"] for panel in dashboard["panels"])
        assert not AT_ZERO - {(title, ref) for title, ref, _, _ in targets}, "AT_ZERO names a query the dashboard lacks"
        for title, ref, expression, legend in targets:
            query = _substituted(expression)
            answer = api(prometheus, "/api/v1/query", query=query)
            where = f"{title!r} {ref}: {query}"
            assert answer["status"] == "success", f"{where}: {answer.get('errorType')}: {answer.get('error')}"
            assert answer["data"]["resultType"] == "vector", where
            result = answer["data"]["result"]
            assert result, f"{where} charts nothing"
            for series in result:  # each label the legend shows is on every series it charts
                for label in re.findall(r"\{\{ *(\w+) *\}\}", legend):
                    assert label in series["metric"], f"{where}: legend {legend!r} names {label!r}, not on {series}"
            points = [float(series["value"][1]) for series in result]
            assert all(math.isfinite(point) for point in points), f"{where}: {result}"
            if (title, ref) in AT_ZERO:
                assert all(point == 0 for point in points), f"{where}: {result}"
            else:
                assert any(point > 0 for point in points), f"{where} charts only zeros: {result}"


def test_predictions_forgotten_and_labels_outside_rollouts_are_exported(serve: Any) -> None:
    """What a label cannot reach shows in /metrics: predictions past the recorder's bound, and
    labels of an endpoint that has no rollout (no rollout's telemetry holds them)."""
    from modelcanary.adapters.testing import FakeBackend, FunctionModel
    from modelcanary.domain.state import ModelVersion
    from modelcanary.gateway.app import StaticRoutes

    route = Route(endpoint="fraud", baseline=ModelVersion(name="fraud", version="1"))
    model = FunctionModel(lambda columns: [0.5] * len(columns["x"]))
    gateway = Gateway(
        routes=StaticRoutes({"fraud": route}, None),
        backend=FakeBackend({"fraud/1": model}),
        telemetry=None,
        source="gw",
        max_predictions=2,
    )
    running = serve.start(gateway)
    running.call(gateway.refresh())
    with running.client() as http:
        ids = [
            http.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": [{"x": 1.0}]}).json()[
                "prediction_ids"
            ][0]
            for _ in range(5)
        ]
        labels = [{"prediction_id": each, "label": 1} for each in ids[-2:]]
        assert http.post("/v1/feedback", json={"labels": labels}).status_code == 200
        samples, _ = _scrape(http)
    assert _value(samples, "modelcanary_forgotten_predictions_total") == 3
    assert _value(samples, "modelcanary_labels_without_rollout_total") == 2
    assert _value(samples, "modelcanary_labels_counted_unripe_total") == 0


def test_a_model_answering_nan_scores_counts_no_score_anywhere(serve: Any) -> None:
    """A NaN score went to /metrics' lowest bucket (making the histogram's sum NaN for good) and to
    the telemetry's top one, and its label was counted as on that score (found by review): it is
    an unscored answer, null to the client, in neither."""
    from modelcanary.adapters.testing import FakeBackend, FunctionModel
    from modelcanary.domain.state import ModelVersion
    from modelcanary.gateway.app import StaticRoutes

    route = Route(endpoint="fraud", baseline=ModelVersion(name="fraud", version="1"), rollout_id="r-nan")
    model = FunctionModel(lambda columns: [math.nan] * len(columns["x"]))
    backend = FakeBackend({"fraud/1": model})
    gateway = Gateway(routes=StaticRoutes({"fraud": route}, None), backend=backend, telemetry=None, source="gw")
    running = serve.start(gateway)
    running.call(gateway.refresh())
    with running.client() as http:
        answer = http.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": [{"x": 1.0}, {"x": 2.0}]})
        assert answer.status_code == 200 and answer.json()["predictions"] == [None, None]
        labels = [{"prediction_id": each, "label": 1} for each in answer.json()["prediction_ids"]]
        assert http.post("/v1/feedback", json={"labels": labels}).status_code == 200
        samples, _ = _scrape(http)
    score = {"endpoint": "fraud", "variant": "baseline", "lane": "live"}
    assert _value(samples, "modelcanary_prediction_score_count", **score) == 0
    assert _value(samples, "modelcanary_prediction_score_sum", **score) == 0

    async def changed() -> list[Any]:  # on the gateway's loop, which owns the recorder
        return gateway.recorder.changed()

    (counts,) = [row for rollout, _variant, row in running.call(changed()) if rollout == "r-nan"]
    assert sum(counts.score_counts) == 0 and counts.unscored_labels == 2 and counts.requests == 1
