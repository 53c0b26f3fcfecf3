"""The control API's client: ``Operations`` over HTTP, on the routes under ``/api/v1``.

The standard library's urllib is enough: the CLI makes a handful of calls, never on a hot path.
A problem+json answer becomes an ``ApiError`` whose text is the problem's ``detail``, so a remote
command fails with the same words a local one would (a spec error lists each field with its line).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

from modelcanary.cli.operations import AuditCheck, BrokenLink
from modelcanary.domain.errors import ModelcanaryError
from modelcanary.domain.state import RolloutState

if TYPE_CHECKING:
    from modelcanary.controller.report import Report
    from modelcanary.engine.decide import Command

API = "/api/v1"


class ApiError(ModelcanaryError):
    """The control API refused a request or could not be reached. ``status`` is the HTTP status
    (0 when there was no answer), ``field`` the request field the problem names, if any.

    >>> str(ApiError(status=401, title="Unauthorized", detail="invalid token"))
    'invalid token (401 Unauthorized: check --token or MODELCANARY_TOKEN)'
    >>> str(ApiError(status=409, title="Conflict", detail="rollout r1 is already paused"))
    'rollout r1 is already paused'
    """

    def __init__(self, *, status: int, title: str, detail: str, field: str | None = None) -> None:
        self.status, self.title, self.detail, self.field = status, title, detail, field
        message = detail or title
        if field and field not in message:
            message = f"{field}: {message}"
        if status in (401, 403):
            hint = "check --token or MODELCANARY_TOKEN" if status == 401 else "this token's role or endpoints"
            message = f"{message} ({status} {title}: {hint})"
        super().__init__(message)


class ApiClient:
    """Calls on one control API with one bearer token. ``server`` is its base URL, with or
    without the ``/api/v1`` suffix."""

    def __init__(self, server: str, token: str, *, timeout_s: float = 30.0) -> None:
        base = server.rstrip("/")
        self.base = base.removesuffix(API)
        self.token = token
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None) -> Any:
        url = f"{self.base}{API}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _problem(exc) from exc
        except (urllib.error.URLError, OSError) as exc:  # refused, unresolvable, timed out
            reason = getattr(exc, "reason", exc)
            raise ApiError(status=0, title="unreachable", detail=f"cannot reach {self.base}: {reason}") from exc
        except ValueError as exc:  # an answer that is not JSON: not a modelcanary control API
            raise ApiError(status=0, title="bad answer", detail=f"{url} did not answer JSON: {exc}") from exc


def _problem(exc: urllib.error.HTTPError) -> ApiError:
    raw = exc.read()
    try:
        problem = json.loads(raw)
    except ValueError:
        problem = None
    if not isinstance(problem, dict) or "status" not in problem:
        text = raw.decode(errors="replace").strip()[:200]
        detail = f"{exc.url} answered {exc.code} {exc.reason}" + (f": {text}" if text else "")
        return ApiError(status=exc.code, title=str(exc.reason), detail=detail)
    return ApiError(
        status=int(problem.get("status") or exc.code),
        title=str(problem.get("title") or exc.reason),
        detail=str(problem.get("detail") or ""),
        field=problem.get("field"),
    )


class RemoteOperations:
    """``Operations`` through a control API; the server audits every action as the token's name."""

    def __init__(self, server: str, token: str, *, timeout_s: float = 30.0) -> None:
        self.client = ApiClient(server, token, timeout_s=timeout_s)

    def start(self, spec_text: str, *, source: str) -> RolloutState:
        created = self.client.call("POST", "/rollouts", body={"spec": spec_text, "source": source})
        return RolloutState.model_validate(created)

    def rollouts(self, *, active_only: bool = False) -> list[RolloutState]:
        # active=false asks for the ended ones only: every rollout is no parameter at all
        listed = self.client.call("GET", "/rollouts", query={"active": "true"} if active_only else None)
        return [RolloutState.model_validate(entry) for entry in listed]

    def rollout(self, rollout_id: str) -> tuple[RolloutState, str]:
        got = self.client.call("GET", f"/rollouts/{_quote(rollout_id)}")
        return RolloutState.model_validate(got["rollout"]), str(got["spec"])

    def report(self, rollout_id: str) -> Report:
        from modelcanary.controller.report import Report
        from modelcanary.domain.judgement import Judgement
        from modelcanary.domain.state import Transition
        from modelcanary.domain.telemetry import RolloutTelemetry, VariantTelemetry

        path = f"/rollouts/{_quote(rollout_id)}"
        report = self.client.call("GET", f"{path}/report")
        telemetry = self.client.call("GET", f"{path}/telemetry")
        return Report(
            state=RolloutState.model_validate(report["rollout"]),
            history=[Transition.model_validate(entry) for entry in report["history"]],
            telemetry=RolloutTelemetry(
                baseline=VariantTelemetry.from_json(telemetry["baseline"]),
                candidate=VariantTelemetry.from_json(telemetry["candidate"]),
            ),
            judgement=Judgement.model_validate(report["judgement"]),
        )

    def command(self, rollout_id: str, command: Command, *, reason: str | None = None) -> RolloutState:
        body = {"reason": reason} if reason else {}
        done = self.client.call("POST", f"/rollouts/{_quote(rollout_id)}/{command.value}", body=body)
        return RolloutState.model_validate(done)

    def audit_events(self, rollout_id: str | None = None) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.client.call(
            "GET", "/audit", query={"rollout": rollout_id} if rollout_id is not None else None
        )
        return events

    def verify_audit(self) -> AuditCheck:
        verified = self.client.call("GET", "/audit/verify")
        broken = verified.get("broken")
        return AuditCheck(
            count=int(verified["count"]),
            broken=None
            if not broken
            else BrokenLink(id=int(broken["id"]), position=int(broken["position"]), reason=str(broken["reason"])),
        )

    def close(self) -> None:
        pass  # urllib holds no connection between calls


def _quote(rollout_id: str) -> str:
    return urllib.parse.quote(rollout_id, safe="")
