"""Auth over the real app: every route but health refuses a missing, unknown or revoked token
(the routes are read from the app's own OpenAPI schema, so a new one cannot slip past), each role
gets exactly its routes, tokens limited to endpoints see and touch only those, and secrets are
shown once and stored only as hashes."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from modelcanary.adapters.store.schema import audit, tokens
from modelcanary.domain.access import Role
from modelcanary.domain.errors import RequestError

from .api_support import Api, spec_for

# the least role each operation needs; every operation of the schema but health must be listed
NEEDS = {
    ("get", "/api/v1/rollouts"): Role.VIEWER,
    ("post", "/api/v1/rollouts"): Role.OPERATOR,
    ("get", "/api/v1/rollouts/{rollout_id}"): Role.VIEWER,
    ("get", "/api/v1/rollouts/{rollout_id}/report"): Role.VIEWER,
    ("get", "/api/v1/rollouts/{rollout_id}/telemetry"): Role.VIEWER,
    ("post", "/api/v1/rollouts/{rollout_id}/pause"): Role.OPERATOR,
    ("post", "/api/v1/rollouts/{rollout_id}/resume"): Role.OPERATOR,
    ("post", "/api/v1/rollouts/{rollout_id}/abort"): Role.OPERATOR,
    ("post", "/api/v1/rollouts/{rollout_id}/promote"): Role.APPROVER,
    ("post", "/api/v1/rollouts/{rollout_id}/approve"): Role.APPROVER,
    ("get", "/api/v1/audit"): Role.VIEWER,
    ("get", "/api/v1/audit/verify"): Role.VIEWER,
    ("post", "/api/v1/tokens"): Role.ADMIN,
    ("get", "/api/v1/tokens"): Role.ADMIN,
    ("delete", "/api/v1/tokens/{token_id}"): Role.ADMIN,
    # the dashboard's (api/dashboard.py)
    ("get", "/api/v1/whoami"): Role.VIEWER,
    ("get", "/api/v1/rollouts/{rollout_id}/report.html"): Role.VIEWER,
}


def _operations(api: Api) -> list[tuple[str, str]]:
    schema = api.call("viewer", "GET", "/api/v1/openapi.json").json()
    return sorted((method, path) for path, item in schema["paths"].items() for method in item)


def test_the_schema_has_exactly_the_contracts_routes_each_declaring_bearer_auth(api: Api) -> None:
    operations = _operations(api)
    assert set(operations) == {*NEEDS, ("get", "/api/v1/health")}
    schema = api.call("viewer", "GET", "/api/v1/openapi.json").json()
    for method, path in NEEDS:
        assert schema["paths"][path][method]["security"] == [{"HTTPBearer": []}], (method, path)


def test_every_route_but_health_is_401_without_a_valid_token(api: Api) -> None:
    revoked = api.token("gone", Role.ADMIN)
    api.store.revoke_token("gone", actor="test")
    rollout_id = api.start()
    refused = []
    for method, path in _operations(api):
        if path == "/api/v1/health":
            continue
        url = path.replace("{rollout_id}", rollout_id).replace("{token_id}", "gone")
        for header in (
            {},
            {"Authorization": "Bearer mc_not-a-token"},
            {"Authorization": f"Bearer {revoked}"},
            {"Authorization": f"Basic {api.secrets['admin']}"},
        ):
            # a malformed body must not get a 422 past the missing token
            response = api.client.request(method, url, headers=header, content=b"{not json")
            problem = response.json()
            if (
                response.status_code != 401
                or response.headers["content-type"] != "application/problem+json"
                or response.headers["www-authenticate"] != 'Bearer realm="modelcanary"'
                or problem["status"] != 401
            ):
                refused.append((method, url, header, response.status_code, problem))
    assert refused == []
    assert api.client.get("/api/v1/health").json() == {"ok": True}
    assert api.client.get("/api/v1/no-such-route").status_code == 401  # unknown paths reveal nothing either
    assert api.store.list_rollouts()[0].phase.value == "pending"  # nothing was done


def test_each_role_may_do_exactly_what_its_rank_allows(api: Api) -> None:
    rollout_id = api.start()
    wrong = []
    for (method, path), needed in NEEDS.items():
        url = path.replace("{rollout_id}", rollout_id).replace("{token_id}", "no-such-token")
        bodies = {"/api/v1/tokens": {"name": "x", "role": "sideways"}, "/api/v1/rollouts": {"spec": ": bad"}}
        body = bodies.get(path, {"reason": "a test"})
        for role in Role:
            response = api.call(role.value, method, url, json=body if method == "post" else None)
            allowed = role.allows(needed)
            if allowed == (response.status_code == 403) or response.status_code == 401:
                wrong.append((method, url, role.value, response.status_code, response.json()))
            if not allowed:
                assert f"needs {needed.value} or above" in response.json()["detail"]
    assert wrong == []


def test_a_token_limited_to_endpoints_sees_and_acts_only_on_them(api: Api) -> None:
    fraud = api.start("admin")
    churn = api.start("admin", spec_for("churn"))
    api.token("fraud-team", Role.APPROVER, endpoints=["fraud"])
    team = "fraud-team"

    assert [r["id"] for r in api.call(team, "GET", "/api/v1/rollouts").json()] == [fraud]
    assert {r["id"] for r in api.call("viewer", "GET", "/api/v1/rollouts").json()} == {fraud, churn}
    for suffix in ("", "/report", "/telemetry"):
        assert api.call(team, "GET", f"/api/v1/rollouts/{fraud}{suffix}").status_code == 200
        hidden = api.call(team, "GET", f"/api/v1/rollouts/{churn}{suffix}")
        assert (hidden.status_code, hidden.json()["detail"]) == (404, f"no rollout {churn!r}")
    assert api.call(team, "GET", "/api/v1/audit", params={"rollout": churn}).status_code == 404
    assert {e["rollout_id"] for e in api.call(team, "GET", "/api/v1/audit").json()} == {fraud}

    refused = api.call(team, "POST", f"/api/v1/rollouts/{churn}/pause")
    assert (refused.status_code, refused.json()["detail"]) == (404, f"no rollout {churn!r}")
    assert api.call(team, "POST", f"/api/v1/rollouts/{fraud}/pause").json()["paused"] is True
    api.call("admin", "POST", f"/api/v1/rollouts/{fraud}/abort")
    assert api.call(team, "POST", "/api/v1/rollouts", json={"spec": spec_for("churn-2")}).status_code == 403
    assert api.call(team, "POST", "/api/v1/rollouts", json={"spec": spec_for("fraud")}).status_code == 201
    assert not api.store.get(churn)[0].paused


def test_steering_a_rollout_the_token_cannot_see_is_404_and_one_it_sees_without_the_role_403(api: Api) -> None:
    """Steering answers as reading does: a rollout on another endpoint does not exist for the token,
    whatever its role; only one it sees but may not steer is 403 (and says which role it needs)."""
    churn = api.start("admin", spec_for("churn"))
    api.token("fraud-approver", Role.APPROVER, endpoints=["fraud"])
    api.token("fraud-viewer", Role.VIEWER, endpoints=["fraud"])
    api.token("churn-viewer", Role.VIEWER, endpoints=["churn"])
    for command in ("pause", "resume", "abort", "promote", "approve"):
        for team in ("fraud-approver", "fraud-viewer"):
            hidden = api.call(team, "POST", f"/api/v1/rollouts/{churn}/{command}")
            assert (hidden.status_code, hidden.json()["detail"]) == (404, f"no rollout {churn!r}"), (team, command)
        seen = api.call("churn-viewer", "POST", f"/api/v1/rollouts/{churn}/{command}")
        assert seen.status_code == 403 and "this needs" in seen.json()["detail"], command
    assert api.call("viewer", "POST", "/api/v1/rollouts/no-such-rollout/pause").status_code == 404
    state = api.store.get(churn)[0]
    assert (state.phase.value, state.paused) == ("pending", False)


def test_an_admin_limited_to_endpoints_cannot_make_a_wider_token(api: Api) -> None:
    api.token("fraud-admin", Role.ADMIN, endpoints=["fraud"])
    wider = api.call("fraud-admin", "POST", "/api/v1/tokens", json={"name": "all", "role": "viewer"})
    assert wider.status_code == 403
    narrow = {"name": "fraud-viewer", "role": "viewer", "endpoints": ["fraud"]}
    assert api.call("fraud-admin", "POST", "/api/v1/tokens", json=narrow).status_code == 201
    listed = [t["name"] for t in api.call("fraud-admin", "GET", "/api/v1/tokens").json()]
    assert listed == ["fraud-admin", "fraud-viewer"]
    assert api.call("fraud-admin", "DELETE", f"/api/v1/tokens/{api.store.list_tokens()[0].id}").status_code == 403


def test_a_token_is_shown_once_stored_hashed_and_revoking_it_stops_it_at_once(api: Api) -> None:
    created = api.call("admin", "POST", "/api/v1/tokens", json={"name": "ci", "role": "operator"})
    assert created.status_code == 201
    body = created.json()
    secret = body.pop("token")
    assert secret.startswith("mc_")
    assert body == {"id": body["id"], "name": "ci", "role": "operator", "endpoints": None}
    headers = {"Authorization": f"Bearer {secret}"}
    assert api.client.get("/api/v1/rollouts", headers=headers).status_code == 200

    listed = api.call("admin", "GET", "/api/v1/tokens")
    assert secret not in listed.text and "token" not in listed.json()[-1]
    with api.store.engine.connect() as conn:
        stored = conn.execute(sa.select(tokens)).all()
    audit = api.call("admin", "GET", "/api/v1/audit")
    assert audit.status_code == 200
    dump = "\n".join(str(row) for row in stored) + audit.text
    assert secret not in dump and secret[3:] not in dump

    again = api.call("admin", "POST", "/api/v1/tokens", json={"name": "ci", "role": "viewer"})
    assert again.status_code == 409
    revoked = api.call("admin", "DELETE", f"/api/v1/tokens/{body['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert api.client.get("/api/v1/rollouts", headers=headers).status_code == 401
    assert api.call("admin", "DELETE", f"/api/v1/tokens/{body['id']}").status_code == 409
    assert api.call("admin", "DELETE", "/api/v1/tokens/nobody").status_code == 404
    actions = [(e["actor"], e["action"], e["detail"]["name"]) for e in api.store.audit_events()[-2:]]
    assert actions == [("token:admin", "token.create", "ci"), ("token:admin", "token.revoke", "ci")]


def test_a_bad_token_request_names_the_field(api: Api) -> None:
    for body, field in [
        ({"name": "ci", "role": "root"}, "body.role"),
        ({"role": "viewer"}, "body.name"),
        ({"name": "has space", "role": "viewer"}, "body.name"),
        ({"name": "ci", "role": "viewer", "endpoints": []}, "body.endpoints"),
        ({"name": "ci", "role": "viewer", "endpoints": ["fraud", ""]}, "body.endpoints.1"),
        # not an endpoint's name: a token limited to it would see nothing, silently (audit)
        ({"name": "ci", "role": "viewer", "endpoints": ["fraud", "fr aud\u0000"]}, "body.endpoints.1"),
        ({"name": "ci", "role": "viewer", "endpoint": ["fraud"]}, "body.endpoint"),  # misspelt: not "every endpoint"
    ]:
        response = api.call("admin", "POST", "/api/v1/tokens", json=body)
        assert (response.status_code, response.json()["field"]) == (422, field), response.json()
    with pytest.raises(RequestError) as refused:  # the CLI's way in: the store checks as the API does
        api.store.create_token(name="ci", role=Role.VIEWER, endpoints=["fraud", "fraud/v2"], actor="test")
    assert refused.value.field == "endpoints[1]" and "letters, digits" in str(refused.value)
    assert (
        "'viewer', 'operator', 'approver' or 'admin'"
        in api.call("admin", "POST", "/api/v1/tokens", json={"name": "ci", "role": "root"}).json()["detail"]
    )


def test_the_schema_needs_a_token_and_there_is_no_docs_page(api: Api) -> None:
    """FastAPI's Swagger and ReDoc pages load unpinned script from a CDN on this origin: there are
    none; the schema itself, like every path but health, needs a token."""
    path = "/api/v1/openapi.json"
    refused = api.call(None, "GET", path)
    assert refused.status_code == 401 and refused.headers["content-type"].startswith("application/problem+json")
    assert api.client.get(path, headers={"Authorization": "Bearer mc_nope"}).status_code == 401
    assert api.call("viewer", "GET", path).status_code == 200
    for page in ("/api/v1/docs", "/api/v1/redoc", "/docs", "/redoc"):
        answer = api.call("viewer", "GET", page)
        assert answer.status_code == 404 and "cdn.jsdelivr" not in answer.text, page


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_a_cookie_is_never_a_token(api: Api, method: str) -> None:
    """A browser sends a cookie by itself, to every port of the host, and keeps it past the tab: the
    token is taken from the Authorization header only, for a read as for a change."""
    api.client.cookies.set("mc_token", api.secrets["admin"])
    try:
        for path in ("/api/v1/rollouts", "/api/v1/tokens", "/api/v1/audit", "/api/v1/whoami", "/api/v1/openapi.json"):
            body = {"name": "sneaky", "role": "admin"} if method == "POST" else None
            answer = api.call(None, method, path, json=body)
            assert answer.status_code == 401, (method, path)
            assert answer.headers["www-authenticate"] == 'Bearer realm="modelcanary"'
    finally:
        api.client.cookies.clear()
    assert [token.name for token in api.store.list_tokens() if token.name == "sneaky"] == []


@pytest.mark.parametrize("path", ["/ui/", "/ui/app.js", "/ui/style.css"])
def test_the_dashboards_files_need_no_token_and_hold_no_data(api: Api, path: str) -> None:
    """The shell holds no data: a browser loads it without a token (no cookie needed), and its form
    asks for one; everything shown comes from API calls that send it as a bearer header."""
    rollout_id = api.start()
    page = api.call(None, "GET", path)
    assert page.status_code == 200
    assert rollout_id not in page.text and "fraud-v2" not in page.text
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "set-cookie" not in page.headers


def test_a_browser_without_a_token_gets_the_sign_in_form(api: Api) -> None:
    page = api.client.get("/ui/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="login"' in page.text and 'id="token"' in page.text
    assert "never in a cookie" in page.text  # what the form says about where the token is kept
    # a page under the API still needs the token, and answers without one as any route does
    report = api.client.get(f"/api/v1/rollouts/{api.start()}/report.html", headers={"Accept": "text/html"})
    assert report.status_code == 401 and report.headers["content-type"] == "application/problem+json"


def test_every_answer_under_the_api_is_not_stored_and_not_sniffed(api: Api) -> None:
    """Responses under /api/v1 (JSON, the HTML report, problems, the 401) carry Cache-Control:
    no-store and X-Content-Type-Options: nosniff."""
    rollout_id = api.start()
    answers = [
        api.call("viewer", "GET", "/api/v1/rollouts"),
        api.call("viewer", "GET", f"/api/v1/rollouts/{rollout_id}/report"),
        api.call("viewer", "GET", f"/api/v1/rollouts/{rollout_id}/report.html"),
        api.call("viewer", "GET", "/api/v1/audit"),
        api.call("viewer", "GET", "/api/v1/audit/verify"),
        api.call("viewer", "GET", "/api/v1/whoami"),
        api.call("admin", "GET", "/api/v1/tokens"),
        api.call("viewer", "GET", "/api/v1/openapi.json"),
        api.call("viewer", "GET", "/api/v1/rollouts/nope"),  # a problem
        api.call(None, "GET", "/api/v1/rollouts"),  # the 401
        api.call("operator", "POST", f"/api/v1/rollouts/{rollout_id}/pause"),
        api.client.get("/api/v1/health"),
    ]
    for answer in answers:
        assert answer.headers.get("cache-control") == "no-store", answer.url
        assert answer.headers.get("x-content-type-options") == "nosniff", answer.url


def test_a_token_limited_to_endpoints_learns_only_whether_the_chain_holds(api: Api) -> None:
    """The chain's length and its broken link's id and position are the whole log's, mostly other
    endpoints' events: a limited token gets ok, and nothing else."""
    api.start("admin", spec_for("churn"))
    api.token("fraud-team", Role.VIEWER, endpoints=["fraud"])
    assert api.call("fraud-team", "GET", "/api/v1/audit/verify").json() == {"ok": True, "count": None, "broken": None}
    whole = api.call("viewer", "GET", "/api/v1/audit/verify").json()
    assert whole["ok"] is True and whole["count"] == len(api.store.audit_events())
    with api.store.engine.begin() as conn:
        conn.execute(sa.update(audit).where(audit.c.id == api.store.audit_events()[1]["id"]).values(actor="mallory"))
    assert api.call("fraud-team", "GET", "/api/v1/audit/verify").json() == {"ok": False, "count": None, "broken": None}
    broken = api.call("viewer", "GET", "/api/v1/audit/verify").json()["broken"]
    assert broken["position"] == 1 and "hash does not match" in broken["reason"]


def test_a_token_name_may_not_be_another_tokens_id(api: Api) -> None:
    root = api.store.list_tokens()[0]
    api.token("fraud-admin", Role.ADMIN, endpoints=["fraud"])
    taken = api.call(
        "fraud-admin", "POST", "/api/v1/tokens", json={"name": root.id, "role": "viewer", "endpoints": ["fraud"]}
    )
    assert taken.status_code == 409 and "another token's id" in taken.json()["detail"]
    assert api.store.list_tokens()[0].revoked_at is None


def test_a_malformed_body_is_400_at_body_and_a_broken_store_is_503_without_its_details(api: Api) -> None:
    headers = {**api.headers("operator"), "content-type": "application/json"}
    response = api.client.post("/api/v1/rollouts", content=b'{"spec": ', headers=headers)
    assert (response.status_code, response.json()["field"]) == (400, "body"), response.text
    assert "not valid JSON" in response.json()["detail"]
    not_text = api.client.post("/api/v1/rollouts", content=b"\xff\xfe\x00", headers=headers)
    assert (not_text.status_code, not_text.json()["field"]) == (400, "body"), not_text.text
    assert "not JSON text" in not_text.json()["detail"]
    as_form = {**headers, "content-type": "application/x-www-form-urlencoded"}  # what curl -d sends
    form = api.client.post("/api/v1/rollouts", content=b'{"spec": "x"}', headers=as_form)
    assert (form.status_code, form.json()["field"]) == (422, "body"), form.text
    assert "Content-Type: application/json" in form.json()["detail"]
    with api.store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE tokens")
    for who in ("admin", None):  # a caller with a token, and one without a valid one
        headers = {"Authorization": f"Bearer {api.secrets[who] if who else 'mc_guess'}"}
        broken = api.client.get("/api/v1/rollouts", headers=headers)
        assert (
            broken.status_code == 503 and broken.json()["detail"] == "the store is unavailable; the server logged why"
        )
        assert "tokens" not in broken.text and "sqlite" not in broken.text
