"""Policy gates end to end: real regopy, a real MLflow registry in a temp dir whose versions carry
logged metrics, tags, datasets and signatures, a real SQLite store. Each shipped policy allows a
candidate that meets it and denies one that does not."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from modelcanary.adapters.policy.rego import RegoPolicyEngine, builtin_policies
from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.controller.gates import evaluate_gate
from modelcanary.controller.operations import start_rollout
from modelcanary.domain.errors import PolicyDenied, SpecError
from modelcanary.domain.gates import Gate
from modelcanary.domain.spec import load_spec
from modelcanary.domain.state import ApprovalRecord
from modelcanary.engine.decide import Command, apply_command
from modelcanary.ports import Policy

ROOT = Path(__file__).resolve().parents[2]
NOW = time.time()  # within seconds of the registry's making: the data ages below allow for it
DAY = 86_400.0


@pytest.fixture
def real_registry(gated_registry: Any) -> MlflowRegistry:
    return MlflowRegistry(gated_registry.uri)


def spec_text(candidate: str, gates: dict[str, Any]) -> str:
    document = {
        "apiVersion": "modelcanary/v1",
        "kind": "Rollout",
        "spec": {
            "endpoint": "scorer",
            "baseline": "models:/scorer@champion",
            "candidate": f"models:/scorer@{candidate}",
            "traffic": {"steps": [{"weight": 10}, {"weight": 50}]},
            "analysis": {"metrics": [{"kind": "error_rate"}]},
            "gates": gates,
        },
    }
    return json.dumps(document, indent=2)


def test_the_registry_describes_lineage_and_metadata(real_registry: MlflowRegistry, gated_registry: Any) -> None:
    info = real_registry.describe(real_registry.resolve("models:/scorer@good"))
    assert info.run_id and info.source
    assert info.git_commit == gated_registry.git_commit
    assert info.metrics == {"auc": 0.905, "log_loss": 0.29}
    assert info.data_tags["data.version"] == "d2"
    assert [dataset["name"] for dataset in info.datasets] == ["train-v2"]
    assert info.signature is not None
    assert [(column["name"], column["type"]) for column in info.signature["inputs"]] == [
        ("amount", "double"),
        ("age", "double"),
    ]
    assert info.data_as_of is not None and abs((gated_registry.now - info.data_as_of) / DAY - 2.0) < 1e-3


# (policy ref, its params, the candidate alias it allows, the one it denies, words of the denial)
START_POLICIES = [
    ("offline-metrics", {"metrics": ["auc", "log_loss"], "margin": 0.01, "lowerIsBetter": ["log_loss"]}, "auc is 0.8"),
    ("data-freshness", {"maxAgeDays": 30}, "100.0 days old; at most 30"),
    ("signature-match", {}, 'candidate ["amount:double", "country:string"]'),
]


@pytest.mark.parametrize(("policy", "params", "words"), START_POLICIES, ids=[p[0] for p in START_POLICIES])
def test_each_start_policy_allows_a_fit_candidate_and_refuses_an_unfit_one(
    store: SqlStore, real_registry: MlflowRegistry, policy: str, params: dict[str, Any], words: str
) -> None:
    gates = {"start": [{"policy": policy, "params": params}]}
    allowed = start_rollout(store, real_registry, spec_text("good", gates), source="t", actor="cli:ana")
    assert allowed.policies[policy].startswith("#")  # the source, saved with the rollout
    aborted = apply_command(allowed, load_spec(spec_text("good", gates)), Command.ABORT, actor="t", now=NOW)
    store.save(aborted, expected_version=0)  # ended, so the endpoint is free for the next try
    with pytest.raises(PolicyDenied) as caught:
        start_rollout(store, real_registry, spec_text("bad", gates), source="t", actor="cli:ana")
    assert caught.value.gate == "start"
    assert [name for name, _ in caught.value.denials] == [policy] * len(caught.value.denials)
    assert any(words in message for _, message in caught.value.denials), caught.value.denials
    assert f"  {policy}: " in str(caught.value)
    assert [state.id for state in store.list_rollouts()] == [allowed.id]  # the refused one is not saved
    refused = store.audit_events()[-1]
    assert (refused["action"], refused["actor"], refused["rollout_id"]) == ("rollout.refused", "cli:ana", None)
    assert refused["detail"]["candidate"] == "models:/scorer/3"
    assert refused["detail"]["gate"]["denials"][0]["policy"] == policy


def test_require_approver_denies_promotion_until_someone_approved(
    store: SqlStore, real_registry: MlflowRegistry
) -> None:
    text = spec_text("good", {"promote": ["require-approver"]})
    state = start_rollout(store, real_registry, text, source="t", actor="cli:ana")
    spec, engine = load_spec(text), RegoPolicyEngine()
    denied = evaluate_gate(engine, Gate.PROMOTE, spec=spec, state=state, judgement=None, actor="controller", now=NOW)
    assert [denial.message for denial in denied.denials] == ["no promotion without an approver: 0 of 1 approvals"]
    approved = state.model_copy(update={"approvals": (ApprovalRecord(actor="token:bo", at=NOW, step=1),)})
    allowed = evaluate_gate(
        engine, Gate.PROMOTE, spec=spec, state=approved, judgement=None, actor="controller", now=NOW
    )
    assert allowed.allowed and allowed.policies == ("require-approver",)


FRIDAY_NOON = 1_733_486_400.0  # 2024-12-06T12:00:00Z
FREEZE = {
    "windows": [{"start": "2024-12-20T00:00:00Z", "end": "2025-01-02T00:00:00Z", "reason": "year end"}],
    "weekdays": ["Saturday", "Sunday"],
}


@pytest.mark.parametrize(
    ("now", "denial"),
    [
        (FRIDAY_NOON, None),
        (FRIDAY_NOON + DAY, "no changes on Saturday (UTC)"),
        (FRIDAY_NOON + 20 * DAY, "change freeze (year end) until 2025-01-02T00:00:00Z"),  # a Thursday
        (FRIDAY_NOON + 27 * DAY, None),  # 2025-01-02, just out of the window
    ],
)
def test_change_freeze_denies_inside_its_windows_and_weekdays(now: float, denial: str | None) -> None:
    # numpy loaded in the same process once made rego-cpp's time.weekday crash: keep it loaded here
    import numpy  # noqa: F401

    engine = RegoPolicyEngine()
    policy = Policy("change-freeze", engine.source("change-freeze", relative_to=None), FREEZE)
    decision = engine.evaluate(Gate.STEP, [policy], {"now": now})
    assert [d.message for d in decision.denials] == ([denial] if denial else [])


def test_examples_are_the_builtin_policies() -> None:
    examples = sorted(path.stem for path in (ROOT / "examples" / "policies").glob("*.rego"))
    assert (
        examples
        == builtin_policies()
        == [
            "change-freeze",
            "data-freshness",
            "offline-metrics",
            "require-approver",
            "signature-match",
        ]
    )


def test_a_policy_file_is_read_relative_to_the_spec_and_a_broken_one_is_a_spec_error_at_its_line(
    store: SqlStore, real_registry: MlflowRegistry, tmp_path: Path
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "mine.rego").write_text(
        "package mine\nimport rego.v1\ndeny contains msg if {\n  input.candidate.metrics.auc < 0.95\n"
        '  msg := sprintf("auc %v < 0.95", [input.candidate.metrics.auc])\n}\n'
    )
    (tmp_path / "policies" / "broken.rego").write_text("package broken\nimport rego.v1\ndeny contains if {\n")
    spec_file = tmp_path / "rollout.yaml"
    spec_file.write_text(spec_text("good", {"start": ["policies/mine.rego"]}))
    with pytest.raises(PolicyDenied, match=r"policies/mine.rego: auc 0.905 < 0.95"):
        start_rollout(store, real_registry, spec_file.read_text(), source=str(spec_file), actor="t")

    spec_file.write_text(spec_text("good", {"start": ["data-freshness"], "promote": ["policies/broken.rego", "nope"]}))
    with pytest.raises(SpecError) as caught:
        start_rollout(store, real_registry, spec_file.read_text(), source=str(spec_file), actor="t")
    where = [where for where, _ in caught.value.problems]
    assert where[0].startswith("spec.gates.promote[0] (line ")
    assert "does not compile" in caught.value.problems[0][1] and "(line " in caught.value.problems[0][1]
    assert where[1].startswith("spec.gates.promote[1] (line ")
    assert "neither a .rego file nor a built-in policy" in caught.value.problems[1][1]
    assert store.list_rollouts() == []


@pytest.mark.parametrize(
    ("source", "document", "denial"),
    [
        ("allow := true", {}, None),  # no deny rule: allowed
        ('deny := "nope"', {}, 'deny must be a set of messages, got "nope"'),
        (
            "deny contains x if { x := to_number(input.v) }",
            {"v": "abc"},
            "the policy failed to evaluate: a run-time error in the policy (a built-in function failed on its input)",
        ),
    ],
)
def test_a_policy_that_cannot_answer_denies(source: str, document: dict[str, Any], denial: str | None) -> None:
    engine = RegoPolicyEngine()
    policy = Policy("p", f"package p\nimport rego.v1\n{source}\n", {})
    decision = engine.evaluate(Gate.STEP, [policy], document)
    assert [d.message for d in decision.denials] == ([denial] if denial else [])
    assert engine.evaluate(Gate.STEP, [policy], document) == decision  # the same from the compiled bundle


SIGNATURE = {"inputs": [{"name": "amount", "type": "double", "required": True}], "outputs": None}


@pytest.mark.parametrize("candidate", [{"signature": None}, {}], ids=["null", "missing"])
def test_signature_match_denies_a_candidate_without_a_signature(candidate: dict[str, Any]) -> None:
    engine = RegoPolicyEngine()
    policy = Policy("signature-match", engine.source("signature-match", relative_to=None), {})
    decision = engine.evaluate(Gate.START, [policy], {"baseline": {"signature": SIGNATURE}, "candidate": candidate})
    assert [d.message for d in decision.denials] == ["the candidate has no model signature to compare"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_nan_or_an_infinity_in_the_input_reaches_a_policy_as_null_and_fails_it_closed(value: float) -> None:
    engine = RegoPolicyEngine()
    missing = Policy("missing", "package p\nimport rego.v1\ndeny contains `no auc` if input.auc == null\n", {})
    echo = Policy("echo", "package e\nimport rego.v1\ndeny contains x if { some x in input.deep[0].xs }\n", {})
    document = {"auc": value, "deep": [{"xs": [value]}]}
    decision = engine.evaluate(Gate.STEP, [missing, echo], document)
    assert [(d.policy, d.message) for d in decision.denials] == [("missing", "no auc"), ("echo", "null")]


@pytest.mark.parametrize("lower_is_better", [[], ["auc"]])
def test_offline_metrics_denies_a_candidate_metric_that_is_not_a_finite_number(lower_is_better: list[str]) -> None:
    engine = RegoPolicyEngine()
    params = {"metrics": ["auc"], "lowerIsBetter": lower_is_better}
    policy = Policy("offline-metrics", engine.source("offline-metrics", relative_to=None), params)
    document = {"baseline": {"metrics": {"auc": 0.9}}, "candidate": {"metrics": {"auc": float("nan")}}}
    decision = engine.evaluate(Gate.START, [policy], document)
    assert [d.message for d in decision.denials] == ["the candidate's auc metric is null, not a finite number"]


def test_a_package_with_a_quoted_part_is_queried_whole(tmp_path: Path) -> None:
    (tmp_path / "team.rego").write_text('package rules["fraud-team"]\nimport rego.v1\ndeny contains "ours" if true\n')
    engine = RegoPolicyEngine()
    policy = Policy("team.rego", engine.source("team.rego", relative_to=str(tmp_path)), {})
    assert [d.message for d in engine.evaluate(Gate.START, [policy], {}).denials] == ["ours"]


def test_a_package_that_cannot_be_queried_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "odd.rego").write_text("# rules\npackage rules[x]\nimport rego.v1\ndeny contains 1 if true\n")
    with pytest.raises(ValueError, match=r"policy odd.rego does not compile: package rules\[x\] \(line 2\): "):
        RegoPolicyEngine().source("odd.rego", relative_to=str(tmp_path))


def test_a_policy_that_crashes_the_rego_engine_is_refused_and_this_process_lives(tmp_path: Path) -> None:
    """rego-cpp takes its process down (a segmentation fault) compiling a built-in kept in a
    variable and called: such a file, given to a start, killed the API or the controller."""
    (tmp_path / "crash.rego").write_text(
        "package crash\nimport rego.v1\ndeny contains msg if {\n  f := count\n  f([1]) > 0\n  msg := `x`\n}\n"
    )
    with pytest.raises(
        ValueError, match=r"policy crash.rego is refused: it crashes the Rego engine \(rego-cpp, SIGSEGV\)"
    ):
        RegoPolicyEngine().source("crash.rego", relative_to=str(tmp_path))


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("deny contains msg if { msg := undefined_fn(1) }", "Function not found: undefined_fn"),
        ("f(x) := y if { y := f(x) }\ndeny contains `r` if f(1)", "Recursion detected in rule body: data.t.deny"),
    ],
    ids=["unknown-function", "recursion"],
)
def test_an_error_found_only_when_the_policy_runs_is_rego_cpps_message_never_a_crash(
    tmp_path: Path, body: str, error: str
) -> None:
    source = f"package t\nimport rego.v1\n{body}\n"
    (tmp_path / "broken.rego").write_text(source)
    engine = RegoPolicyEngine()
    with pytest.raises(ValueError, match=f"policy broken.rego does not compile: {error}"):
        engine.source("broken.rego", relative_to=str(tmp_path))
    policy = Policy("broken", source, {})  # one saved with a rollout before: it denies, every time
    for _ in range(2):  # compiled, then from the cached bundle
        decision = engine.evaluate(Gate.STEP, [policy], {})
        assert [d.message for d in decision.denials] == [f"the policy failed to evaluate: {error}"]


REFUSED = [
    # (the policy's lines after its package and import, the built-in, its line, why it is refused)
    (
        "deny contains msg if { msg := opa.runtime().env.MODELCANARY_TEST_SECRET }",
        "opa.runtime",
        4,
        "reads the controller's environment (a secret could end up in a denial message)",
    ),
    (
        'deny contains "late" if time.now_ns() > input.params.deadline_ns',
        "time.now_ns",
        4,
        "reads the wall clock; compare with input.now, the decision's clock, so a decision replays",
    ),
    (  # rego-cpp takes the name spelled so too
        'deny contains msg if {\n  msg := opa [ "runtime" ] ( ).env.MODELCANARY_TEST_SECRET\n}',
        "opa.runtime",
        5,
        "reads the controller's environment (a secret could end up in a denial message)",
    ),
    (
        'deny contains "late" if {\n  t := time.  # the wall clock\n    now_ns()\n  t > 0\n}',
        "time.now_ns",
        5,
        "reads the wall clock; compare with input.now, the decision's clock, so a decision replays",
    ),
    ('deny contains "coin" if rand.intn("x", 2) == 1', "rand.intn", 4, "is random, so a decision would not replay"),
]


@pytest.mark.parametrize(("body", "builtin", "line", "why"), REFUSED, ids=[f"{r[1]}-{r[2]}" for r in REFUSED])
def test_a_policy_that_reads_the_environment_or_the_clock_is_refused_naming_the_builtin_and_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, builtin: str, line: int, why: str
) -> None:
    source = f"package p\nimport rego.v1\n# time.now_ns() in a comment is no use of it\n{body}\n"
    (tmp_path / "reader.rego").write_text(source)
    engine = RegoPolicyEngine()
    refusal = f"is refused: it uses {builtin} (line {line}), which {why}"
    with pytest.raises(ValueError, match=re.escape(f"policy reader.rego {refusal}")):
        engine.source("reader.rego", relative_to=str(tmp_path))

    monkeypatch.setenv("MODELCANARY_TEST_SECRET", "hunter2")
    policy = Policy("reader", source, {"deadline_ns": 0})  # one saved with a rollout before: it denies
    decision = engine.evaluate(Gate.STEP, [policy], {})
    assert [d.message for d in decision.denials] == [f"the policy {refusal}"]
    assert "hunter2" not in decision.summary()


def test_a_policy_naming_those_words_elsewhere_is_not_refused(tmp_path: Path) -> None:
    (tmp_path / "fine.rego").write_text(
        "package p\nimport rego.v1\n# time.now_ns() would read the wall clock\n"
        'deny contains "opa.runtime() is off limits" if input.time.now_ns > input.now\n'
    )
    engine = RegoPolicyEngine()
    policy = Policy("fine", engine.source("fine.rego", relative_to=str(tmp_path)), {})
    assert [d.message for d in engine.evaluate(Gate.STEP, [policy], {"time": {"now_ns": 2}, "now": 1}).denials] == [
        "opa.runtime() is off limits"
    ]


def test_a_policy_that_runs_out_of_its_evaluation_budget_denies_saying_it_took_too_long() -> None:
    loops = "\n".join(f"  some {name} in numbers.range(1, 100)" for name in "ijk")  # 10^6 rounds
    slow = Policy(
        "slow", f'package slow\nimport rego.v1\ndeny contains "never" if {{\n{loops}\n  i + j + k < 0\n}}\n', {}
    )
    decision = RegoPolicyEngine().evaluate(Gate.STEP, [slow], {})
    (denial,) = decision.denials
    assert re.fullmatch(
        r"the policy failed to evaluate: it took too long: rego-cpp stopped it after \d+\.\d s, at its evaluation"
        r" budget of 10,000,000 statements; make it do less work",
        denial.message,
    ), denial.message
