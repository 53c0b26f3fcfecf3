"""Errors as ``application/problem+json`` (RFC 9457), one shape for every failure the API reports:
``{"type", "title", "status", "detail", "field"}``, where ``field`` names the request field at
fault when there is one. Domain errors map to statuses here, in one table."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelcanary.domain.errors import (
    Conflict,
    Forbidden,
    ModelcanaryError,
    NotFound,
    PolicyDenied,
    RegistryError,
    RequestError,
    SpecError,
    StoreError,
)

log = logging.getLogger("modelcanary.api")
MEDIA_TYPE = "application/problem+json"
MAX_BODY_BYTES = 4 << 20  # a request body: room for a 64 KiB spec (specyaml.MAX_SPEC_CHARS) as JSON, escapes and all


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    field: str | None = None


def problem(
    status: int, detail: str, *, field: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, field=field)
    return JSONResponse(body.model_dump(), status_code=status, media_type=MEDIA_TYPE, headers=dict(headers or {}))


def status_of(exc: ModelcanaryError) -> int:
    """
    >>> status_of(NotFound("x")), status_of(SpecError([])), status_of(RequestError("x", status=404))
    (404, 422, 404)
    >>> status_of(PolicyDenied("promote", [("freeze", "a change freeze is on")]))
    403
    """
    if isinstance(exc, RequestError):
        return exc.status
    if isinstance(exc, SpecError | RegistryError):
        return 422  # the spec is invalid, or names a model the registry does not hold
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Forbidden):
        return 403  # the caller's role is not enough for this rollout (an approval step's)
    if isinstance(exc, PolicyDenied):
        return 403  # a policy gate refused the action, with its messages in the detail
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, StoreError):
        return 503
    return 400


def _field(exc: ModelcanaryError) -> str | None:
    if isinstance(exc, RequestError):
        return exc.field
    if isinstance(exc, SpecError | RegistryError):
        return "spec"
    return None


def detail_of(exc: ModelcanaryError) -> str:
    """What a caller is told: the error's message, but for the store's, whose message carries its
    URL and SQL (logged here instead; the caller may not even have a valid token)."""
    if isinstance(exc, StoreError):
        log.error("the store failed: %s", exc)
        return "the store is unavailable; the server logged why"
    return str(exc)


async def _domain(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelcanaryError)
    return problem(status_of(exc), detail_of(exc), field=_field(exc))


async def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    field, detail = getattr(exc, "field", None), str(exc.detail)
    if exc.status_code == 400 and field is None and isinstance(exc.__cause__, ValueError):
        # FastAPI's "There was an error parsing the body", from a body that is not UTF-8 text
        field, detail = "body", f"the body is not JSON text: {exc.__cause__}"
    return problem(exc.status_code, detail, field=field, headers=exc.headers)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    """Every invalid field, each named by its place in the request (``body.role``, ``query.active``)."""
    assert isinstance(exc, RequestValidationError)
    errors: list[Any] = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):  # its "loc" is a character offset
        return problem(
            400, f"the body is not valid JSON: {errors[0].get('ctx', {}).get('error', 'invalid')}", field="body"
        )
    places = [".".join(str(part) for part in error.get("loc", ())) for error in errors]
    detail = "; ".join(f"{place}: {error.get('msg', 'invalid')}" for place, error in zip(places, errors, strict=True))
    content_type = request.headers.get("content-type", "")
    if "body" in places and "json" not in content_type:  # the whole body: not read as JSON at all (curl -d)
        detail += f" (a body is read as JSON under Content-Type: application/json; this one was {content_type!r})"
    return problem(422, detail or "invalid request", field=places[0] if places else None)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ModelcanaryError, _domain)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries for a route's error statuses, each a ``Problem``."""
    return {status: {"model": Problem, "description": HTTPStatus(status).phrase} for status in statuses}


class _TooLarge(HTTPException):
    field = "body"


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is a 413 problem, said before any of it
    is read when its Content-Length declares it, or at the chunk that passes the limit when it
    streams in (the route's body read raises it, and the exception handlers answer). Without it
    FastAPI reads a body whole, whatever its size, before a route's own bounds are checked."""

    def __init__(self, app: ASGIApp, *, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the request body is larger than {self.limit} bytes"
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.limit:
            await problem(413, detail, field="body")(scope, receive, send)
            return
        size = 0

        async def bounded() -> Message:
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            if size > self.limit:
                raise _TooLarge(413, detail)
            return message

        await self.app(scope, bounded, send)
