"""The built-in policies fed odd but plausible inputs, on real regopy: each denies, saying what is
wrong, and never reads a mistake as an allowance (data dated in the future as fresh, a misspelled
freeze as no freeze). tests/adapters/test_rego_policy.py has each one allowing and denying the
versions of a real MLflow registry."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from modelcanary.adapters.policy.rego import RegoPolicyEngine
from modelcanary.adapters.registry.mlflow import DATA_AS_OF_TAG, MlflowRegistry
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.controller.operations import start_rollout
from modelcanary.domain.errors import PolicyDenied
from modelcanary.domain.gates import Gate
from modelcanary.domain.state import ModelInfo, ModelVersion
from modelcanary.engine.gates import gate_input
from modelcanary.ports import Policy

DAY = 86_400.0
THURSDAY_NOON = 1_798_113_600.0  # 2026-12-24T12:00:00Z
ENGINE = RegoPolicyEngine()


def decide(policy: str, params: dict[str, Any], document: dict[str, Any]) -> list[str]:
    source = ENGINE.source(policy, relative_to=None)
    return [d.message for d in ENGINE.evaluate(Gate.START, [Policy(policy, source, params)], document).denials]


def freshness(data_as_of: float, params: dict[str, Any] | None = None) -> list[str]:
    models = {
        "baseline": (ModelVersion(name="m", version="1"), None),
        "candidate": (ModelVersion(name="m", version="2"), ModelInfo(data_as_of=data_as_of)),
    }
    document = gate_input(
        Gate.START, spec_json={}, state=None, models=models, judgement=None, actor="t", now=THURSDAY_NOON
    )
    return decide("data-freshness", params or {}, document)


def test_data_freshness_denies_data_dated_in_the_future_naming_the_date() -> None:
    assert freshness(THURSDAY_NOON + 3 * DAY) == [
        "the candidate's training data is dated 3.0 days in the future (data.as_of 2026-12-27T12:00:00Z);"
        " clockSkewDays allows 1"
    ]


@pytest.mark.parametrize(
    ("ahead_days", "params", "denied"),
    [(0.5, {}, False), (1.5, {}, True), (1.5, {"clockSkewDays": 2}, False), (0.0, {}, False)],
)
def test_data_freshness_allows_a_clock_skew_of_a_day_or_clock_skew_days(
    ahead_days: float, params: dict[str, Any], denied: bool
) -> None:
    assert bool(freshness(THURSDAY_NOON + ahead_days * DAY, params)) is denied


def test_data_freshness_still_denies_stale_data() -> None:
    assert freshness(THURSDAY_NOON - 40 * DAY) == [
        "the candidate was trained on data 40.0 days old; at most 30 allowed"
    ]


@pytest.fixture(scope="module")
def dated_registry(tmp_path_factory: pytest.TempPathFactory) -> MlflowRegistry:
    """``dated`` v1 (@champion, data from a day ago) and v2 (@ms: data from two days ago, tagged
    in epoch milliseconds) and v3 (@future: dated 2099-01-01), in a registry of this module's own."""
    root = tmp_path_factory.mktemp("dated-mlflow")
    registry = MlflowRegistry(f"sqlite:///{root / 'mlflow.db'}")
    client = registry.client
    experiment = client.create_experiment("dated", artifact_location=(root / "artifacts").as_uri())
    client.create_registered_model("dated")
    now = time.time()
    tags = {
        "champion": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - DAY)),
        "ms": str(int((now - 2 * DAY) * 1000)),
        "future": "2099-01-01",
    }
    for alias, tag in tags.items():
        run = client.create_run(experiment)
        client.set_tag(run.info.run_id, DATA_AS_OF_TAG, tag)
        version = client.create_model_version("dated", (root / alias).as_uri(), run_id=run.info.run_id)
        client.set_registered_model_alias("dated", alias, str(version.version))
    return registry


def spec_text(candidate: str) -> str:
    body = {
        "endpoint": "dated",
        "baseline": "models:/dated@champion",
        "candidate": f"models:/dated@{candidate}",
        "traffic": {"steps": [{"weight": 10}]},
        "analysis": {"metrics": [{"kind": "error_rate"}]},
        "gates": {"start": [{"policy": "data-freshness", "params": {"maxAgeDays": 30}}]},
    }
    return json.dumps({"apiVersion": "modelcanary/v1", "kind": "Rollout", "spec": body})


def test_a_start_gate_refuses_data_dated_in_the_future_and_reads_a_millisecond_tag_as_a_date(
    store: SqlStore, dated_registry: MlflowRegistry
) -> None:
    with pytest.raises(PolicyDenied) as caught:
        start_rollout(store, dated_registry, spec_text("future"), source="t", actor="cli:ana")
    ((policy, message),) = caught.value.denials
    assert policy == "data-freshness"
    assert "days in the future (data.as_of 2099-01-01T00:00:00Z); clockSkewDays allows 1" in message

    started = start_rollout(store, dated_registry, spec_text("ms"), source="t", actor="cli:ana")
    assert started.candidate_info is not None and started.candidate_info.data_as_of is not None
    assert abs((time.time() - started.candidate_info.data_as_of) / DAY - 2.0) < 0.01  # not the year 55000


def freeze(params: dict[str, Any]) -> list[str]:
    return decide("change-freeze", params, {"now": THURSDAY_NOON})


ACCEPTED = "write one of Sunday, Monday, Tuesday, Wednesday, Thursday, Friday, Saturday (any case)"


@pytest.mark.parametrize("spelling", ["Thursday", "thursday", "THURSDAY", "tHuRsDaY"])
def test_change_freeze_reads_a_weekday_in_any_case(spelling: str) -> None:
    assert freeze({"weekdays": ["Saturday", spelling]}) == ["no changes on Thursday (UTC)"]


@pytest.mark.parametrize("value", ["Thu", "Thurs", "Thursdy", "", "Donnerstag", 4, None])
def test_change_freeze_denies_a_weekday_it_cannot_read_naming_it(value: Any) -> None:
    # on a Thursday, and on a Monday: a misspelled freeze must never read as no freeze
    for now in (THURSDAY_NOON, THURSDAY_NOON + 4 * DAY):
        denials = decide("change-freeze", {"weekdays": ["Saturday", value]}, {"now": now})
        assert denials == [f"change-freeze weekdays: {json.dumps(value)} is not a weekday; {ACCEPTED}"]


@pytest.mark.parametrize(
    ("params", "denial"),
    [
        (
            {"weekdays": "Thursday"},
            'change-freeze weekdays must be a list of weekday names, got "Thursday"',
        ),
        (
            {"windows": {"start": "2026-12-24T00:00:00Z", "end": "2026-12-26T00:00:00Z"}},
            'change-freeze windows must be a list of {start, end, reason}, got {"end":"2026-12-26T00:00:00Z",'
            '"start":"2026-12-24T00:00:00Z"}',
        ),
        (
            {"windows": [{"start": "2026-12-24T00:00:00Z", "until": "2026-12-26T00:00:00Z"}]},
            "change-freeze windows[0] needs a start and an end (RFC 3339 times), got "
            '{"start":"2026-12-24T00:00:00Z","until":"2026-12-26T00:00:00Z"}',
        ),
    ],
    ids=["weekdays-not-a-list", "windows-not-a-list", "window-without-end"],
)
def test_change_freeze_denies_a_freeze_written_wrong(params: dict[str, Any], denial: str) -> None:
    assert freeze(params) == [denial]


def test_change_freeze_names_a_window_without_a_reason_in_force() -> None:
    window = {"start": "2026-12-24T00:00:00Z", "end": "2026-12-26T00:00:00Z"}
    assert freeze({"windows": [window]}) == ["change freeze (in force) until 2026-12-26T00:00:00Z"]


@pytest.mark.parametrize(
    ("policy", "params", "document", "message"),
    [
        ("require-approver", {"minApprovals": "2"}, {"rollout": {"approvals": []}}, "minApprovals must be a number"),
        ("data-freshness", {"maxAgeDays": None}, {"candidate": {"data_age_days": 400.0}}, "maxAgeDays must be"),
        ("data-freshness", {"clockSkewDays": True}, {"candidate": {"data_age_days": 1.0}}, "clockSkewDays must be"),
        (
            "offline-metrics",
            {"metrics": "auc"},
            {"baseline": {"metrics": {"auc": 0.9}}, "candidate": {"metrics": {"auc": 0.5}}},
            "metrics must be a list of metric names",
        ),
        (
            "offline-metrics",
            {"metrics": ["log_loss"], "lowerIsBetter": "log_loss"},
            {"baseline": {"metrics": {"log_loss": 0.2}}, "candidate": {"metrics": {"log_loss": 0.9}}},
            "lowerIsBetter must be a list of metric names",
        ),
        ("offline-metrics", {"margin": "0.1"}, {"baseline": {"metrics": {}}, "candidate": {"metrics": {}}}, "margin"),
        (
            "change-freeze",
            {"windows": [{"start": "2026-12-25T01:00:00Z", "end": "2026-12-24T23:00:00Z"}]},
            {},
            "its end is not after its start",
        ),
        ("change-freeze", {"window": []}, {}, 'change-freeze has no parameter "window"'),
        ("require-approver", {"minApproval": 2}, {"rollout": {"approvals": []}}, "has no parameter"),
    ],
    ids=[
        "quoted-count",
        "empty-age",
        "boolean-skew",
        "one-metric-name",
        "one-lower-name",
        "text-margin",
        "overnight-window-reversed",
        "misspelled-windows",
        "misspelled-min-approvals",
    ],
)
def test_a_parameter_written_wrong_denies_naming_it(
    policy: str, params: dict[str, Any], document: dict[str, Any], message: str
) -> None:
    """Each of these allowed: a count or bound that is no number compared with nothing, one name
    for a list compared nothing (or the wrong way round), a reversed window covered no time, a
    misspelled parameter read as its default (found by review, 2026-12-03)."""
    denials = decide(policy, params, {"params": params, "now": THURSDAY_NOON, **document})
    assert any(message in each for each in denials), denials
