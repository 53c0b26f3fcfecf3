"""Policy gates: the three points where a rollout asks its policies whether it may go on, and what
they answered. Plain values, so a gate's answer is saved with the decision it let through or held,
and the decision can be replayed from the store without running a policy again.

>>> decision = GateDecision(gate=Gate.PROMOTE, policies=("change-freeze",),
...                         denials=(Denial(policy="change-freeze", message="frozen until Monday"),))
>>> decision.allowed, decision.summary()
(False, 'promote gate: change-freeze: frozen until Monday')
"""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict


class Gate(enum.StrEnum):
    START = "start"  # before the rollout is saved: a denial refuses it
    STEP = "step"  # before the candidate's share grows to the next weight step
    PROMOTE = "promote"  # before the candidate becomes the baseline


class Denial(BaseModel):
    """One message a policy's ``deny`` rule produced."""

    model_config = ConfigDict(frozen=True)

    policy: str
    message: str


class GateDecision(BaseModel):
    """The policies evaluated at one gate and the denials they produced; none means allowed."""

    model_config = ConfigDict(frozen=True)

    gate: Gate
    policies: tuple[str, ...]
    denials: tuple[Denial, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.denials

    def summary(self) -> str:
        if self.allowed:
            return f"{self.gate.value} gate: allowed by {', '.join(self.policies) or 'no policy'}"
        messages = "; ".join(f"{denial.policy}: {denial.message}" for denial in self.denials)
        return f"{self.gate.value} gate: {messages}"
