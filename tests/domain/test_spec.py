"""The rollout spec: camelCase YAML in, typed values out; every refusal names the field path and the YAML line."""

from __future__ import annotations

import threading
import time
import warnings

import pytest

from modelcanary.domain.errors import ModelcanaryError, SpecError
from modelcanary.domain.metrics import ErrorRateMetric, LatencyMetric, QualityMetric
from modelcanary.domain.refs import parse_duration, parse_model_uri
from modelcanary.domain.spec import load_spec
from modelcanary.domain.specbase import check_endpoint_name
from modelcanary.domain.specyaml import MAX_NESTING, MAX_SPEC_CHARS
from modelcanary.domain.traffic import Step, StickyKey

# Line numbers matter below: each case edits this text and names the line the mistake lands on.
MINIMAL = """\
apiVersion: modelcanary/v1
kind: Rollout
metadata:
  name: fraud-v2
spec:
  endpoint: fraud
  baseline: models:/fraud@champion
  candidate: models:/fraud/2
  traffic:
    steps:
      - weight: 5
      - weight: 50
  analysis:
    metrics:
      - kind: error_rate
"""
#  1 apiVersion        6 endpoint         11 - weight: 5
#  2 kind              7 baseline         12 - weight: 50
#  3 metadata          8 candidate        13 analysis
#  4 name              9 traffic          14 metrics
#  5 spec             10 steps            15 - kind: error_rate

FULL = """\
apiVersion: modelcanary/v1
kind: Rollout
metadata: {name: fraud-challenger}
spec:
  endpoint: fraud
  baseline: models:/fraud@champion
  candidate: models:/fraud/7
  traffic:
    stickyKey: {field: user_id}
    onTimeout: pause
    steps:
      - {weight: 1, minRequests: 500, minDuration: 2m, maxDuration: 1h}
      - {weight: 12.5, minRequests: 0, minDuration: 250ms, maxDuration: 30s}
      - {weight: 100, minDuration: 45, maxDuration: 90.5}
  analysis:
    judge: threshold
    metrics:
      - {kind: error_rate, margin: 0.005, minRequests: 1000}
      - {kind: latency, name: p99, quantile: 0.99, margin: 0.3, minRequests: 2000}
      - {kind: quality, name: precision, measure: precision, threshold: 0.7, margin: 0.01, minLabels: 400}
  onSuccess: {setAlias: champion}
  onFailure: {tagVersion: false}
"""


def _problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        load_spec(text, source="rollout.yaml")
    return caught.value.problems


def _edit(old: str, new: str) -> str:
    assert MINIMAL.count(old) == 1, old
    return MINIMAL.replace(old, new)


# --- good specs -------------------------------------------------------------------------------------------------


def test_full_spec_reads_every_camel_case_key() -> None:
    spec = load_spec(FULL)
    body = spec.spec
    assert spec.name == "fraud-challenger"
    assert (body.endpoint, body.baseline, body.candidate) == ("fraud", "models:/fraud@champion", "models:/fraud/7")
    assert body.traffic.sticky_key == StickyKey(field="user_id")
    assert body.traffic.on_timeout == "pause"
    steps = [step for step in body.traffic.steps if isinstance(step, Step)]
    assert steps == body.traffic.steps  # weight steps only
    assert [(s.weight, s.min_requests, s.min_duration, s.max_duration) for s in steps] == [
        (1.0, 500, 120.0, 3600.0),
        (12.5, 0, 0.25, 30.0),
        (100.0, 100, 45.0, 90.5),
    ]
    assert body.analysis.judge == "threshold"
    assert body.analysis.metrics == [
        ErrorRateMetric(kind="error_rate", margin=0.005, min_requests=1000),
        LatencyMetric(kind="latency", name="p99", quantile=0.99, margin=0.3, min_requests=2000),
        QualityMetric(
            kind="quality", name="precision", measure="precision", threshold=0.7, margin=0.01, min_labels=400
        ),
    ]
    assert body.on_success.set_alias == "champion"
    assert body.on_failure.tag_version is False


def test_minimal_spec_gets_the_documented_defaults() -> None:
    spec = load_spec(MINIMAL.replace("metadata:\n  name: fraud-v2\n", ""))
    body = spec.spec
    assert spec.metadata.name is None
    assert spec.name == "fraud"  # the endpoint names a rollout that has no metadata.name
    step = body.traffic.steps[0]
    assert isinstance(step, Step)
    assert (step.min_requests, step.min_duration, step.max_duration) == (100, 30.0, 600.0)
    assert body.traffic.sticky_key is None
    assert body.traffic.on_timeout == "rollback"
    assert (body.analysis.judge, body.analysis.alpha) == ("sequential", 0.05)
    (metric,) = body.analysis.metrics
    assert metric == ErrorRateMetric(kind="error_rate", name="error-rate", margin=0.01, min_requests=100)
    assert body.on_success.set_alias is None
    assert body.on_failure.tag_version is True


def test_metric_defaults_per_kind() -> None:
    spec = load_spec(_edit("      - kind: error_rate\n", "      - kind: latency\n      - kind: quality\n"))
    latency, quality = spec.spec.analysis.metrics
    assert isinstance(latency, LatencyMetric)
    assert (latency.name, latency.quantile, latency.margin, latency.min_requests) == ("latency", 0.95, 0.21, 50)
    assert isinstance(quality, QualityMetric)
    assert (quality.name, quality.measure, quality.threshold, quality.margin, quality.min_labels) == (
        "quality",
        "accuracy",
        0.5,
        0.02,
        100,
    )


def test_spec_is_frozen() -> None:
    spec = load_spec(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        spec.spec.endpoint = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("30s", 30.0),
        ("2m", 120.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("90", 90.0),
        (" 5 m ", 300.0),
        (45, 45.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(written: object, seconds: float) -> None:
    assert parse_duration(written) == seconds


@pytest.mark.parametrize("written", ["soon", "5 minutes", "1d", "-5s", "", "m"])
def test_parse_duration_refuses_other_text(written: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(written)


def test_parse_duration_refuses_booleans() -> None:
    with pytest.raises(ValueError, match="a duration is a number of seconds"):
        parse_duration(True)


@pytest.mark.parametrize(
    ("written", "seconds"), [("30s", 30.0), ("2m", 120.0), ("250ms", 0.25), ("45", 45.0), ("7.5", 7.5)]
)
def test_durations_in_a_spec(written: str, seconds: float) -> None:
    spec = load_spec(_edit("      - weight: 5\n", f"      - weight: 5\n        minDuration: {written}\n"))
    step = spec.spec.traffic.steps[0]
    assert isinstance(step, Step)
    assert step.min_duration == seconds


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("models:/fraud@champion", ("fraud", None, "champion")),
        ("models:/fraud/7", ("fraud", "7", None)),
        ("models:/fraud.v2@release-1.2", ("fraud.v2", None, "release-1.2")),
    ],
)
def test_parse_model_uri(uri: str, parsed: tuple[str, str | None, str | None]) -> None:
    assert parse_model_uri(uri) == parsed


@pytest.mark.parametrize("uri", ["models:/fraud", "models:/fraud/latest", "models:/fraud/7@x", "s3://b/fraud", ""])
def test_parse_model_uri_refuses_other_forms(uri: str) -> None:
    with pytest.raises(ValueError, match="is not a registry model URI"):
        parse_model_uri(uri)


# --- bad specs: the path and the line ------------------------------------------------------------------------------


def test_wrong_type() -> None:
    text = _edit("      - weight: 5\n", "      - weight: 5\n        minRequests: lots\n")
    assert _problems(text) == [
        (
            "spec.traffic.steps[0].minRequests (line 12)",
            "Input should be a valid integer, unable to parse string as an integer",
        )
    ]


def test_weight_out_of_range() -> None:
    assert _problems(_edit("weight: 50", "weight: 150")) == [
        ("spec.traffic.steps[1].weight (line 12)", "Input should be less than or equal to 100")
    ]


def test_zero_weight() -> None:
    assert _problems(_edit("weight: 5\n", "weight: 0\n")) == [
        ("spec.traffic.steps[0].weight (line 11)", "Input should be greater than 0")
    ]


@pytest.mark.parametrize("second", ["5", "4"])
def test_step_weights_must_increase_at_the_step_that_does_not(second: str) -> None:
    """The error was at spec.traffic (line 9), not at the step whose weight is wrong."""
    assert _problems(_edit("weight: 50", f"weight: {second}")) == [
        ("spec.traffic.steps[1].weight (line 12)", f"Value error, step weights must increase: {second} follows 5")
    ]


def test_max_duration_below_min_duration_at_the_max_duration() -> None:
    text = _edit("      - weight: 50\n", "      - weight: 50\n        minDuration: 2m\n        maxDuration: 30s\n")
    assert _problems(text) == [
        ("spec.traffic.steps[1].maxDuration (line 14)", "Value error, maxDuration must be at least minDuration")
    ]


def test_a_min_duration_past_the_default_max_duration_is_the_one_at_fault() -> None:
    text = _edit("      - weight: 50\n", "      - weight: 50\n        minDuration: 20m\n")
    assert _problems(text) == [
        ("spec.traffic.steps[1].minDuration (line 13)", "Value error, maxDuration must be at least minDuration")
    ]


def test_a_last_step_at_100_after_a_lower_one_is_read() -> None:
    spec = load_spec(_edit("weight: 50", "weight: 100"))
    assert [step.weight for step in spec.spec.traffic.steps if isinstance(step, Step)] == [5.0, 100.0]


def test_bad_duration_text() -> None:
    text = _edit("      - weight: 5\n", "      - weight: 5\n        maxDuration: soon\n")
    assert _problems(text) == [
        (
            "spec.traffic.steps[0].maxDuration (line 12)",
            "Value error, 'soon' is not a duration; write e.g. 30s, 5m, 1h or 250ms",
        )
    ]


def test_negative_duration() -> None:
    text = _edit("      - weight: 5\n", "      - weight: 5\n        minDuration: -5\n")
    assert _problems(text) == [
        ("spec.traffic.steps[0].minDuration (line 12)", "Input should be greater than or equal to 0")
    ]


def test_unknown_key_is_refused() -> None:
    text = _edit("      - weight: 5\n", "      - weight: 5\n        minRequest: 10\n")  # typo of minRequests
    assert _problems(text) == [("spec.traffic.steps[0].minRequest (line 12)", "Extra inputs are not permitted")]


def test_unknown_top_level_key_is_refused() -> None:
    assert _problems(MINIMAL + "status: {}\n") == [("status (line 16)", "Extra inputs are not permitted")]


def test_bad_model_uri() -> None:
    assert _problems(_edit("models:/fraud/2", "s3://bucket/fraud")) == [
        (
            "spec.candidate (line 8)",
            "Value error, 's3://bucket/fraud' is not a model ref; write models:/NAME@ALIAS, models:/NAME/VERSION, "
            "v2+http://HOST:PORT/models/NAME[/versions/V][?columns=A,B] or ray://APP/DEPLOYMENT",
        )
    ]


@pytest.mark.parametrize(
    "ref",
    ["v2+http://127.0.0.1:8001/models/fraud", "v2+https://infer.example/v1/models/fraud/versions/3", "ray://app/Fraud"],
)
def test_remote_model_refs_are_accepted(ref: str) -> None:
    assert load_spec(_edit("models:/fraud/2", ref)).spec.candidate == ref


def test_a_remote_model_ref_needs_models_and_a_name() -> None:
    assert _problems(_edit("models:/fraud/2", "v2+http://127.0.0.1:8001/fraud"))[0][0] == "spec.candidate (line 8)"


def test_set_alias_needs_a_registry_candidate() -> None:
    text = _edit("models:/fraud/2", "v2+http://127.0.0.1:8001/models/fraud") + "  onSuccess: {setAlias: champion}\n"
    problems = _problems(text)
    assert problems[0][0] == "spec.onSuccess.setAlias (line 16)"  # the field at fault, not spec.onSuccess
    assert "not in the registry" in problems[0][1]


def test_unknown_metric_kind() -> None:
    assert _problems(_edit("kind: error_rate", "kind: throughput")) == [
        (
            "spec.analysis.metrics[0] (line 15)",
            "Input tag 'throughput' found using 'kind' does not match any of the expected tags: "
            "'error_rate', 'latency', 'quality', 'drift', 'cost'",
        )
    ]


def test_bad_field_of_a_metric_names_the_metric_not_its_kind() -> None:
    text = MINIMAL + "      - kind: latency\n        quantile: 1.5\n"
    assert _problems(text) == [("spec.analysis.metrics[1].quantile (line 17)", "Input should be less than 1")]


def test_duplicate_metric_names() -> None:
    text = MINIMAL + "      - kind: latency\n        name: error-rate\n"
    assert _problems(text) == [
        (
            "spec.analysis.metrics[1] (line 16)",
            "Value error, metric names must be unique; repeated: error-rate (set name:)",
        )
    ]


def test_two_metrics_of_one_kind_need_names() -> None:
    text = MINIMAL + "      - kind: error_rate\n        margin: 0.05\n"
    assert _problems(text) == [
        (
            "spec.analysis.metrics[1] (line 16)",
            "Value error, metric names must be unique; repeated: error-rate (set name:)",
        )
    ]


def test_missing_required_field_names_its_parent_line() -> None:
    assert _problems(_edit("  endpoint: fraud\n", "")) == [("spec.endpoint (line 5)", "Field required")]


def test_missing_steps() -> None:
    text = _edit("    steps:\n      - weight: 5\n      - weight: 50\n", "    onTimeout: pause\n")
    assert _problems(text) == [("spec.traffic.steps (line 9)", "Field required")]


def test_empty_steps() -> None:
    text = _edit("    steps:\n      - weight: 5\n      - weight: 50\n", "    steps: []\n")
    assert _problems(text) == [
        ("spec.traffic.steps (line 10)", "List should have at least 1 item after validation, not 0")
    ]


def test_several_problems_are_all_reported() -> None:
    text = _edit("models:/fraud/2", "fraud-2").replace("weight: 50", "weight: 500")
    assert [where for where, _message in _problems(text)] == [
        "spec.candidate (line 8)",
        "spec.traffic.steps[1].weight (line 12)",
    ]


def test_yaml_syntax_error_names_its_line() -> None:
    text = _edit("  baseline:", "   baseline:")  # one space too many
    assert _problems(text) == [("line 7", "mapping values are not allowed here")]


def test_duplicate_yaml_key_names_its_line() -> None:
    text = _edit("  endpoint: fraud\n", "  endpoint: fraud\n  endpoint: fraud2\n")
    assert _problems(text) == [
        ("line 7", 'found duplicate key "endpoint" with value "fraud2" (original value: "fraud")')
    ]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "", "42\n"])
def test_document_that_is_not_a_mapping(text: str) -> None:
    assert _problems(text) == [("line 1", "a rollout spec is a YAML mapping with apiVersion, kind and spec")]


@pytest.mark.parametrize(
    "sticky",
    [
        "    stickyKey: {header: x-user-id, field: user_id}\n",
        "    stickyKey:\n      header: x-user-id\n      field: user_id\n",
        "    stickyKey: {}\n",
    ],
)
def test_sticky_key_needs_exactly_one_source(sticky: str) -> None:
    text = _edit("    steps:\n", sticky + "    steps:\n")
    assert _problems(text) == [("spec.traffic.stickyKey (line 10)", "Value error, give exactly one of header or field")]


def test_wrong_api_version() -> None:
    assert _problems(_edit("modelcanary/v1", "modelcanary/v2")) == [
        ("apiVersion (line 1)", "Input should be 'modelcanary/v1'")
    ]


def test_spec_error_text_names_source_field_and_line() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(_edit("weight: 50", "weight: 150"), source="fraud.yaml")
    assert isinstance(caught.value, ModelcanaryError)
    assert caught.value.source == "fraud.yaml"
    assert str(caught.value) == (
        "invalid rollout spec fraud.yaml:\n"
        "  spec.traffic.steps[1].weight (line 12): Input should be less than or equal to 100"
    )


def test_a_character_yaml_does_not_allow_is_a_spec_error_at_its_line() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec("apiVersion: modelcanary/v1\nkind: \x07Rollout\n")
    assert caught.value.problems == [("line 2", "character '\\x07' is not allowed in YAML")]


def test_a_yaml_alias_is_refused_at_its_line() -> None:
    text = _edit(
        "      - weight: 5\n      - weight: 50\n", "      - &first {weight: 5}\n      - {<<: *first, weight: 50}\n"
    )
    assert _problems(text) == [("line 12", "YAML aliases (*first) are not allowed: write the value out")]


def test_nested_aliases_are_refused_before_they_expand() -> None:
    """ "Billion laughs": each level repeats the one before nine times; expanded, these few hundred
    bytes are 9**6 strings (9**9 took seconds and gigabytes)."""
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 7)]
    text = MINIMAL + "\n".join(levels) + "\n"
    assert _problems(text) == [("line 17", "YAML aliases (*a0) are not allowed: write the value out")]


PROMETHEUS = """\
  source:
    prometheus:
      url: URL
      baseline: {requests: baseline_requests_total, errors: baseline_errors_total}
      candidate: {requests: candidate_requests_total, errors: candidate_errors_total}
"""
NOTIFY = """\
  notify:
    - url: URL
"""
BAD_PORT = "has a bad port: give a number from 1 to 65535, or none"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://prometheus:909O", BAD_PORT),
        ("http://hooks.example:notaport/x", BAD_PORT),
        ("http://hooks.example:0/x", BAD_PORT),
        ("https://hooks.example:65536/x", BAD_PORT),
        ("http://:9090/x", "names no host"),
        ("http://[::1/x", "is not a URL: Invalid IPv6 URL"),
    ],
)
@pytest.mark.parametrize(
    ("block", "where"),
    [(PROMETHEUS, "spec.source.prometheus.url (line 18)"), (NOTIFY, "spec.notify[0].url (line 17)")],
    ids=["prometheus", "notify"],
)
def test_a_url_with_a_bad_port_or_no_host_is_refused_at_load(url: str, problem: str, block: str, where: str) -> None:
    text = MINIMAL + block.replace("URL", url)
    assert _problems(text) == [(where, f"Value error, {url!r} {problem}")]


@pytest.mark.parametrize("url", ["http://prometheus:9090", "https://[::1]:443/api", "http://hooks.example/x?a=1"])
def test_urls_with_a_host_and_a_good_port_or_none_are_read(url: str) -> None:
    spec = load_spec(MINIMAL + PROMETHEUS.replace("URL", url) + NOTIFY.replace("URL", url))
    assert spec.spec.source is not None and spec.spec.source.prometheus.url == url == spec.spec.notify[0].url


# --- what a saved spec can hold: finite numbers, bounded size and nesting ------------------------------------------

FINITE = "Input should be a finite number"
NINES = "9" * 400  # a float of this is infinite
STEP_0 = "      - weight: 5\n"
METRIC = "      - kind: error_rate\n"
PROMETHEUS_TIMES = PROMETHEUS + "      interval: .inf\n      timeout: .nan\n"


def _too_long(shown: str) -> str:
    return f"Value error, {shown} is too long a duration: give a finite one, e.g. 30s, 5m or 1h"


@pytest.mark.parametrize(
    ("old", "new", "problems"),
    [
        ("weight: 50", "weight: .nan", [("spec.traffic.steps[1].weight (line 12)", FINITE)]),  # not "<= 100"
        ("weight: 50", "weight: .inf", [("spec.traffic.steps[1].weight (line 12)", FINITE)]),
        (
            STEP_0,
            STEP_0 + "        maxDuration: .inf\n",
            [("spec.traffic.steps[0].maxDuration (line 12)", _too_long("inf"))],
        ),
        (
            STEP_0,
            STEP_0 + f"        maxDuration: {NINES}s\n",
            [
                (
                    "spec.traffic.steps[0].maxDuration (line 12)",
                    _too_long("'99999999999999999999999999999...' (401 characters)"),
                )
            ],
        ),
        (
            STEP_0,
            STEP_0 + f"        maxDuration: {NINES}\n",
            [("spec.traffic.steps[0].maxDuration (line 12)", _too_long("a number of 400 digits"))],
        ),
        (
            STEP_0,
            STEP_0 + "        minDuration: .nan\n",
            [
                (
                    "spec.traffic.steps[0].minDuration (line 12)",
                    "Value error, nan is not a number of seconds; write e.g. 30s, 5m, 1h or 250ms",
                )
            ],
        ),
        (
            "weight: 50\n",
            "weight: 50\n      - approval: {timeout: .inf}\n",
            [("spec.traffic.steps[2].approval.timeout (line 13)", _too_long("inf"))],
        ),
        (METRIC, "      - {kind: error_rate, weight: .inf}\n", [("spec.analysis.metrics[0].weight (line 15)", FINITE)]),
        (METRIC, "      - {kind: latency, margin: .inf}\n", [("spec.analysis.metrics[0].margin (line 15)", FINITE)]),
        (METRIC, "      - {kind: drift, limit: .inf}\n", [("spec.analysis.metrics[0].limit (line 15)", FINITE)]),
        (
            METRIC,
            METRIC + "    judge: threshold\n    threshold: {interval: .inf}\n",
            [("spec.analysis.threshold.interval (line 17)", _too_long("inf"))],
        ),
        (
            "    steps:\n",
            "    shadow:\n      duration: .inf\n      keep: .inf\n    steps:\n",
            [
                ("spec.traffic.shadow.duration (line 11)", _too_long("inf")),
                ("spec.traffic.shadow.keep (line 12)", _too_long("inf")),
            ],
        ),
        (
            "    steps:\n",
            "    cache: {ttl: .inf}\n    steps:\n",
            [("spec.traffic.cache.ttl (line 10)", _too_long("inf"))],
        ),
    ],
)
def test_infinity_and_nan_are_refused_at_their_field(old: str, new: str, problems: list[tuple[str, str]]) -> None:
    """A spec is saved as JSON, where infinity and NaN become null: a saved spec holding one never
    loaded again, and its rollout hung (its controller held it for ever)."""
    assert _problems(_edit(old, new)) == problems


def test_infinity_and_nan_are_refused_in_a_prometheus_source_and_policy_params() -> None:
    gates = "  gates:\n    start:\n      - {policy: freeze, params: {days: [1, .inf]}}\n"
    assert _problems(MINIMAL + PROMETHEUS_TIMES.replace("URL", "http://prometheus:9090") + gates) == [
        (
            "spec.gates.start[0].params (line 25)",
            "Value error, infinity and NaN have no JSON form; give a finite number",
        ),
        ("spec.source.prometheus.interval (line 21)", _too_long("inf")),
        (
            "spec.source.prometheus.timeout (line 22)",
            "Value error, nan is not a number of seconds; write e.g. 30s, 5m, 1h or 250ms",
        ),
    ]


def test_a_loaded_spec_survives_the_json_it_is_saved_as() -> None:
    spec = load_spec(FULL)
    assert type(spec).model_validate_json(spec.model_dump_json(by_alias=True)) == spec


def test_an_approval_step_is_saved_as_one_without_a_warning() -> None:
    """Serialising, pydantic asks the steps' discriminator which kind each is: an approval step
    read as a weight step made it warn at every rollout start (the JSON fell back right)."""
    steps = "      - weight: 5\n      - approval: {role: admin}\n      - weight: 50\n"
    spec = load_spec(MINIMAL.replace("      - weight: 5\n      - weight: 50\n", steps, 1))
    assert [type(step).__name__ for step in spec.spec.traffic.steps] == ["Step", "ApprovalStep", "Step"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        saved = spec.model_dump_json(by_alias=True)
    assert type(spec).model_validate_json(saved) == spec


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        ("x: " + "[" * 300 + "]" * 300 + "\n", 16),  # 600 bytes: a RecursionError out of the YAML reader
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", 16),
        ("x: " + "{a: " * 300 + "1" + "}" * 300 + "\n", 16),
        ("x:\n" + "".join(" " * depth + "- \n" for depth in range(0, 140, 2)), 80),
    ],
    ids=["flow-300", "flow-5000", "maps-300", "block-70"],
)
def test_nesting_past_a_bound_is_a_spec_error_at_its_line(extra: str, line: int) -> None:
    assert _problems(MINIMAL + extra) == [
        (f"line {line}", f"nested more than {MAX_NESTING} levels deep; a rollout spec needs a handful")
    ]


def test_nesting_up_to_the_bound_is_read() -> None:
    """Refused further on only because ``x`` is not a field: the reader took it."""
    deep = "x: " + "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1) + "\n"
    assert _problems(MINIMAL + deep) == [("x (line 16)", "Extra inputs are not permitted")]


def test_a_spec_past_the_size_bound_is_refused_before_it_is_read() -> None:
    """The YAML reader is pure Python: 0.8 MB of ``[1,1,…]`` took 90 s, and the control API takes 1 MiB."""
    text = MINIMAL + "x: [" + ",".join(["1"] * (1 << 19)) + "]\n"
    started = time.perf_counter()
    assert _problems(text) == [
        ("spec", f"{len(text)} characters is too long: a rollout spec is at most {MAX_SPEC_CHARS} (64 KiB)")
    ]
    assert time.perf_counter() - started < 1.0


def test_a_spec_just_under_the_size_bound_is_read_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader runs once: it used to parse the text twice, once only to look for aliases."""
    from ruamel.yaml.parser import Parser

    parsers = []
    original = Parser.__init__
    this = threading.current_thread()

    def counted(self: Parser, *args: object, **kwargs: object) -> None:
        # patched for the whole process: only this thread's readers are this load's
        if threading.current_thread() is this:
            parsers.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Parser, "__init__", counted)
    comments = "# a comment that pads the spec out\n" * ((MAX_SPEC_CHARS - len(MINIMAL)) // 35)
    text = MINIMAL + comments
    assert len(text) <= MAX_SPEC_CHARS
    assert load_spec(text).spec.endpoint == "fraud"
    assert len(parsers) == 1


def test_a_zero_interval_or_keep_and_scores_out_of_order_are_refused_at_their_field() -> None:
    """A judge's interval of 0 and a shadow lane keeping its predictions 0 s were accepted; so was a
    marginal score above the pass score, which no score can fall between."""
    analysis = _edit("  analysis:\n", "  analysis:\n    threshold: {interval: 0s}\n    mannWhitney: {passScore: 50}\n")
    problems = _problems(analysis)
    assert [where for where, _ in problems] == [
        "spec.analysis.threshold.interval (line 14)",
        "spec.analysis.mannWhitney.passScore (line 15)",
    ]
    assert "greater than 0" in problems[0][1]
    assert "marginalScore (75) must not be above passScore (50)" in problems[1][1]
    keep = _edit("  traffic:\n", "  traffic:\n    shadow: {keep: 0s}\n")
    assert _problems(keep) == [("spec.traffic.shadow.keep (line 10)", "Input should be greater than 0")]


def test_an_endpoint_name_past_the_stores_column_is_refused_at_its_line() -> None:
    """A 5,000-character endpoint was accepted; the store's column holds 200 (PostgreSQL refused the
    row at start with a store error, SQLite kept it)."""
    assert load_spec(_edit("endpoint: fraud", "endpoint: " + "f" * 200)).spec.endpoint == "f" * 200
    problems = _problems(_edit("endpoint: fraud", "endpoint: " + "f" * 201))
    assert problems == [("spec.endpoint (line 6)", "String should have at most 200 characters")]


@pytest.mark.parametrize(
    ("alias", "problem"),
    [
        ("champion v2", "String should match pattern '^[A-Za-z0-9_-]+$'"),
        ("a" * 201, "String should have at most 200 characters"),
        ("Latest", "Value error, 'Latest' is reserved by MLflow for a version; name the alias otherwise"),
        ("v3", "Value error, 'v3' is reserved by MLflow for a version; name the alias otherwise"),
    ],
)
def test_an_alias_mlflow_would_refuse_is_refused_at_its_line(alias: str, problem: str) -> None:
    """setAlias was any text: one MLflow refuses failed only at promotion, as an alias move retried for ever."""
    text = MINIMAL + f"  onSuccess: {{setAlias: '{alias}'}}\n"
    assert _problems(text) == [("spec.onSuccess.setAlias (line 16)", problem)]
    assert (
        load_spec(MINIMAL + "  onSuccess: {setAlias: challenger-2_b}\n").spec.on_success.set_alias == "challenger-2_b"
    )


# --- a check across fields points at the field at fault, not at the model that makes it ---------------------------

PROMETHEUS_SOURCE = PROMETHEUS.replace("URL", "http://prometheus:9090")


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("quality", "needs the gateway's telemetry; a prometheus source measures only error_rate and latency"),
        ("latency", "needs latencyBuckets queries in the source"),
    ],
    ids=["quality", "latency-without-buckets"],
)
def test_a_metric_a_prometheus_source_cannot_measure_is_refused_at_the_metric(kind: str, problem: str) -> None:
    """It was reported at "spec (line 5)", the whole body."""
    text = _edit(METRIC, f"{METRIC}      - kind: {kind}\n") + PROMETHEUS_SOURCE
    ((where, message),) = _problems(text)
    assert where == "spec.analysis.metrics[1].kind (line 16)"
    assert message.startswith(f"Value error, metric {kind!r} ({kind}) ") and message.endswith(problem)


def test_latency_buckets_for_one_variant_alone_are_refused_at_the_other() -> None:
    source = PROMETHEUS_SOURCE.replace("errors: baseline_errors_total}", "errors: e, latencyBuckets: b}")
    assert _problems(MINIMAL + source) == [
        (
            "spec.source.prometheus.candidate (line 20)",
            "Value error, give latencyBuckets for both variants or for neither",
        )
    ]


# --- booleans are not numbers --------------------------------------------------------------------------------------

NOT_TRUE = "Input should be a number, not true"


@pytest.mark.parametrize(
    ("old", "new", "problems"),
    [
        ("weight: 5\n", "weight: true\n", [("spec.traffic.steps[0].weight (line 11)", NOT_TRUE)]),
        (
            STEP_0,
            STEP_0 + "        minRequests: false\n",
            [("spec.traffic.steps[0].minRequests (line 12)", "Input should be a number, not false")],
        ),
        (
            METRIC,
            "      - {kind: error_rate, margin: true, minRequests: true, weight: true}\n",
            [
                ("spec.analysis.metrics[0].margin (line 15)", NOT_TRUE),
                ("spec.analysis.metrics[0].minRequests (line 15)", NOT_TRUE),
                ("spec.analysis.metrics[0].weight (line 15)", NOT_TRUE),
            ],
        ),
        ("  analysis:\n", "  analysis:\n    alpha: true\n", [("spec.analysis.alpha (line 14)", NOT_TRUE)]),
        (
            "  traffic:\n",
            "  traffic:\n    circuitBreaker: {consecutiveFailures: true}\n",
            [("spec.traffic.circuitBreaker.consecutiveFailures (line 10)", NOT_TRUE)],
        ),
        (  # a duration reads its own input, and says what a duration is
            STEP_0,
            STEP_0 + "        maxDuration: true\n",
            [
                (
                    "spec.traffic.steps[0].maxDuration (line 12)",
                    "Value error, a duration is a number of seconds or a string like 30s, 5m, 1h",
                )
            ],
        ),
    ],
    ids=["step-weight", "step-min-requests", "metric-numbers", "alpha", "breaker", "duration"],
)
def test_a_boolean_in_a_number_field_is_refused_at_its_line(
    old: str, new: str, problems: list[tuple[str, str]]
) -> None:
    """pydantic's lax mode read ``weight: true`` as a 1% step (and false as 0) in every number field."""
    assert _problems(_edit(old, new)) == problems


def test_a_boolean_number_is_reported_with_the_other_problems() -> None:
    text = _edit("weight: 5\n", "weight: true\n").replace("weight: 50", "weight: 150")
    assert _problems(text) == [
        ("spec.traffic.steps[0].weight (line 11)", NOT_TRUE),
        ("spec.traffic.steps[1].weight (line 12)", "Input should be less than or equal to 100"),
    ]


def test_boolean_fields_still_take_booleans() -> None:
    spec = load_spec(
        _edit(METRIC, "      - {kind: latency, distribution: false}\n") + "  onFailure: {tagVersion: false}\n"
    )
    assert spec.spec.on_failure.tag_version is False
    assert [getattr(metric, "distribution", None) for metric in spec.spec.analysis.metrics] == [False]


# --- a key that YAML reads as something other than text ------------------------------------------------------------


@pytest.mark.parametrize(("key", "path"), [("1", "spec.1"), ("true", "spec.True"), ("2.5", "spec.2.5")])
def test_a_key_that_is_not_a_string_is_reported_at_its_own_line(key: str, path: str) -> None:
    """``1: x`` was reported at spec (line 5): the error's location holds the key as text, the YAML as a number."""
    assert _problems(MINIMAL + f"  {key}: x\n") == [(f"{path} (line 16)", "Extra inputs are not permitted")]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2025-02-30", "cannot read '2025-02-30' as timestamp: day is out of range for month"),
        ("!!bool maybe", "cannot read 'maybe' as bool: not one of its values"),
        ("!!int 0x", "cannot read '0x' as int: string index out of range"),
        ("9" * 5000, f"cannot read '{'9' * 40}'... as int: Exceeds the limit (4300 digits)"),
    ],
    ids=["no-such-day", "not-a-bool", "no-digits", "5000-digits"],
)
def test_a_value_the_yaml_reader_cannot_build_is_a_spec_error_at_its_line(value: str, problem: str) -> None:
    """ruamel's builders raise ValueError, KeyError or IndexError on these, which went through as
    tracebacks (the CLI's exit 1, the API's 500; found by review, 2026-12-03)."""
    ((where, message),) = _problems(_edit("weight: 5\n", f"weight: {value}\n"))
    assert where == "line 11" and message.startswith(problem)


PARAMS = "spec.gates.start[0].params"


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("name: fraud-v2", 'name: "\\ud800"', ("metadata.name (line 4)", "holds a lone surrogate")),
        ("days: [1]", "days: !!set {1}", (f"{PARAMS}.days (line 18)", "a set (!!set) has no JSON")),
        ("days: [1]", "days: !!binary aGVsbG8=", (f"{PARAMS}.days (line 18)", "binary data (!!binary)")),
        ("days: [1]", 'days: [1], 1: a, "1": b', (f"{PARAMS}.1 (line 18)", "keys 1 and '1' are both '1'")),
        ("name: fraud-v2", "name: !foo bar", ("metadata.name (line 4)", "a value tagged '!foo' is not read")),
    ],
    ids=["lone-surrogate", "set", "binary", "one-key-twice", "unknown-tag"],
)
def test_a_value_json_cannot_hold_is_refused_at_its_field(old: str, new: str, problem: tuple[str, str]) -> None:
    """A spec is saved as JSON: these validated, then failed to save (a traceback; found by review)."""
    gates = "  gates:\n    start:\n      - {policy: freeze, params: {days: [1]}}\n"
    ((where, message),) = _problems((MINIMAL + gates).replace(old, new))
    assert (where, message[: len(problem[1])]) == problem


def test_a_value_tagged_as_text_is_that_text() -> None:
    assert load_spec(MINIMAL.replace("name: fraud-v2", "name: !!str 2025")).metadata.name == "2025"


def test_unquoted_dates_and_times_in_policy_params_are_their_iso_text() -> None:
    """change-freeze's windows as docs/gates.md writes them, unquoted: YAML reads them as times,
    which reached the policy's JSON input unconverted (a TypeError at the start gate)."""
    gates = (
        "  gates:\n    start:\n      - policy: change-freeze\n        params:\n"
        "          windows: [{start: 2025-12-20T00:00:00+00:00, end: 2026-01-02}]\n"
    )
    (ref,) = load_spec(MINIMAL + gates).spec.gates.start
    assert ref.params == {"windows": [{"start": "2025-12-20T00:00:00+00:00", "end": "2026-01-02"}]}


@pytest.mark.parametrize("name", ["fraud\n", "", "-fraud", "fraud/v2", "f" * 201])
def test_an_endpoint_name_is_checked_whole(name: str) -> None:
    """``re.match`` with ``$`` let a trailing newline through (a token scoped to an endpoint that
    cannot exist; found by review)."""
    with pytest.raises(ValueError, match="endpoint name"):
        check_endpoint_name(name)
