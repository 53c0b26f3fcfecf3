"""The error tree. Every error modelcanary raises on purpose is a ``ModelcanaryError``.

Foreign exceptions (MLflow, SQLAlchemy, pydantic, YAML) are wrapped where their client is
imported, so callers above the adapters only ever catch these::

    ModelcanaryError
    ├── SpecError            a rollout spec is invalid; names the field path and the YAML line
    ├── RequestError         a client's request is malformed or does not match the model (HTTP 4xx)
    │   ├── UnknownEndpoint  no endpoint of that name (404)
    │   └── UnknownPrediction  feedback names a prediction id the gateway does not hold (404)
    ├── NotFound             no rollout with that id
    ├── Conflict             the action does not fit the current state (active rollout exists,
    │   │                    transition not allowed, concurrent update lost its compare-and-set)
    │   └── Fenced           a controller's lease passed to another: its writes are refused
    ├── PolicyDenied         a policy gate refused a rollout's start; names each policy and its messages
    ├── RegistryError        the model registry refused or failed (unknown model, alias, version)
    ├── BackendError         a model served elsewhere (a remote V2 server, Ray Serve) failed or is
    │                        unreachable; a candidate's costs the client nothing (the baseline answers)
    ├── DeliveryError        a webhook receiver did not take a notification (it is retried)
    └── StoreError           the state store failed
"""

from __future__ import annotations


class ModelcanaryError(Exception):
    """Base of every error modelcanary raises on purpose."""


class SpecError(ModelcanaryError):
    """A rollout spec is invalid. ``problems`` lists ``(where, message)`` pairs.

    >>> str(SpecError([("spec.endpoint (line 4)", "field required")], source="r.yaml"))
    'invalid rollout spec r.yaml:\\n  spec.endpoint (line 4): field required'
    """

    def __init__(self, problems: list[tuple[str, str]], *, source: str = "<spec>") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  {where}: {message}" for where, message in problems)
        super().__init__(f"invalid rollout spec {source}:\n{lines}")


class RequestError(ModelcanaryError):
    """A client request is malformed. ``field`` names where, ``status`` is the HTTP status."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None, status: int | None = None) -> None:
        self.field = field
        if status is not None:
            self.status = status
        super().__init__(f"{field}: {message}" if field else message)


class UnknownEndpoint(RequestError):
    status = 404


class UnknownPrediction(RequestError):
    status = 404


class NotFound(ModelcanaryError):
    """No such rollout."""


class Forbidden(ModelcanaryError):
    """The caller's role does not allow this on this rollout (an approval step needs a higher one)."""


class Conflict(ModelcanaryError):
    """The request does not fit the current state."""


class Stale(Conflict):
    """A compare-and-set lost: the rollout changed since it was read (read it again and retry)."""


class Fenced(Conflict):
    """A write carried a fencing token older than the lease's: its controller is no longer the leader."""


class PolicyDenied(ModelcanaryError):
    """A policy gate refused. ``denials`` lists ``(policy, message)`` pairs.

    >>> str(PolicyDenied("start", [("data-freshness", "trained on data 40 days old; at most 30")]))
    'the start gate denied the rollout:\\n  data-freshness: trained on data 40 days old; at most 30'
    """

    def __init__(self, gate: str, denials: list[tuple[str, str]]) -> None:
        self.gate = gate
        self.denials = denials
        lines = "\n".join(f"  {policy}: {message}" for policy, message in denials)
        super().__init__(f"the {gate} gate denied the rollout:\n{lines}")


class RegistryError(ModelcanaryError):
    """The model registry refused or failed."""


class MissingVersion(RegistryError):
    """The registry holds no such model version, or no such model (deleted, or never made): an
    answer, not an outage."""


class BackendError(ModelcanaryError):
    """A model served elsewhere failed, timed out or could not be reached."""


class DeliveryError(ModelcanaryError):
    """A notification was not delivered: the receiver failed, refused or could not be reached."""


class StoreError(ModelcanaryError):
    """The state store failed."""
