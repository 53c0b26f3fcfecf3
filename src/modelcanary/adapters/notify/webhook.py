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
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import urllib.error
import urllib.request

from modelcanary.domain.errors import DeliveryError


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """Implements Notifier with the standard library: the controller's tick is synchronous, and one
    POST needs no client pool. Each call is one attempt; the controller spaces and bounds retries."""

    def __init__(self, *, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s

    def deliver(self, payload: dict[str, str]) -> None:
        body = payload["body"].encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "modelcanary-webhook",
            "X-Modelcanary-Key": payload["key"],
        }
        if payload.get("secret_env"):
            secret = os.environ.get(payload["secret_env"])
            if not secret:
                raise DeliveryError(
                    f"webhook {payload['url']}: environment variable {payload['secret_env']} is not set"
                )
            headers["X-Modelcanary-Signature"] = signature(secret, body)
        try:
            request = urllib.request.Request(payload["url"], data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"webhook {payload['url']}: HTTP {exc.code} {exc.reason}") from exc
        except OSError as exc:  # refused, timed out, DNS
            raise DeliveryError(f"webhook {payload['url']}: {exc}") from exc
        except (http.client.HTTPException, ValueError) as exc:  # a bad port or IPv6 address, an answer not HTTP
            raise DeliveryError(f"webhook {payload['url']}: {type(exc).__name__}: {str(exc).strip()}") from exc
