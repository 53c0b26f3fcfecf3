"""Response headers every answer under the API's prefix carries: ``Cache-Control: no-store``, since
what a token may read (rollouts, the audit log, tokens) must not be kept by a browser or a shared
cache after the tab that asked for it is gone; and ``X-Content-Type-Options: nosniff``, so a browser
takes a JSON answer (which quotes text from callers: reasons, spec names) as JSON and never guesses
it is HTML or a script."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PRIVATE = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))


class PrivateResponses:
    """ASGI middleware: a response to a request under ``prefix`` gets the ``PRIVATE`` headers, in
    place of any the route set under those names."""

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in PRIVATE}
                kept = [(name, value) for name, value in message.get("headers", []) if name.lower() not in names]
                message["headers"] = [*kept, *PRIVATE]
            await send(message)

        await self.app(scope, receive, with_headers)
