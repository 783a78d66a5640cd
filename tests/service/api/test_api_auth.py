"""Bearer tokens, HTTP Basic for /generate, signed stem links."""

from __future__ import annotations

import base64
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from support import wait_until
from uvrd.storage import links
from uvrd.api.auth import Authenticator, SecretSet
from uvrd.api.errors import ApiError

AUTH = Authenticator(tokens=("first-token", "second-token"), basic_auth=("old:secret", "new:pa:ss"),
                     link_secret="k")


def status_of(call) -> int | None:
    try:
        call()
    except ApiError as e:
        return e.status
    return None


def basic(pair: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


@pytest.mark.parametrize("header", ["Bearer first-token", "Bearer second-token", "bearer first-token",
                                    "Bearer  second-token "])
def test_any_configured_token_is_accepted(header):
    assert status_of(lambda: AUTH.require_bearer({"Authorization": header})) is None


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Bearer first-token2", "Bearer first-toke",
                                    "Basic first-token", "first-token", "Bearer FIRST-TOKEN"])
def test_anything_else_is_401_with_a_challenge(header):
    headers = {} if header is None else {"Authorization": header}
    with pytest.raises(ApiError) as e:
        AUTH.require_bearer(headers)
    assert e.value.status == 401
    assert e.value.headers["WWW-Authenticate"].startswith("Bearer realm=")


def test_without_configured_tokens_every_token_is_refused():
    empty = Authenticator((), (), "")
    assert not empty.tokens
    for header in ("Bearer ", "Bearer x", "Bearer None"):
        assert status_of(lambda: empty.require_bearer({"Authorization": header})) == 401


def test_every_entry_is_compared_even_after_a_match(monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    secrets = SecretSet(("a", "b", "c"))
    assert secrets.contains("a") and not secrets.contains("z")
    assert len(calls) == 6


@pytest.mark.parametrize("pair", ["old:secret", "new:pa:ss"])
def test_basic_pairs_are_accepted(pair):
    assert status_of(lambda: AUTH.require_basic(basic(pair))) is None


@pytest.mark.parametrize("headers", [{}, basic("old:wrong"), basic("old"), basic("new:pa"), basic("old:secret:"),
                                     {"Authorization": "Basic %%%"}, {"Authorization": "Bearer first-token"}])
def test_bad_basic_credentials_are_401(headers):
    with pytest.raises(ApiError) as e:
        AUTH.require_basic(headers)
    assert e.value.status == 401 and e.value.headers["WWW-Authenticate"].startswith("Basic ")


def signed_args(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def stem_status(headers: dict, args: dict, task_uuid: str = "task-1", stem: str = "vocals") -> int | None:
    return status_of(lambda: AUTH.require_stem_access(headers, args, task_uuid, stem))


def test_a_stem_needs_a_token_or_a_valid_signed_link():
    link = signed_args(links.stem_url("http://x", "k", "task-1", "vocals", ttl=60))
    assert stem_status({}, link) is None
    assert stem_status({"Authorization": "Bearer first-token"}, {}) is None
    assert stem_status({}, {}) == 401
    assert stem_status({}, link, task_uuid="task-2") == 403
    assert stem_status({}, link, stem="drums") == 403
    assert stem_status({}, {**link, "sig": "0" * 64}) == 403
    assert stem_status({}, {"sig": link["sig"]}) == 403
    old = signed_args(links.stem_url("http://x", "k", "task-1", "vocals", ttl=60, now=time.time() - 120))
    assert stem_status({}, old) == 403
    # A wrong token is refused as a token, not rescued by a valid link.
    assert stem_status({"Authorization": "Bearer no"}, link) == 401


def test_without_a_link_secret_no_link_is_valid():
    unsigned = Authenticator(("t",), (), "")
    url = links.stem_url("http://x", "", "task-1", "vocals", ttl=60)
    assert "?" not in url
    forged = {"expires": str(int(time.time()) + 60), "sig": "0" * 64}
    assert status_of(lambda: unsigned.require_stem_access({}, forged, "task-1", "vocals")) == 403



@pytest.mark.parametrize("forged", [
    {"expires": "\u00b9\u2077\u2079\u2079\u2079\u2079\u2079\u2079\u2079\u2079", "sig": "0" * 64},  # isdigit(), not int()
    {"expires": "\u0661\u0667\u0669\u0669\u0669\u0669\u0669\u0669\u0669\u0669", "sig": "0" * 64},  # int() reads these
    {"expires": "9" * 5000, "sig": "0" * 64},
    {"expires": "-1", "sig": "0" * 64},
    {"expires": str(int(time.time()) + 60), "sig": "\u00e9" * 64},  # compare_digest refuses non-ASCII str
])
def test_a_forged_link_is_refused_not_an_error(forged):
    assert stem_status({}, forged) == 403


# -- against the live server ---------------------------------------------------

def test_the_server_refuses_missing_and_wrong_tokens(public_api, sample):
    spool = public_api.stack.spool
    before = sorted(spool.glob("[!.]*"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {public_api.TOKEN}"}):
        for response in (public_api.upload(sample, headers=headers),
                         public_api.get("/v1/tasks/some-task", headers=headers)):
            assert response.status_code == 401, response.text
            assert response.headers["WWW-Authenticate"].startswith("Bearer ")
            assert "error" in response.json()
    wait_until(lambda: not public_api.stack.incoming(), 10, "no temporary file left")
    assert sorted(spool.glob("[!.]*")) == before, "a refused upload must leave nothing in the spool"


def test_health_and_the_document_need_no_credentials(public_api):
    for path in ("/healthz", "/openapi.json"):
        assert public_api.get(path).status_code == 200


@pytest.mark.parametrize("forced", [True, False])
def test_compare_digest_alone_decides(monkeypatch, forced):
    """No early ``==`` or length check around it: whatever the constant-time comparison says goes."""
    import hmac

    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: forced)
    expected = None if forced else 401
    assert status_of(lambda: AUTH.require_bearer({"Authorization": "Bearer " + ("first-token" if not forced
                                                                                   else "a-wrong-guess")})) == expected
    assert status_of(lambda: AUTH.require_basic(basic("old:secret" if not forced else "old:guess"))) == expected


# The web page and its files hold no data (tests/api/test_api_page.py): every call it makes needs a token.
PUBLIC_ROUTES = {"/healthz", "/readyz", "/openapi.json", "/", "/web/<name>"}


def test_every_route_but_health_and_the_document_refuses_a_request_without_credentials(public_api):
    """Read from the application's own URL map, so a route added later without a check fails here."""
    from uvrd.api.app import create_app
    from uvrd.api.context import EXTENSION
    from uvrd.config.files import load

    app = create_app(load(public_api.stack.root / "uvrd.toml"))
    try:
        rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"]
    finally:
        app.extensions[EXTENSION].close()
    assert {rule.rule for rule in rules} >= PUBLIC_ROUTES
    checked = []
    for rule in rules:
        if rule.rule in PUBLIC_ROUTES:
            continue
        # A number where the route takes one (a dead letter's partition and offset), else a task's uuid.
        path = rule.build({name: 0 if type(rule._converters.get(name)).__name__ == "IntegerConverter"
                           else "00000000-0000-4000-8000-000000000000" for name in rule.arguments},
                          append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = requests.request(method, public_api.url + path, timeout=30)
            assert response.status_code == 401, f"{method} {rule.rule} answered {response.status_code}"
            assert response.headers["WWW-Authenticate"], f"{method} {rule.rule} has no challenge"
            checked.append(f"{method} {rule.rule}")
    assert {"POST /v1/tasks", "POST /generate"} <= set(checked) and len(checked) >= 4


def test_the_server_answers_a_forged_link_with_403(public_api):
    for expires, sig in (("\u00b9\u2077\u2079\u2079\u2079\u2079\u2079\u2079\u2079\u2079", "0" * 64),
                         (str(int(time.time()) + 60), "\u00e9" * 64)):
        response = public_api.get("/v1/tasks/00000000-0000-4000-8000-000000000000/stems/vocals",
                                  params={"expires": expires, "sig": sig})
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "the download link is invalid or has expired"
