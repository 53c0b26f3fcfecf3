"""Webhooks: POST a notification's body as saved, with its idempotency key and an HMAC-SHA256
signature, from the controller's outbox (so a crash neither loses nor doubles one: a receiver
that saw a key before drops the repeat).

Headers: ``Content-Type: application/json``, ``X-Modelcanary-Key: ROLLOUT:vVERSION``, and when
the target names a secret, ``X-Modelcanary-Signature: sha256=HEX``, the HMAC-SHA256 of the raw
body under the secret. A receiver verifies it so:

>>> body, secret = b'{"key": "r:v2"}', "s3cret"
>>> header = signature(secret, body)
>>> import hmac, hashlib
>>> hmac.compare_digest(header, "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest())
True

A delivery is one POST with a deadline: it must be answered within ``timeout_s`` (5 s) in all,
however slowly the receiver sends, and only the first ``MAX_ANSWER`` bytes of the answer are read.
A redirect is not followed: a 3xx fails the delivery, and the signed body goes to no other URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import os
import socket
import threading
import urllib.error
import urllib.request
from typing import Any

from modelcanary.domain.errors import DeliveryError

MAX_ANSWER = 64 * 1024  # bytes of a receiver's answer read; the status is what counts


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """Implements Notifier with the standard library: the controller's tick is synchronous, and one
    POST needs no client pool. Each call is one attempt; the controller spaces and bounds retries."""

    def __init__(self, *, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s

    def deliver(self, payload: dict[str, str]) -> None:
        url, body = payload["url"], payload["body"].encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "modelcanary-webhook",
            "X-Modelcanary-Key": payload["key"],
        }
        if payload.get("secret_env"):
            secret = os.environ.get(payload["secret_env"])
            if not secret:
                raise DeliveryError(f"webhook {url}: environment variable {payload['secret_env']} is not set")
            headers["X-Modelcanary-Signature"] = signature(secret, body)
        deadline = _Deadline(self.timeout_s)
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            opener = urllib.request.build_opener(_NoRedirects(), _HTTPHandler(deadline), _HTTPSHandler(deadline))
            with opener.open(request, timeout=self.timeout_s) as response:
                response.read(MAX_ANSWER)
            if deadline.expired:  # the cut ends a read as if the answer ended there
                raise TimeoutError("the answer was cut short by the deadline")
        except urllib.error.HTTPError as exc:
            exc.close()
            redirect = " (a redirect is not followed)" if 300 <= exc.code < 400 else ""
            raise DeliveryError(f"webhook {url}: HTTP {exc.code} {exc.reason}{redirect}") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if deadline.expired:  # the watchdog cut the connection: whatever it raised, this is why
                raise DeliveryError(f"webhook {url}: no complete answer within {self.timeout_s:g} s") from exc
            if isinstance(exc, OSError):  # refused, timed out, DNS
                raise DeliveryError(f"webhook {url}: {exc}") from exc
            # a bad port or IPv6 address, an answer not HTTP
            raise DeliveryError(f"webhook {url}: {type(exc).__name__}: {str(exc).strip()}") from exc
        finally:
            deadline.cancel()


class _Deadline:
    """Shuts a delivery's connection down when its time is up. A socket's timeout bounds each read
    alone: a receiver trickling a byte a second held a delivery (and the controller's tick) 19 s on
    a 5 s timeout, and one streaming a chunked answer held it for ever."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watching(self, kind: type[http.client.HTTPConnection]) -> Any:
        """A factory of ``kind`` connections whose socket this deadline cuts (for ``do_open``).
        The socket is kept from its connecting: urllib drops the connection's once the headers are
        in, while the answer's body is still read through it."""

        def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            connection = kind(host, **kwargs)
            connect = connection.connect

            def connect_in_time() -> None:
                connect()
                self._sockets.append(connection.sock)
                if self.expired:  # while connecting, before there was a socket to shut down
                    connection.close()
                    raise TimeoutError("the deadline passed while connecting")

            connection.connect = connect_in_time  # type: ignore[method-assign]
            return connection

        return make

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        self.expired = True
        for sock in list(self._sockets):
            # the plain socket's shutdown, under TLS too: it wakes the read blocked on it (OSError:
            # closed meanwhile)
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self.deadline.watching(http.client.HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self.deadline.watching(http.client.HTTPSConnection), req)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer, not a new address: following it would send the signed body elsewhere."""

    def redirect_request(self, *args: Any) -> None:
        return None
