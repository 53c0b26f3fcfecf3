"""Rollouts through the control API: start from a spec, read, steer, report, telemetry and the
audit log, with every change recorded under the token that made it."""

from __future__ import annotations

from collections.abc import Iterator

from modelcanary.domain.access import Role
from modelcanary.domain.phases import Phase
from modelcanary.domain.telemetry import Variant, VariantTelemetry

from .api_support import SPEC, Api


def test_start_pause_resume_abort_records_each_token_as_the_actor(api: Api) -> None:
    api.token("ann", Role.OPERATOR)
    started = api.call("ann", "POST", "/api/v1/rollouts", json={"spec": SPEC, "source": "fraud.yaml"})
    assert started.status_code == 201
    rollout = started.json()
    rollout_id = rollout["id"]
    assert (rollout["phase"], rollout["endpoint"], rollout["candidate"]["version"]) == ("pending", "fraud", "2")
    assert "judge_memory" not in rollout

    paused = api.call("ann", "POST", f"/api/v1/rollouts/{rollout_id}/pause", json={"reason": "on-call is busy"})
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert paused.json()["reason"] == "paused by token:ann: on-call is busy"
    again = api.call("ann", "POST", f"/api/v1/rollouts/{rollout_id}/pause")
    assert (again.status_code, again.json()["detail"]) == (409, f"rollout {rollout_id} is already paused")
    resumed = api.call("operator", "POST", f"/api/v1/rollouts/{rollout_id}/resume")
    assert resumed.json()["paused"] is False
    aborted = api.call("admin", "POST", f"/api/v1/rollouts/{rollout_id}/abort", json=None)
    assert aborted.json()["phase"] == "aborted"

    detail = api.call("viewer", "GET", f"/api/v1/rollouts/{rollout_id}").json()
    assert detail["spec"] == SPEC and detail["rollout"]["phase"] == "aborted"
    report = api.call("viewer", "GET", f"/api/v1/rollouts/{rollout_id}/report").json()
    assert [(t["actor"], t["reason"]) for t in report["history"]] == [
        ("token:ann", "paused by token:ann: on-call is busy"),
        ("token:operator", "resumed by token:operator"),
        ("token:admin", "aborted by token:admin"),
    ]
    events = api.call("viewer", "GET", "/api/v1/audit", params={"rollout": rollout_id}).json()
    assert [(e["actor"], e["action"]) for e in events] == [
        ("token:ann", "rollout.create"),
        ("token:ann", "rollout.pending"),
        ("token:operator", "rollout.pending"),
        ("token:admin", "rollout.aborted"),
    ]
    assert api.call("viewer", "GET", "/api/v1/audit/verify").json() == {
        "ok": True,
        "count": len(api.store.audit_events()),
        "broken": None,
    }
    finished = api.call("admin", "POST", f"/api/v1/rollouts/{rollout_id}/resume")
    assert finished.status_code == 409 and "has ended (aborted)" in finished.json()["detail"]


def test_a_bad_spec_is_422_naming_each_field_with_its_line_and_saves_nothing(api: Api) -> None:
    bad = SPEC.replace("weight: 5", "weight: 500").replace("kind: error_rate", "kind: nonsense")
    response = api.call("operator", "POST", "/api/v1/rollouts", json={"spec": bad, "source": "team/fraud.yaml"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["field"] == "spec" and problem["title"] == "Unprocessable Entity"
    assert problem["detail"].startswith("invalid rollout spec team/fraud.yaml:\n")
    assert "spec.traffic.steps[0].weight (line 10): Input should be less than or equal to 100" in problem["detail"]
    assert "(line 12)" in problem["detail"]  # the metric's kind, on its own line
    unknown = api.call("operator", "POST", "/api/v1/rollouts", json={"spec": SPEC.replace("fraud/2", "fraud/99")})
    assert unknown.status_code == 422 and "models:/fraud/99" in unknown.json()["detail"]
    control = api.call("operator", "POST", "/api/v1/rollouts", json={"spec": "\x1f", "source": "odd.yaml"})
    assert (control.status_code, control.json()["field"]) == (422, "spec")  # found by schemathesis: was a 500
    assert "odd.yaml" in control.json()["detail"] and "is not allowed in YAML" in control.json()["detail"]
    missing = api.call("operator", "POST", "/api/v1/rollouts", json={"source": "x"})
    assert (missing.status_code, missing.json()["field"]) == (422, "body.spec")
    no_day_spec = SPEC.replace("weight: 5", "weight: 2025-02-30")
    no_day = api.call("operator", "POST", "/api/v1/rollouts", json={"spec": no_day_spec})
    assert (no_day.status_code, no_day.json()["field"]) == (422, "spec")  # found by review: was a 500
    assert "line 10: cannot read '2025-02-30' as timestamp" in no_day.json()["detail"]
    assert api.store.list_rollouts() == []


def test_a_spec_past_64_kib_or_with_yaml_aliases_is_422_and_saves_nothing(api: Api) -> None:
    padded = SPEC + "#" * (2**16 - len(SPEC)) + "\n"  # one character over: a comment, valid YAML
    big = api.call("operator", "POST", "/api/v1/rollouts", json={"spec": padded})
    assert (big.status_code, big.json()["field"]) == (422, "body.spec")
    assert "at most 65536 characters" in big.json()["detail"]
    assert api.call("operator", "POST", "/api/v1/rollouts", json={"spec": padded[:-1]}).status_code == 201
    api.call("operator", "POST", f"/api/v1/rollouts/{api.store.list_rollouts()[0].id}/abort")
    aliased = SPEC.replace("endpoint: fraud", "endpoint: &e fraud") + "x: *e\n"
    refused = api.call("operator", "POST", "/api/v1/rollouts", json={"spec": aliased})
    assert (refused.status_code, refused.json()["field"]) == (422, "spec")
    assert "line 13: YAML aliases (*e) are not allowed" in refused.json()["detail"]
    assert len(api.store.list_rollouts()) == 1


def test_a_second_rollout_on_a_busy_endpoint_is_409_and_lists_filter_by_activity(api: Api) -> None:
    first = api.start()
    busy = api.call("operator", "POST", "/api/v1/rollouts", json={"spec": SPEC})
    assert busy.status_code == 409 and first in busy.json()["detail"]
    assert [r["id"] for r in api.call("viewer", "GET", "/api/v1/rollouts?active=true").json()] == [first]
    assert api.call("viewer", "GET", "/api/v1/rollouts?active=false").json() == []
    api.call("operator", "POST", f"/api/v1/rollouts/{first}/abort")
    second = api.start()
    assert [r["id"] for r in api.call("viewer", "GET", "/api/v1/rollouts").json()] == [second, first]
    assert [r["id"] for r in api.call("viewer", "GET", "/api/v1/rollouts?active=false").json()] == [first]
    bad = api.call("viewer", "GET", "/api/v1/rollouts?active=maybe")
    assert (bad.status_code, bad.json()["field"]) == (422, "query.active")


def test_promote_and_approve_are_409_when_they_do_not_fit_the_phase(api: Api) -> None:
    rollout_id = api.start()
    promote = api.call("approver", "POST", f"/api/v1/rollouts/{rollout_id}/promote")
    assert (promote.status_code, promote.json()["detail"]) == (
        409,
        f"rollout {rollout_id} has not started yet; it cannot be promoted",
    )
    approve = api.call("approver", "POST", f"/api/v1/rollouts/{rollout_id}/approve")
    assert approve.status_code == 409 and "not awaiting approval" in approve.json()["detail"]
    assert api.call("approver", "POST", "/api/v1/rollouts/nope/approve").status_code == 404


def test_report_and_telemetry_show_the_stored_counts_and_every_metrics_evidence(api: Api) -> None:
    rollout_id = api.start()
    baseline, candidate = VariantTelemetry(), VariantTelemetry()
    for index in range(40):
        baseline.observe(latency_ms=5.0 + index)
        candidate.observe(latency_ms=7.0, error=index % 10 == 0)
    api.store.write_telemetry(
        "gw-1", [(rollout_id, Variant.BASELINE, baseline), (rollout_id, Variant.CANDIDATE, candidate)]
    )

    telemetry = api.call("viewer", "GET", f"/api/v1/rollouts/{rollout_id}/telemetry").json()
    assert telemetry == {"baseline": baseline.to_json(), "candidate": candidate.to_json()}
    report = api.call("viewer", "GET", f"/api/v1/rollouts/{rollout_id}/report").json()
    assert report["requests"] == {"baseline": 40, "candidate": 40}
    [metric] = report["judgement"]["metrics"]
    assert metric["kind"] == "error_rate"
    assert (metric["baseline_samples"], metric["candidate_samples"]) == (40, 40)
    assert metric["candidate"] == 0.1 and metric["baseline"] == 0.0
    assert {"e_value", "bound", "limit", "verdict", "reason"} <= set(metric)
    # 40 requests a variant is under the metric's minimum: no data, never a pass, though it shows
    assert (report["judgement"]["verdict"], metric["verdict"]) == ("no_data", "no_data")
    assert "40 candidate and 40 baseline requests, 100 needed of each" in metric["reason"]
    assert report["rollout"]["id"] == rollout_id and report["history"] == []


GATED_SPEC = """\
apiVersion: modelcanary/v1
kind: Rollout
metadata: {name: fraud-v2}
spec:
  endpoint: fraud
  baseline: models:/fraud/1
  candidate: models:/fraud/2
  traffic:
    steps:
      - {weight: 5, minRequests: 0, minDuration: 0s}
      - {approval: {role: admin}}
      - {weight: 50}
  analysis:
    metrics: [{kind: error_rate}]
  gates:
    promote: [{policy: require-approver, params: {minApprovals: 2}}]
"""


def _tick_with_a_pass(api: Api, rollout_id: str) -> None:
    """One controller decision on a passing judgement, saved through the store."""
    from modelcanary.domain.judgement import Judgement, MetricJudgement, Verdict
    from modelcanary.domain.spec import load_spec
    from modelcanary.engine.decide import decide

    state, text = api.store.get(rollout_id)
    passed = MetricJudgement(
        name="error-rate",
        kind="error_rate",
        verdict=Verdict.PASS,
        baseline=0.0,
        candidate=0.0,
        limit=0.01,
        baseline_samples=1000,
        candidate_samples=1000,
        reason="within its margin",
    )
    outcome = decide(
        state,
        load_spec(text),
        judgement=Judgement(judge="sequential", metrics=(passed,)),
        candidate_requests=1000,
        now=state.updated_at + 1,
    )
    api.store.save(outcome, expected_version=state.version)


def test_an_approval_step_needs_its_role_and_a_denied_promotion_is_403(api: Api) -> None:
    rollout_id = api.start(spec=GATED_SPEC)
    _tick_with_a_pass(api, rollout_id)  # pending -> step 1
    _tick_with_a_pass(api, rollout_id)  # step 1 passed -> the approval step
    assert api.store.get(rollout_id)[0].phase is Phase.AWAITING_APPROVAL

    refused = api.call("approver", "POST", f"/api/v1/rollouts/{rollout_id}/approve")
    assert refused.status_code == 403 and "needs the admin role" in refused.json()["detail"]
    approved = api.call("admin", "POST", f"/api/v1/rollouts/{rollout_id}/approve")
    assert approved.status_code == 200 and approved.json()["phase"] == "canary"

    # one approver so far (admin's, again by promoting): the promote gate asks for two different people
    denied = api.call("admin", "POST", f"/api/v1/rollouts/{rollout_id}/promote")
    assert denied.status_code == 403, denied.text
    assert denied.headers["content-type"].startswith("application/problem+json")
    assert "require-approver" in denied.json()["detail"] and "1 of 2 approvals" in denied.json()["detail"]
    assert api.store.get(rollout_id)[0].phase is Phase.CANARY  # refused: nothing changed
    assert any(event["action"] == "rollout.command_refused" for event in api.store.audit_events(rollout_id))
    # a second person's promote is that person's approval too: the gate counts it
    promoted = api.call("approver", "POST", f"/api/v1/rollouts/{rollout_id}/promote")
    assert promoted.status_code == 200 and promoted.json()["phase"] == "promoted", promoted.text


def test_a_promote_that_would_skip_an_admin_approval_step_needs_the_admin_role(api: Api) -> None:
    rollout_id = api.start(spec=GATED_SPEC.replace("minApprovals: 2", "minApprovals: 1"))
    _tick_with_a_pass(api, rollout_id)  # pending -> step 1, the admin's approval step still ahead
    for _ in range(2):  # before the approval step, then at it
        refused = api.call("approver", "POST", f"/api/v1/rollouts/{rollout_id}/promote")
        assert refused.status_code == 403 and "an approval step ahead needs the admin role" in refused.json()["detail"]
        assert api.store.get(rollout_id)[0].phase in (Phase.CANARY, Phase.AWAITING_APPROVAL)
        _tick_with_a_pass(api, rollout_id)
    assert api.store.get(rollout_id)[0].phase is Phase.AWAITING_APPROVAL
    promoted = api.call("admin", "POST", f"/api/v1/rollouts/{rollout_id}/promote")
    assert promoted.status_code == 200 and promoted.json()["phase"] == "promoted", promoted.text


def test_a_body_past_the_limit_is_413_whether_declared_or_streamed_and_saves_nothing(api: Api) -> None:
    from modelcanary.api.problems import MAX_BODY_BYTES

    body = b'{"spec": "' + b"#" * MAX_BODY_BYTES + b'"}'
    declared = api.call("operator", "POST", "/api/v1/rollouts", content=body)
    assert (declared.status_code, declared.json()["field"]) == (413, "body")
    assert f"larger than {MAX_BODY_BYTES} bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is found while it streams in
        for start in range(0, len(body), 1 << 16):
            yield body[start : start + (1 << 16)]

    streamed = api.call("operator", "POST", "/api/v1/rollouts", content=chunks())
    assert (streamed.status_code, streamed.json()["field"]) == (413, "body")
    assert api.call(None, "POST", "/api/v1/rollouts", content=body).status_code == 401  # no token: unread
    assert api.store.list_rollouts() == []
