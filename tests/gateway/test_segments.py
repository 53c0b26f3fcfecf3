"""Segments over real HTTP: rules on headers and input fields decide who may see the candidate, and
telemetry kept per segment shows a regression confined to one segment, through to the report."""

from __future__ import annotations

from typing import Any

from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import start_rollout
from modelcanary.controller.report import rollout_report
from modelcanary.domain.state import Route
from modelcanary.domain.traffic import Segment, StickyKey
from modelcanary.engine.analysis import pair
from modelcanary.gateway.app import VARIANT_HEADER, Gateway
from modelcanary.gateway.router import bucket, choose


def test_only_the_allowed_segments_see_the_candidate_and_counts_are_kept_per_segment(
    serve: Any, store: Any, pyfunc_backend: Any, registry: Any, mlflow_registry: Any
) -> None:
    store.put_route(
        Route(
            endpoint="fraud",
            baseline=registry.resolve("models:/fraud@champion"),
            candidate=registry.resolve("models:/fraud@challenger"),
            weight=100.0,
            rollout_id="r-segments",
            sticky=StickyKey(header="x-user-id"),
            segments=(
                Segment(name="eu", header="x-region", values=["eu-west", "eu-central"]),
                Segment(name="gold", field="tier", values=["gold"]),  # an input field the model does not take
            ),
            candidate_segments=("eu",),
        )
    )
    running = serve.start(Gateway(routes=store, backend=pyfunc_backend, telemetry=store, source="gw-s"))
    row = mlflow_registry.rows[0]
    cases = [  # (headers, extra input fields, the variant expected)
        *[({"x-region": "eu-west"}, {}, "candidate")] * 4,
        ({"x-region": "eu-central"}, {}, "candidate"),
        *[({"x-region": "us-east"}, {}, "baseline")] * 4,
        *[({}, {}, "baseline")] * 3,
        *[({}, {"tier": "gold"}, "baseline")] * 2,
    ]
    eu_ids = []
    with running.client() as http:
        for who, (headers, extra, expected) in enumerate(cases):
            response = http.post(
                "/v1/endpoints/fraud/invocations",
                json={"dataframe_records": [{**row, **extra}]},
                headers={"x-user-id": f"u{who}", **headers},
            )
            assert response.status_code == 200, response.text
            assert response.headers[VARIANT_HEADER] == expected, (headers, extra)
            if expected == "candidate":
                eu_ids += response.json()["prediction_ids"]
        labels = [{"prediction_id": prediction_id, "label": 1} for prediction_id in eu_ids]
        assert http.post("/v1/feedback", json={"labels": labels}).json() == {"accepted": 5, "relayed": 0}
    running.flush()
    total = pair(store.read_telemetry("r-segments"))
    assert (total.candidate.requests, total.baseline.requests) == (5, 9)
    assert {name: counts.requests for name, counts in total.candidate.segments.items()} == {"eu": 5}
    assert {name: counts.requests for name, counts in total.baseline.segments.items()} == {"other": 7, "gold": 2}
    assert total.candidate.segments["eu"].labels == 5
    assert sum(total.candidate.segments["eu"].score_counts) == 5


SPEC = """\
apiVersion: modelcanary/v1
kind: Rollout
spec:
  endpoint: fraud
  baseline: models:/fraud@champion
  candidate: models:/fraud@challenger
  traffic:
    stickyKey: {header: x-user-id}
    circuitBreaker: {consecutiveFailures: 1000}
    segments:
      - {name: idle, field: velocity, in: ["0.0"]}
    steps: [{weight: 100, minRequests: 1000000, minDuration: 1h, maxDuration: 2h}]
  analysis:
    metrics: [{kind: error_rate}]
"""


def test_a_regression_confined_to_one_segment_shows_in_the_report(
    serve: Any, store: Any, registry: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    def fails_when_idle(inputs: dict[str, list[Any]]) -> list[Any]:
        if any(value == 0 for value in inputs["velocity"]):
            raise RuntimeError("cannot score an idle account")
        return [[0.3, 0.7] for _ in inputs["velocity"]]

    state = start_rollout(store, registry, SPEC, source="test", actor="test")
    Controller(store=store, registry=registry).tick()
    running = serve.start(
        Gateway(routes=store, backend=with_candidate(fails_when_idle), telemetry=store, source="gw-s")
    )
    row = mlflow_registry.rows[0]
    with running.client() as http:
        for who in range(10):
            velocity = 0.0 if who < 3 else 2.0
            response = http.post(
                "/v1/endpoints/fraud/invocations",
                json={"dataframe_records": [dict(row, velocity=velocity)]},
                headers={"x-user-id": f"u{who}"},
            )
            assert response.status_code == 200
    running.flush()
    report = rollout_report(store, state.id).to_json()
    assert report["requests"] == {"baseline": 3, "candidate": 10}  # the judge sees the whole rollout
    segments = report["segments"]
    assert set(segments) == {"idle", "other"}
    assert (segments["idle"]["candidate"]["requests"], segments["idle"]["candidate"]["error_rate"]) == (3, 1.0)
    assert (segments["other"]["candidate"]["requests"], segments["other"]["candidate"]["error_rate"]) == (7, 0.0)
    assert segments["idle"]["baseline"]["requests"] == 3  # the baseline answered for the failed calls
    assert segments["other"]["baseline"]["requests"] == 0


def _spelling_gateway(
    serve: Any, store: Any, registry: Any, backend: Any, *, weight: float = 100.0, **route: Any
) -> Any:
    """A gateway serving a rollout of fraud v1 to v2 at ``weight`` (with ``route``'s segments and sticky key)."""
    store.put_route(
        Route(
            endpoint="fraud",
            baseline=registry.resolve("models:/fraud@champion"),
            candidate=registry.resolve("models:/fraud@challenger"),
            weight=weight,
            rollout_id="r-spelling",
            **route,
        )
    )
    return serve.start(Gateway(routes=store, backend=backend, telemetry=store, source="gw-s"))


def test_a_field_rule_matches_its_value_however_the_json_spells_it(
    serve: Any, store: Any, pyfunc_backend: Any, registry: Any, mlflow_registry: Any
) -> None:
    # 0, 0.0 and "0" are one number for the rule "0.0", in V1 records and in a V2 FP64 tensor alike;
    # a JSON true is the rule's "true" (str() spelled them "0", "0.0", "True")
    running = _spelling_gateway(
        serve,
        store,
        registry,
        pyfunc_backend,
        segments=(
            Segment(name="idle", field="velocity", values=["0.0"]),
            Segment(name="newbie", field="new", values=["true"]),  # an input field the model does not take
        ),
        candidate_segments=("idle", "newbie"),
    )
    row = mlflow_registry.rows[0]
    records: list[tuple[dict[str, Any], str]] = [  # (extra input fields, the segment expected)
        ({"velocity": 0}, "idle"),
        ({"velocity": 0.0}, "idle"),
        ({"velocity": 2.0, "new": True}, "newbie"),
        ({"velocity": 2.0, "new": False}, "other"),
        ({"velocity": 0.5}, "other"),
    ]
    tensors = [([0], "idle"), ([0.0], "idle"), ([2.0], "other")]  # a V2 FP64 tensor written [0] parses as an int
    expected: dict[str, str] = {}  # the variant says the segment: only idle and newbie may see the candidate
    served: dict[str, str] = {}
    with running.client() as http:
        for extra, segment in records:
            response = http.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": [{**row, **extra}]})
            assert response.status_code == 200, response.text
            case = f"v1 {extra}"
            expected[case] = "baseline" if segment == "other" else "candidate"
            served[case] = response.headers[VARIANT_HEADER]
        for data, segment in tensors:
            inputs = [
                {"name": name, "shape": [1], "datatype": "FP64", "data": data if name == "velocity" else [row[name]]}
                for name in mlflow_registry.features
            ]
            response = http.post("/v2/models/fraud/infer", json={"inputs": inputs})
            assert response.status_code == 200, response.text
            case = f"v2 velocity {data}"
            expected[case] = "baseline" if segment == "other" else "candidate"
            served[case] = response.headers[VARIANT_HEADER]
    assert served == expected
    running.flush()
    total = pair(store.read_telemetry("r-spelling"))
    assert {name: counts.requests for name, counts in total.candidate.segments.items()} == {"idle": 4, "newbie": 1}
    assert {name: counts.requests for name, counts in total.baseline.segments.items()} == {"other": 3}


def test_a_header_rule_compares_the_header_as_sent(
    serve: Any, store: Any, pyfunc_backend: Any, registry: Any, mlflow_registry: Any
) -> None:
    # header values are text: case-sensitive, and "0" is not the rule's "0.0" (only input fields are canonical)
    running = _spelling_gateway(
        serve,
        store,
        registry,
        pyfunc_backend,
        segments=(
            Segment(name="eu", header="x-region", values=["eu-west"]),
            Segment(name="zero", header="x-tier", values=["0.0"]),
        ),
        candidate_segments=("eu", "zero"),
    )
    cases = [
        ({"x-region": "eu-west"}, "candidate"),
        ({"x-region": "EU-WEST"}, "baseline"),
        ({"x-tier": "0.0"}, "candidate"),
        ({"x-tier": "0"}, "baseline"),
    ]
    with running.client() as http:
        for headers, expected in cases:
            response = http.post(
                "/v1/endpoints/fraud/invocations",
                json={"dataframe_records": [mlflow_registry.rows[0]]},
                headers=headers,
            )
            assert response.status_code == 200, response.text
            assert response.headers[VARIANT_HEADER] == expected, headers


def test_a_sticky_key_in_a_field_is_one_user_however_the_json_spells_it(
    serve: Any, store: Any, pyfunc_backend: Any, registry: Any, mlflow_registry: Any
) -> None:
    # a weight between the buckets of "42" and "42.0": keyed on str(value), user 42 flipped variants with the spelling
    low, high = sorted((bucket("r-spelling", "42"), bucket("r-spelling", "42.0")))
    assert low < high, "the rollout id must put the two spellings in different buckets"
    running = _spelling_gateway(
        serve, store, registry, pyfunc_backend, weight=high / 100, sticky=StickyKey(field="user")
    )
    with running.client() as http:
        variants = set()
        for _ in range(3):
            for user in (42, 42.0, "42"):
                response = http.post(
                    "/v1/endpoints/fraud/invocations",
                    json={"dataframe_records": [{**mlflow_registry.rows[0], "user": user}]},
                )
                assert response.status_code == 200, response.text
                variants.add(response.headers[VARIANT_HEADER])
    expected = choose("r-spelling", "42", high / 100)
    assert variants == {expected.value}
