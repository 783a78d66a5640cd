"""The uploader's reading of result messages, fuzzed: every message on the results topic is
either delivered (its webhook body built and signed) or dead-lettered with a reason."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from support import fuzz_examples
from uvrd import messages
from uvrd.config import ApiConfig, Config
from uvrd.storage import open_storage
from uvrd.uploader import webhook
from uvrd.uploader.daemon import _parse_result

# The local backend's signed links, as the uploader makes them.
LINK = open_storage(Config(api=ApiConfig(public_url="https://uvrd.example", link_secret="link-secret"))).link

_text = st.one_of(st.text(max_size=30), st.sampled_from(["\ud800", "vocals\udfff", "http://h.example/\udc80"]))
_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _text),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                     max_leaves=12)
_fields = {"success": st.one_of(st.booleans(), _json), "hook_url": st.one_of(st.just("http://h.example/"), _json),
           "stems": st.one_of(st.dictionaries(_text, _text, max_size=3), _json), "error_message": _json,
           "vocals_path": _json}
_result_like = st.one_of(
    st.fixed_dictionaries({"task_uuid": st.one_of(st.from_regex(messages.TASK_UUID_RE, fullmatch=True), _json)},
                          optional=_fields),
    # Mostly valid, so that what is read after the first checks gets hostile values too.
    st.fixed_dictionaries({"task_uuid": st.from_regex(messages.TASK_UUID_RE, fullmatch=True),
                           "success": st.booleans(), "hook_url": st.just("http://h.example/"),
                           "stems": st.dictionaries(_text, _text, max_size=3)},
                          optional={"error_message": _json, "vocals_path": _json}),
)


@settings(max_examples=fuzz_examples(), deadline=None)
@given(value=st.one_of(st.none(), st.binary(max_size=300), _json.map(lambda v: json.dumps(v).encode()),
                       _result_like.map(lambda v: json.dumps(v).encode())))
def test_any_bytes_give_a_deliverable_result_or_a_reason_to_dead_letter(value):
    """The uploader either builds and signs the webhook for a result or dead-letters it: nothing else."""
    try:
        result = _parse_result(value)
    except ValueError as e:
        assert str(e)
        return
    assert messages.TASK_UUID_RE.fullmatch(result["task_uuid"])
    assert result.get("hook_url") is None or isinstance(result["hook_url"], str)
    payload = webhook.body(result, LINK)
    assert webhook.verify("s", webhook.sign("s", payload), payload)


def test_stems_of_another_backend_or_outside_the_prefix_are_dead_lettered(tmp_path):
    import dataclasses

    import pytest

    from uvrd.config import Config, StorageConfig
    from uvrd.storage import open_storage

    s3_result = {"task_uuid": "u1", "success": True, "hook_url": "http://h.example/", "storage": "s3",
                 "stems": {"vocals": "uvrd/stems/u1/vocals.wav"}}
    with pytest.raises(ValueError, match="configured for local storage"):
        _parse_result(json.dumps(s3_result).encode())
    # A failure names no object: it is delivered whatever backend its processor used.
    _parse_result(json.dumps({"task_uuid": "u1", "success": False, "storage": "s3", "error_message": "x"}).encode())
    s3 = open_storage(dataclasses.replace(Config(), storage=StorageConfig(backend="s3", bucket="b", prefix="uvrd")))
    assert _parse_result(json.dumps(s3_result).encode(), s3)["stems"] == s3_result["stems"]
    outside = {**s3_result, "stems": {"vocals": "other/stems/u1/vocals.wav"}}
    with pytest.raises(ValueError, match="under the configured prefix"):
        _parse_result(json.dumps(outside).encode(), s3)
    local = {**s3_result, "storage": "local", "stems": {"vocals": "/o/u1/vocals.wav"}}
    with pytest.raises(ValueError, match="configured for s3 storage"):
        _parse_result(json.dumps(local).encode(), s3)
