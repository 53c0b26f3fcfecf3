"""A spec's webhook and Prometheus URLs may not hold credentials (``user:password@``): urllib never
sends them (it reads them as part of the host name), and every error would show them. The refusal
is at the field, names what to do instead, and never repeats the password."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelcanary.domain.errors import SpecError
from modelcanary.domain.spec import load_spec
from modelcanary.domain.specbase import without_credentials

QUERIES = {"requests": "sum(r)", "errors": "sum(e)"}


def spec_text(*, notify: str | None = None, prometheus: str | None = None) -> str:
    body: dict[str, Any] = {
        "endpoint": "fraud",
        "baseline": "models:/fraud/1",
        "candidate": "models:/fraud/2",
        "traffic": {"steps": [{"weight": 50}]},
        "analysis": {"metrics": [{"kind": "error_rate"}]},
    }
    if notify is not None:
        body["notify"] = [{"url": notify, "secretEnv": "HOOK_SECRET"}]
    if prometheus is not None:
        body["source"] = {"prometheus": {"url": prometheus, "baseline": QUERIES, "candidate": QUERIES}}
    return json.dumps({"apiVersion": "modelcanary/v1", "kind": "Rollout", "spec": body})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://admin:s3cr3t-passw0rd@prometheus:9090", "http://prometheus:9090"),
        ("https://bot:s3cr3t-passw0rd@hooks.example/x", "https://hooks.example/x"),
        ("http://s3cr3t-passw0rd@hooks.example", "http://hooks.example"),  # a token as the user
        ("http://admin:s3cr3t-passw0rd@@hooks.example:8080/a@b", "http://hooks.example:8080/a@b"),
    ],
)
@pytest.mark.parametrize("field", ["notify", "prometheus"])
def test_a_url_holding_credentials_is_refused_at_its_field_without_showing_them(
    url: str, shown: str, field: str
) -> None:
    with pytest.raises(SpecError) as raised:
        load_spec(spec_text(**{field: url}))
    ((where, message),) = raised.value.problems
    assert where.startswith("spec.notify[0].url" if field == "notify" else "spec.source.prometheus.url")
    assert message.startswith(f"Value error, {shown!r} holds credentials (user:password@, not shown here)")
    assert "secretEnv" in message and "proxy" in message
    assert "s3cr3t" not in str(raised.value)


@pytest.mark.parametrize("url", ["http://hooks.example/x?to=ops@example.com", "http://hooks.example/@team"])
def test_an_at_sign_past_the_host_is_no_credential(url: str) -> None:
    document = load_spec(spec_text(notify=url, prometheus=url))
    assert document.spec.notify[0].url == url
    assert document.spec.source is not None and document.spec.source.prometheus.url == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:p@host:9090/x?y=a@b#c@d", "http://host:9090/x?y=a@b#c@d"),
        ("http://host/x@y", "http://host/x@y"),
        ("http://u:p@[fe80::1", "http://[fe80::1"),  # does not parse: shown without them all the same
    ],
)
def test_without_credentials_keeps_the_rest_of_the_url(url: str, shown: str) -> None:
    assert without_credentials(url) == shown


@pytest.mark.parametrize(
    ("target", "field", "why"),
    [
        ({"format": "slack"}, "spec.notify[0].url", "give the webhook's url, or urlEnv"),
        ({"url": "https://hooks.example/x", "urlEnv": "HOOK_URL"}, "spec.notify[0].urlEnv", "(one of them)"),
        ({"urlEnv": "hook-url"}, "spec.notify[0].urlEnv", "String should match pattern"),
    ],
)
def test_a_webhook_takes_its_url_or_the_variable_holding_it_and_not_both(
    target: dict[str, str], field: str, why: str
) -> None:
    document = json.loads(spec_text())
    document["spec"]["notify"] = [target]
    with pytest.raises(SpecError) as raised:
        load_spec(json.dumps(document))
    ((where, problem),) = raised.value.problems
    assert where.startswith(field) and why in problem
    document["spec"]["notify"] = [{"urlEnv": "SLACK_HOOK_URL", "format": "slack"}]
    (notify,) = load_spec(json.dumps(document)).spec.notify
    assert (notify.url, notify.url_env) == (None, "SLACK_HOOK_URL")
