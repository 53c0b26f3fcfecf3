"""Where the control plane asks a rollout's policies: the pure decision says which gate it is about to
cross (``Outcome.asks``), this evaluates that gate's policies on the rollout's saved inputs, and
the decision is made again with the answer, which is saved with the transition it produced."""

from __future__ import annotations

from collections.abc import Callable

from modelcanary.domain.gates import Denial, Gate, GateDecision
from modelcanary.domain.judgement import Judgement
from modelcanary.domain.spec import RolloutSpec
from modelcanary.domain.state import Outcome, RolloutState
from modelcanary.engine.gates import gate_input
from modelcanary.ports import Policy, PolicyEngine


def default_engine() -> PolicyEngine:
    from modelcanary.adapters.policy.rego import RegoPolicyEngine

    return RegoPolicyEngine()


def evaluate_gate(
    engine: PolicyEngine,
    gate: Gate,
    *,
    spec: RolloutSpec,
    state: RolloutState,
    judgement: Judgement | None,
    actor: str,
    now: float,
) -> GateDecision:
    """The answer of ``gate``'s policies, with the sources saved on the rollout when it started."""
    refs = spec.spec.gates.policies(gate.value)
    missing = [ref.policy for ref in refs if ref.policy not in state.policies]
    if missing:  # cannot happen to a rollout started by start_rollout; deny rather than skip a policy
        denials = tuple(Denial(policy=name, message="the policy's source was not saved at start") for name in missing)
        return GateDecision(gate=gate, policies=tuple(ref.policy for ref in refs), denials=denials)
    document = gate_input(
        gate,
        spec_json=spec.model_dump(mode="json", by_alias=True),
        state=state,
        models={
            "baseline": (state.baseline, state.baseline_info),
            "candidate": (state.candidate, state.candidate_info),
        },
        judgement=judgement,
        actor=actor,
        now=now,
    )
    policies = [Policy(ref.policy, state.policies[ref.policy], ref.params) for ref in refs]
    return engine.evaluate(gate, policies, document)


def gated(
    decide: Callable[[dict[Gate, GateDecision]], Outcome],
    *,
    engine: Callable[[], PolicyEngine],
    spec: RolloutSpec,
    judgement: Judgement | None,
    actor: str,
    now: float,
) -> Outcome:
    """``decide`` with the answers of every gate it asks for (a decision crosses at most one). The
    policies read the rollout as the decision would leave it (``outcome.state``): an operator who
    promotes has approved by doing so, and ``require-approver`` counts that approval."""
    answers: dict[Gate, GateDecision] = {}
    outcome = decide(answers)
    while outcome.asks is not None and outcome.asks not in answers:
        answers[outcome.asks] = evaluate_gate(
            engine(), outcome.asks, spec=spec, state=outcome.state, judgement=judgement, actor=actor, now=now
        )
        outcome = decide(answers)
    return outcome
