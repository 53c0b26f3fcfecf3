"""The contracts between the core and the outside world. Each is small; adapters implement them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from modelcanary.domain.access import Role, TokenInfo
from modelcanary.domain.errors import ModelcanaryError
from modelcanary.domain.gates import Gate, GateDecision
from modelcanary.domain.spec import Source
from modelcanary.domain.state import Action, ModelInfo, ModelVersion, Outcome, RolloutState, Route, Transition
from modelcanary.domain.telemetry import RolloutTelemetry, Variant, VariantTelemetry


class Registry(Protocol):
    def resolve(self, uri: str) -> ModelVersion:
        """The concrete version behind ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (idempotent)."""

    def set_tag(self, name: str, version: str, key: str, value: str) -> None:
        """Set a tag on a model version (idempotent)."""

    def describe(self, version: ModelVersion) -> ModelInfo:
        """The version's lineage and metadata: run, source, git commit, data tags, metrics, signature."""


@dataclass(frozen=True)
class Policy:
    """A gate policy as evaluated: its name (the spec's ref), its source, and its parameters."""

    name: str
    source: str
    params: dict[str, Any]


class PolicyEngine(Protocol):
    def source(self, ref: str, *, relative_to: str | None) -> str:
        """The source of a policy file (relative to the folder ``relative_to``) or built-in name;
        ``ValueError`` saying why if there is none or it does not compile."""

    def evaluate(self, gate: Gate, policies: Sequence[Policy], document: dict[str, Any]) -> GateDecision:
        """Every policy's ``deny`` messages for ``document`` (plus its ``params``); a policy that
        fails to evaluate denies, saying why."""


class Notifier(Protocol):
    def deliver(self, payload: dict[str, str]) -> None:
        """Send one notification action's payload once; ``DeliveryError`` unless the receiver took it."""


class AuditLog(Protocol):
    def append_audit(
        self, *, at: float, actor: str, action: str, rollout_id: str | None, detail: dict[str, Any]
    ) -> None:
        """Append one event to the hash-chained audit log, on its own (a refused start, say)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # the signature's type name: double, float, long, integer, boolean, string
    required: bool = True


class TensorColumns(tuple[Column, ...]):
    """The columns of a model whose signature is one unnamed tensor of shape (-1, N) (``infer_signature``
    on a numpy matrix): N columns named "0" to "N-1", of the tensor's type, that take their values
    by position. Rows (``inputs: [[...]]``), a 2-D tensor and a frame map onto them in order, as
    MLflow's scoring server turns them into the matrix; named columns of another name count by
    position too, when there are N of them."""

    __slots__ = ()


# the signature's type names as Open Inference Protocol (V2) datatypes, and back
V2_DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
}
SIGNATURE_TYPES = {v2: name for name, v2 in V2_DATATYPES.items()} | {
    "FP16": "float",
    "INT16": "integer",
    "INT8": "integer",
}


def answered_datatype(kind: str) -> str | None:
    """The V2 datatype of the gateway's answers for a model whose outputs are of ``kind`` (a
    signature's type name, a numpy dtype's kind character, or a V2 datatype): answers carry
    Python numbers, so every float is FP64 and every integer INT64 (``gateway.answers.output_tensor``).
    None for a kind it does not know.

    >>> [answered_datatype(kind) for kind in ("float", "i", "UINT8", "binary", "b", "datetime")]
    ['FP64', 'INT64', 'INT64', 'BYTES', 'BOOL', None]
    """
    if kind in ("double", "float", "f") or kind.startswith("FP"):
        return "FP64"
    if kind in ("long", "integer", "i", "u") or kind.startswith(("INT", "UINT")):
        return "INT64"
    if kind in ("boolean", "b", "BOOL"):
        return "BOOL"
    if kind in ("string", "binary", "U", "S", "O", "BYTES"):
        return "BYTES"
    return None


# A V2 request's parameters that are about the protocol, not for the model: Triton's binary data
# extension, and MLServer's content type and headers. The rest are its inference parameters.
V2_PROTOCOL_PARAMETERS = frozenset({"binary_data_output", "content_type", "headers"})


class Model(Protocol):
    """A loaded model. Four optional members, looked up with ``getattr`` by the gateway:
    ``async def apredict(columns) -> list`` — what the gateway awaits instead of ``predict`` when
    present (a remote server, a Ray deployment, a batching queue: anything that waits);
    ``output_shape: list[int]`` — the output tensor's shape for V2 model metadata (-1 where it varies);
    ``output_datatype: str`` — the V2 datatype of its answers (``answered_datatype``), which
    model metadata leaves out where the model does not state it; and ``takes_params: bool`` — it
    reads a request's inference parameters, given as ``predict(columns, params=...)`` (and
    ``apredict``'s), which a model without it never gets (``gateway.calls.with_params``)."""

    columns: tuple[Column, ...] | None  # the input signature; None when the model has none

    def predict(self, columns: dict[str, list[Any]]) -> list[Any]:
        """One output per row: a number, or a list of numbers (class probabilities)."""


class Backend(Protocol):
    def load(self, version: ModelVersion) -> Model:
        """Load a model version so it can predict. Slow; never called on the request path."""


@dataclass(frozen=True)
class Fence:
    """A controller's claim to act: the lease it holds and the token it got with it. The token
    grows whenever the lease changes hands, so a write carrying an older one is refused."""

    lease: str
    token: int


class Leases(Protocol):
    def acquire_lease(self, name: str, holder: str, *, ttl_s: float, now: float | None = None) -> Fence | None:
        """Take or renew a lease until ``now + ttl_s``; None while another holder's is running."""

    def release_lease(self, fence: Fence, holder: str) -> None:
        """Give a held lease up at once."""


class RolloutStore(Protocol):
    def create(self, state: RolloutState, spec_text: str, *, actor: str, spec_json: str | None = None) -> None:
        """Save a new rollout with its spec's YAML text and, if given, its validated JSON;
        ``Conflict`` if its endpoint already has an active one."""

    def get(self, rollout_id: str) -> tuple[RolloutState, str]:
        """The state and the spec's YAML text; ``NotFound`` if there is no such rollout."""

    def list_rollouts(
        self,
        *,
        active: bool | None = None,
        endpoints: Sequence[str] | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> list[RolloutState]:
        """Rollouts, newest first (creation time, then id): active ones only, or ended ones
        only (``active`` False); of ``endpoints`` only; those after rollout ``before`` (a page's
        last id; ``NotFound`` if there is none); at most ``limit``."""

    def active_rollouts(
        self, known: Mapping[str, RolloutState], *, mine: Callable[[str], bool] | None = None
    ) -> list[RolloutState]:
        """The active rollouts, newest first, as ``list_rollouts(active=True)`` reads them,
        except that a rollout whose stored version is that of its state in ``known`` is that state,
        not read again (every save bumps the version, so the same version is the same state).
        Given ``mine``, only the rollouts whose id it accepts (a shard's)."""

    def save(self, outcome: Outcome, *, expected_version: int, fence: Fence | None = None) -> RolloutState:
        """Save state, transition, route and actions in one transaction if the stored version is
        still ``expected_version`` (``Conflict`` otherwise) and, given a fence, if its token is
        still the lease's (``Fenced`` otherwise)."""

    def save_many(
        self, items: Sequence[tuple[Outcome, int]], *, fence: Fence | None = None
    ) -> list[tuple[RolloutState | None, ModelcanaryError | None]]:
        """``save`` for many (outcome, expected version) pairs in one transaction, each on its own:
        per item the saved state, or the error that kept it out. ``Fenced`` for all at once."""

    def specs(self, rollout_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """Each rollout's spec text and its validated JSON (None where the store has none)."""


class ActionQueue(Protocol):
    def pending_actions(self) -> list[tuple[int, Action]]:
        """Side effects saved but not yet marked done, oldest first."""

    def mark_done(
        self,
        action_id: int,
        *,
        error: str | None = None,
        fence: Fence | None = None,
        final: bool = False,
        found: Mapping[str, Any] | None = None,
    ) -> None:
        """Record that an action ran (or failed with ``error``, to be tried again, unless ``final``:
        given up); a done or given-up action is audited, with what it ``found`` as it ran (an alias
        move: the version the alias named before). Given a fence, ``Fenced`` once the lease has
        passed to another holder."""


class TelemetryStore(Protocol):
    def write_telemetry(
        self, source: str, rows: Sequence[tuple[str, Variant, VariantTelemetry]], *, fence: Fence | None = None
    ) -> None:
        """Upsert one source's cumulative counts per (rollout id, variant); with ``fence``, refused
        (``Fenced``) once its lease has passed on."""

    def read_telemetry(self, rollout_id: str) -> list[tuple[Variant, VariantTelemetry]]:
        """Every source's cumulative counts for a rollout."""

    def read_telemetry_many(self, rollout_ids: Sequence[str]) -> dict[str, list[tuple[Variant, VariantTelemetry]]]:
        """``read_telemetry`` for many rollouts at once."""

    def relay_labels(self, via: str, items: Sequence[tuple[str, str, int]]) -> None:
        """Keep labels (issuer, prediction id, label) that gateway ``via`` received for another
        gateway's predictions, until the issuer takes them."""

    def take_labels(self, *issuers: str) -> list[tuple[str, int]]:
        """Remove and return the (prediction id, label) pairs relayed to these issuers, oldest first."""

    def hand_off(self, via: str, rows: Sequence[Sequence[Any]], key: str | None = None) -> None:
        """Keep what stopping gateway ``via`` held for labels to come (JSON rows), whole, until
        another gateway adopts it; once for a ``key`` (default ``via``), however often it is sent."""

    def adopt_handoffs(self) -> list[list[Any]]:
        """Remove and return every row handed off, oldest first: a gateway adopts them."""

    def expire_labels(self, received_before: float) -> int:
        """Drop relayed labels received before that time; how many."""


class RouteSource(Protocol):
    def routes_version(self) -> int:
        """A number that grows whenever any route changes."""

    def routes(self) -> dict[str, Route]:
        """The route of every endpoint."""


class History(Protocol):
    def history(self, rollout_id: str) -> list[Transition]:
        """A rollout's transitions, oldest first."""


class Tokens(Protocol):
    def create_token(
        self, *, name: str, role: Role, endpoints: Sequence[str] | None, actor: str, now: float | None = None
    ) -> tuple[TokenInfo, str]:
        """A new token and its secret, which is returned this once and stored only as a hash
        (audited); ``Conflict`` if the name was ever taken."""

    def token_by_secret(self, secret: str) -> TokenInfo | None:
        """The live (not revoked) token with this secret, or None."""

    def list_tokens(self) -> list[TokenInfo]:
        """Every token, revoked ones too, oldest first; never a secret."""

    def revoke_token(self, key: str, *, actor: str, now: float | None = None) -> TokenInfo:
        """Revoke the token with this id or name (audited); ``NotFound``, or ``Conflict`` if already revoked."""


@dataclass(frozen=True)
class Measurement:
    """One read of a metric source: both variants' telemetry, or why there is none. A failed query
    is data the controller holds the rollout on, never an exception that stops it."""

    telemetry: RolloutTelemetry | None
    error: str | None = None


class MetricSource(Protocol):
    def measure(self, source: Source, *, since: float, until: float) -> Measurement:
        """Each variant's cumulative telemetry from ``since`` to ``until`` (Unix seconds); never raises."""
