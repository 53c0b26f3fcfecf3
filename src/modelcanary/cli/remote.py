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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from modelcanary.cli.operations import AuditCheck, BrokenLink
from modelcanary.domain.errors import ModelcanaryError
from modelcanary.domain.state import RolloutState

if TYPE_CHECKING:
    from modelcanary.controller.report import Report
    from modelcanary.engine.decide import Command

API = "/api/v1"
PAGE = 500  # the API answers lists a page at a time: ask for this many, until a shorter page
T = TypeVar("T")


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
        base = _server_url(server).rstrip("/")
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
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _problem(exc) from exc
        # refused, unresolvable, timed out; or a URL urllib will not call (ValueError)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(status=0, title="unreachable", detail=f"cannot reach {self.base}: {reason}") from exc
        try:
            return json.loads(raw or b"null")
        except ValueError as exc:  # an answer that is not JSON: not a modelcanary control API
            raise ApiError(status=0, title="bad answer", detail=f"{url} did not answer JSON: {exc}") from exc

    def read(self, method: str, path: str, shape: Callable[[Any], T], **kwargs: Any) -> T:
        """``call``, its answer read by ``shape`` (a model's ``model_validate``, say). An answer of
        another shape (``{"ok": true}`` from some other service on that port) was not given by a
        modelcanary control API: an ``ApiError`` saying so, not a KeyError or a ValidationError."""
        answer = self.call(method, path, **kwargs)
        try:
            return shape(answer)
        # pydantic's ValidationError is a ValueError; a dict where a list belongs is a TypeError or AttributeError
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            gist = f"no {exc.args[0]!r} in it" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
            detail = f"{self.base}{API}{path} did not answer like a modelcanary control API ({gist})"
            raise ApiError(status=0, title="bad answer", detail=detail) from exc


def _server_url(server: str) -> str:
    """The control API's URL as given, if a client can call it: http(s), a host, a good port.

    >>> _server_url("notaurl")
    Traceback (most recent call last):
    ...
    modelcanary.cli.remote.ApiError: --server 'notaurl' is not a URL: give http://HOST:PORT
    >>> _server_url("http://ops:s3cret@host:8080")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    modelcanary.cli.remote.ApiError: --server holds a user or password: ... give http://HOST:PORT
    """
    try:
        parts = urllib.parse.urlsplit(server)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        credentials = parts.username is not None or parts.password is not None
    except ValueError:  # an unclosed [IPv6] host, a port that is no number or past 65535
        usable, credentials = False, False
    if credentials:  # not said back: it would land in a CI log (audit)
        detail = (
            "--server holds a user or password: the control API takes a token (--token), "
            "and the URL is said in messages; give http://HOST:PORT"
        )
        raise ApiError(status=0, title="bad server URL", detail=detail)
    if not usable or any(char.isspace() for char in server):
        detail = f"--server {server!r} is not a URL: give http://HOST:PORT"
        raise ApiError(status=0, title="bad server URL", detail=detail)
    return server


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
        return self.client.read(
            "POST", "/rollouts", RolloutState.model_validate, body={"spec": spec_text, "source": source}
        )

    def rollouts(self, *, active_only: bool = False) -> list[RolloutState]:
        # active=false asks for the ended ones only: every rollout is no parameter at all
        query = {"active": "true"} if active_only else {}
        found: list[RolloutState] = []
        while True:  # newest first: the next page is before the last rollout of this one
            cursor = {"before": found[-1].id} if found else {}
            page = self.client.read("GET", "/rollouts", _states, query={**query, **cursor, "limit": str(PAGE)})
            found += page
            if len(page) < PAGE:
                return found

    def rollout(self, rollout_id: str) -> tuple[RolloutState, str]:
        return self.client.read("GET", f"/rollouts/{_quote(rollout_id)}", _state_and_spec)

    def report(self, rollout_id: str) -> Report:
        from modelcanary.controller.report import Report
        from modelcanary.domain.judgement import Judgement
        from modelcanary.domain.state import Transition
        from modelcanary.domain.telemetry import RolloutTelemetry, VariantTelemetry

        path = f"/rollouts/{_quote(rollout_id)}"
        state, history, judgement = self.client.read(
            "GET",
            f"{path}/report",
            lambda got: (
                RolloutState.model_validate(got["rollout"]),
                [Transition.model_validate(entry) for entry in got["history"]],
                Judgement.model_validate(got["judgement"]),
            ),
        )
        telemetry = self.client.read(
            "GET",
            f"{path}/telemetry",
            lambda got: RolloutTelemetry(
                baseline=VariantTelemetry.from_json(got["baseline"]),
                candidate=VariantTelemetry.from_json(got["candidate"]),
            ),
        )
        return Report(state=state, history=history, telemetry=telemetry, judgement=judgement)

    def command(self, rollout_id: str, command: Command, *, reason: str | None = None) -> RolloutState:
        body = {"reason": reason} if reason else {}
        path = f"/rollouts/{_quote(rollout_id)}/{command.value}"
        return self.client.read("POST", path, RolloutState.model_validate, body=body)

    def audit_events(self, rollout_id: str | None = None) -> list[dict[str, Any]]:
        query = {"rollout": rollout_id} if rollout_id is not None else {}
        found: list[dict[str, Any]] = []
        while True:  # oldest first: the next page is after the last event of this one
            cursor = {"after": str(found[-1]["id"])} if found else {}
            page = self.client.read("GET", "/audit", _events, query={**query, **cursor, "limit": str(PAGE)})
            found += page
            if len(page) < PAGE:
                return found

    def verify_audit(self) -> AuditCheck:
        return self.client.read("GET", "/audit/verify", _audit_check)

    def close(self) -> None:
        pass  # urllib holds no connection between calls


def _quote(rollout_id: str) -> str:
    return urllib.parse.quote(rollout_id, safe="")


def _states(listed: Any) -> list[RolloutState]:
    if not isinstance(listed, list):
        raise TypeError("not a list of rollouts")
    return [RolloutState.model_validate(entry) for entry in listed]


def _state_and_spec(got: Any) -> tuple[RolloutState, str]:
    spec = got["spec"]
    if not isinstance(spec, str):
        raise TypeError("its spec is not text")
    return RolloutState.model_validate(got["rollout"]), spec


def _events(listed: Any) -> list[dict[str, Any]]:
    """Audit events: the commands read each one's ``hash``."""
    if not isinstance(listed, list) or not all(isinstance(event, dict) and "hash" in event for event in listed):
        raise TypeError("not a list of audit events with their hashes")
    return listed


def _audit_check(verified: Any) -> AuditCheck:
    broken = verified.get("broken")
    count = verified["count"]
    return AuditCheck(
        ok=bool(verified["ok"]),
        count=None if count is None else int(count),
        broken=None
        if not broken
        else BrokenLink(id=int(broken["id"]), position=int(broken["position"]), reason=str(broken["reason"])),
    )
