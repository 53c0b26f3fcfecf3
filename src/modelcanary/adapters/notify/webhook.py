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
An error shows the URL without its ``user:password@``: such a URL (which no spec takes now) is
refused before it is opened, as urllib would never send its credentials. A URL taken from the
environment (``urlEnv``) is never shown: errors name its variable.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import re
import urllib.error
import urllib.request
from typing import Any

from modelcanary.adapters.deadline import Deadline
from modelcanary.domain.errors import DeliveryError
from modelcanary.domain.specbase import http_url, without_credentials

MAX_ANSWER = 64 * 1024  # bytes of a receiver's answer read; the status is what counts


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """Implements Notifier with the standard library: the controller's tick is synchronous, and one
    POST needs no client pool. Each call is one attempt; the controller spaces and bounds retries."""

    def __init__(self, *, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s

    def deliver(self, payload: dict[str, str]) -> None:
        url, shown = _target(payload)
        body = payload["body"].encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "modelcanary-webhook",
            "X-Modelcanary-Key": payload["key"],
        }
        if payload.get("secret_env"):
            secret = os.environ.get(payload["secret_env"])
            if not secret:
                raise DeliveryError(f"webhook {shown}: environment variable {payload['secret_env']} is not set")
            headers["X-Modelcanary-Signature"] = signature(secret, body)
        with Deadline(self.timeout_s) as deadline:
            try:
                request = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with deadline.opener(_NoRedirects()).open(request, timeout=self.timeout_s) as response:
                    response.read(MAX_ANSWER)
                if deadline.expired:  # the cut ends a read as if the answer ended there
                    raise TimeoutError("the answer was cut short by the deadline")
            except urllib.error.HTTPError as exc:
                exc.close()
                redirect = " (a redirect is not followed)" if 300 <= exc.code < 400 else ""
                raise DeliveryError(f"webhook {shown}: HTTP {exc.code} {exc.reason}{redirect}") from exc
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if deadline.expired:  # the deadline cut the connection: whatever it raised, this is why
                    raise DeliveryError(f"webhook {shown}: no complete answer within {self.timeout_s:g} s") from exc
                if isinstance(exc, OSError):  # refused, timed out, DNS
                    raise DeliveryError(f"webhook {shown}: {exc}") from exc
                # a bad port or IPv6 address, an answer not HTTP
                raise DeliveryError(f"webhook {shown}: {type(exc).__name__}: {str(exc).strip()}") from exc


def _target(payload: dict[str, str]) -> tuple[str, str]:
    """The URL to POST to, and how errors name it: a spec's ``url`` as it is; one read from the
    environment variable ``urlEnv`` names (a Slack incoming webhook's URL is its credential) by
    ``$NAME`` alone, in errors, logs and the audit log alike."""
    name = payload.get("url_env")
    if name:
        url = os.environ.get(name, "")
        if not url:
            raise DeliveryError(f"webhook ${name}: environment variable {name} is not set")
        if not _sendable(url):
            raise DeliveryError(
                f"webhook ${name}: {name} does not hold a URL a webhook can be sent to: http(s), a host, a port "
                "from 1 to 65535 if any, no user:password@ (the URL is not shown: it may be a secret)"
            )
        return url, f"${name}"
    url = payload["url"]
    shown = without_credentials(url)
    if shown != url:  # saved before specs refused them: never sent, so never opened
        raise DeliveryError(
            f"webhook {shown}: the URL holds credentials (user:password@, not shown), which are never sent: "
            "take them out; secretEnv signs each delivery"
        )
    return url, shown


def _sendable(url: str) -> bool:
    """Whether a spec would take ``url`` (``HttpUrl``); the error saying why not, which shows it, is dropped."""
    try:
        http_url(url)
    except ValueError:
        return False
    return re.match(r"^https?://\S+$", url) is not None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer, not a new address: following it would send the signed body elsewhere."""

    def redirect_request(self, *args: Any) -> None:
        return None
