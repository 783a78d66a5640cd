"""Named API keys without a broker: the name and scope rules, the secret kept only as a hash, the
token naming its key, the board's view of revocations, and the configured tokens as operator keys."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from uvrd.api.auth import Authenticator
from uvrd.api.errors import ApiError
from uvrd.config import KafkaConfig
from uvrd.keys import record as keys
from uvrd.keys.board import KeyBoard
from uvrd.keys.record import Caller, KeyProblem


@pytest.mark.parametrize("name", ["a", "A-b_c.9", "x" * 64, "studio-2.mixing_team"])
def test_a_name_of_1_to_64_safe_characters_is_taken(name):
    assert keys.check_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "a b", "a/b", "a~b", "é", "a:b", None, 7, ["a"],
                                  "config-token-1", "config-token-x"])
def test_any_other_name_is_refused_with_the_rule(name):
    with pytest.raises(KeyProblem):
        keys.check_name(name)


@pytest.mark.parametrize("scope", ["submit", "operator"])
def test_the_two_scopes(scope):
    assert keys.check_scope(scope) == scope


@pytest.mark.parametrize("scope", ["admin", "", None, "Submit", ["submit"]])
def test_an_unknown_scope_is_refused(scope):
    with pytest.raises(KeyProblem, match="submit, operator"):
        keys.check_scope(scope)


def test_the_secret_is_kept_only_as_a_salted_hash():
    key, token = keys.new_key("team-a", "submit", "2026-12-06T00:00:00.000+00:00")
    name, secret = keys.split_token(token)
    assert name == "team-a"
    stored = key.encode()
    assert secret.encode() not in stored and token.encode() not in stored
    assert set(json.loads(stored)) == {"name", "scope", "created_at", "kdf", "salt", "digest"}
    assert key.matches(secret) and not key.matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    # Two keys never share a salt, so one secret's hash says nothing of another's.
    other, _ = keys.new_key("team-b", "submit", key.created_at)
    assert other.salt != key.salt
    assert keys.parse(stored) == key


def test_a_revoked_record_holds_no_hash_and_matches_nothing():
    key, token = keys.new_key("gone", "operator", "2026-12-06T00:00:00.000+00:00")
    revoked = key.revoke("2026-12-06T01:00:00.000+00:00")
    assert revoked.revoked and not revoked.matches(keys.split_token(token)[1])
    assert "digest" not in json.loads(revoked.encode())
    assert keys.parse(revoked.encode()) == revoked
    assert revoked.public() == {"name": "gone", "scope": "operator", "created_at": key.created_at,
                                "revoked_at": "2026-12-06T01:00:00.000+00:00",
                                "quota": {"max_active": None, "audio_seconds_per_day": None}}


@pytest.mark.parametrize("value", [None, b"", b"not json", b"[]", b'{"name": "a"}',
                                   b'{"name": "a b", "scope": "submit", "created_at": "t", "kdf": "scrypt:16384:8:1", '
                                   b'"salt": "00", "digest": "00"}',
                                   b'{"name": "a", "scope": "root", "created_at": "t", "revoked_at": "t"}',
                                   b'{"name": "a", "scope": "submit", "created_at": "t", "kdf": "md5", '
                                   b'"salt": "00", "digest": "00"}',
                                   b'{"name": "a", "scope": "submit", "created_at": "t", "kdf": "scrypt:16384:8:1", '
                                   b'"salt": "zz", "digest": "00"}'])
def test_a_record_that_is_no_key_is_ignored(value):
    assert keys.parse(value) is None


@pytest.mark.parametrize("token", ["plain-configured-token", "~secret", "name~", "a b~secret", "x" * 65 + "~s"])
def test_a_token_that_names_no_key_is_not_split(token):
    assert keys.split_token(token) is None


def test_a_caller_owns_its_own_tasks_and_an_operator_every_task():
    submit, operator = Caller("a", "submit"), Caller("ops", "operator")
    assert submit.owns("a") and not submit.owns("b") and not submit.owns(None) and not submit.owns(7)
    assert operator.owns("a") and operator.owns("b") and operator.owns(None)


def _record(key: keys.KeyRecord | None, name: str):
    return SimpleNamespace(key=name.encode(), value=key.encode() if key else None)


def _board() -> KeyBoard:
    return KeyBoard(KafkaConfig(bootstrap_servers="127.0.0.1:9"), "keys")  # never started: fed by hand


def test_the_board_knows_a_key_until_its_revocation_is_read():
    board = _board()
    key, token = keys.new_key("a", "submit", "t0")
    board.fold(_record(key, "a"))
    assert board.verify(token) == key
    assert board.verify(token) == key  # the second time from memory, the same answer
    assert board.verify(token[:-2]) is None and board.verify("b~" + token[2:]) is None
    board.fold(_record(key.revoke("t1"), "a"))
    assert board.verify(token) is None
    # A revocation is final: a live record of the same name after it does not bring the key back.
    board.fold(_record(key, "a"))
    assert board.verify(token) is None and board.get("a").revoked


def test_a_tombstone_removes_the_key_and_a_record_under_another_name_is_ignored():
    board = _board()
    key, token = keys.new_key("a", "operator", "t0")
    board.fold(_record(key, "not-a"))
    assert board.get("a") is None and board.verify(token) is None
    board.fold(_record(key, "a"))
    board.fold(_record(None, "a"))
    assert board.get("a") is None and board.verify(token) is None


def test_configured_tokens_are_operator_keys_named_by_their_place_and_named_keys_keep_their_scope():
    board = _board()
    key, token = keys.new_key("team-a", "submit", "t0")
    board.fold(_record(key, "team-a"))
    auth = Authenticator(("first", "second"), (), "", board)
    bearer = lambda t: {"Authorization": f"Bearer {t}"}  # noqa: E731
    assert auth.require_bearer(bearer("first")) == Caller("config-token-1", "operator")
    assert auth.require_operator(bearer("second")) == Caller("config-token-2", "operator")
    assert auth.require_bearer(bearer(token)) == Caller("team-a", "submit")
    with pytest.raises(ApiError) as refused:
        auth.require_operator(bearer(token))
    assert refused.value.status == 403
    board.fold(_record(key.revoke("t1"), "team-a"))
    with pytest.raises(ApiError) as refused:
        auth.require_bearer(bearer(token))
    assert refused.value.status == 401


# -- the key on a task's way: message, result, status, webhook -------------------------------------

def test_a_task_names_its_key_and_a_message_from_before_keys_still_parses():
    from uvrd.messages import BadMessage, parse_task

    assert parse_task(b'{"task_uuid": "u1", "audio_path": "/s/a.wav", "hook_url": null, "key": "team-a"}').key == "team-a"
    assert parse_task(b'{"task_uuid": "u1", "audio_path": "/s/a.wav", "hook_url": null}').key is None
    for bad in (b'"a b"', b"7", b'""', b'"' + b"x" * 65 + b'"'):
        with pytest.raises(BadMessage, match="'key'"):
            parse_task(b'{"task_uuid": "u1", "audio_path": "/s/a.wav", "hook_url": null, "key": ' + bad + b"}")


def test_the_key_goes_into_the_result_the_status_and_the_webhook():
    from uvrd.config import TopicsConfig
    from uvrd.messages import Task
    from uvrd.outcomes import Succeeded
    from uvrd.processor.settlement import settlement
    from uvrd.uploader import webhook

    topics = TopicsConfig()
    record = SimpleNamespace(topic=topics.tasks, partition=0, offset=1, key=b"t-1", value=b"{}")
    settled = settlement(topics, record, Succeeded({"vocals": "v.wav"}, "m.onnx", "t", 1.0),
                         Task("t-1", "/s/a.wav", "http://hook.example/", key="team-a"), "local")
    [result] = [json.loads(r.value) for r in settled.records if r.topic == topics.results]
    [status] = [json.loads(r.value) for r in settled.records if r.topic == topics.status and r.value]
    assert result["key"] == status["key"] == "team-a"
    assert json.loads(webhook.body(result, lambda *a: "link"))["key"] == "team-a"
    old = {k: v for k, v in result.items() if k != "key"}
    assert json.loads(webhook.body(old, lambda *a: "link"))["key"] is None
