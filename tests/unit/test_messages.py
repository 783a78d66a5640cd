import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import fuzz_examples
from uvrd import messages
from uvrd.messages import TASK_UUID_RE, BadMessage, encode, failure_result, parse_task, success_result


def test_old_producers_task_parses():
    t = parse_task(b'{"task_uuid": "abc-1", "audio_path": "/s/a.wav", "hook_url": "https://h.example/x", "priority": 3}')
    assert (t.task_uuid, t.audio_path, t.hook_url, t.model, t.output_format) == ("abc-1", "/s/a.wav", "https://h.example/x", None, None)


def test_result_shapes_match_the_old_consumers():
    t = parse_task(b'{"task_uuid": "u1", "audio_path": "/s/a.wav", "hook_url": "http://h.example/"}')
    ok = success_result(t, {"vocals": "/o/u1/vocals.flac", "instrumental": "/o/u1/instrumental.flac"}, "m.onnx")
    assert {"task_uuid", "success", "vocals_path", "instrumental_path", "hook_url", "stems"} <= set(ok)
    assert ok["success"] is True and ok["vocals_path"] == "/o/u1/vocals.flac"
    bad = failure_result("u1", "http://h.example/", "boom")
    assert {"task_uuid", "success", "error_message", "hook_url"} <= set(bad) and bad["success"] is False
    json.dumps(ok), json.dumps(bad)


def test_salvages_uuid_from_the_key_when_the_body_is_garbage():
    with pytest.raises(BadMessage) as e:
        parse_task(b"garbage", key=b"task-7")
    assert e.value.task_uuid == "task-7" and "not JSON" in str(e.value)


def test_salvages_hook_url_for_the_failure_result():
    with pytest.raises(BadMessage) as e:
        parse_task(b'{"task_uuid": "u2", "hook_url": "http://h.example/", "audio_path": null}')
    assert (e.value.task_uuid, e.value.hook_url) == ("u2", "http://h.example/")


@pytest.mark.parametrize("value, words", [
    (None, "tombstone"),
    (b"x" * (1 << 20 + 1), "over the"),
    (b'"just a string"', "must be a JSON object, not a string"),
    (b'{"task_uuid": "a/b", "audio_path": "/x", "hook_url": "http://h/"}', "task_uuid"),
    (b'{"task_uuid": "a", "audio_path": "", "hook_url": "http://h/"}', "audio_path"),
    (b'{"task_uuid": "a", "audio_path": "/x\\u0000", "hook_url": "http://h/"}', "audio_path"),
    (b'{"task_uuid": "a", "audio_path": "/x", "hook_url": "gopher://h/"}', "hook_url"),
    (b'{"task_uuid": "a", "audio_path": "/x", "hook_url": "http://h:99999/"}', "hook_url"),
    (b'{"task_uuid": "a", "audio_path": "/x", "hook_url": "http://h/", "model": 5}', "'model' must be a non-empty string"),
])
def test_every_defect_is_named(value, words):
    with pytest.raises(BadMessage) as e:
        parse_task(value)
    assert words in str(e.value)


# -- fuzz: whatever arrives on a task topic --------------------------------------------------
# Lone surrogates are valid JSON escapes that no file name, URL or result message can carry.
_text = st.one_of(st.text(max_size=40), st.sampled_from(["\ud800", "/spool/a\udfff.wav", "http://h.example/\udc80"]))
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), _text)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                     max_leaves=12)
_uuid = st.one_of(st.from_regex(TASK_UUID_RE, fullmatch=True), _json)
_url = st.one_of(st.sampled_from(["http://h.example/cb", "https://h.example:8443/x?y=1", "file:///etc/passwd",
                                  "gopher://h/", "http://h:99999/", "http://[::1/", "http:///nohost",
                                  "javascript:alert(1)", "http://u:p@h/", "http://h.example/" + "a" * 3000]), _json)
_fields = {"task_uuid": _uuid, "audio_path": _json, "hook_url": _url, "model": _json, "output_format": _json,
           "submitted_at": _json, "priority": _json}
_task_like = st.one_of(
    st.fixed_dictionaries({}, optional=_fields),
    # Mostly valid, so that the checks behind the first ones are reached too.
    st.fixed_dictionaries({"task_uuid": st.from_regex(TASK_UUID_RE, fullmatch=True), "audio_path": _text},
                          optional={k: v for k, v in _fields.items() if k not in ("task_uuid", "audio_path")}),
)
_values = st.one_of(
    st.none(),
    st.binary(max_size=300),
    _json.map(lambda v: json.dumps(v).encode()),
    _task_like.map(lambda v: json.dumps(v).encode()),
    _task_like.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
)
_keys = st.one_of(st.none(), st.binary(max_size=40), st.from_regex(TASK_UUID_RE, fullmatch=True).map(str.encode))


@settings(max_examples=fuzz_examples(), deadline=None)
@given(value=_values, key=_keys)
def test_any_bytes_give_a_task_or_a_bad_message_whose_failure_can_be_sent(value, key):
    """A worker turns every task message into a result it can publish: nothing else may escape."""
    try:
        task = parse_task(value, key)
    except BadMessage as e:
        assert str(e)
        assert e.task_uuid is None or TASK_UUID_RE.fullmatch(e.task_uuid)
        assert e.hook_url is None or e.hook_url.startswith(("http://", "https://"))
        encode(failure_result(e.task_uuid, e.hook_url, str(e)))
        return
    assert TASK_UUID_RE.fullmatch(task.task_uuid)
    assert task.audio_path and "\0" not in task.audio_path
    assert task.hook_url is None or task.hook_url.startswith(("http://", "https://"))
    encode(success_result(task, {"vocals": task.audio_path}, task.model or "m.onnx",
                          submitted_at=task.submitted_at))


def test_an_s3_task_names_its_input_by_key_and_each_message_says_its_backend():
    t = parse_task(b'{"task_uuid": "u3", "storage": "s3", "audio_key": "uvrd/inputs/u3.wav", "hook_url": null}')
    assert (t.storage, t.audio_key, t.audio_path, t.audio_ref) == ("s3", "uvrd/inputs/u3.wav", None, "uvrd/inputs/u3.wav")
    assert parse_task(b'{"task_uuid": "u4", "audio_path": "/s/a.wav", "hook_url": null}').storage == "local"
    ok = success_result(t, {"vocals": "uvrd/stems/u3/vocals.wav"}, "m.onnx", storage="s3")
    assert ok["storage"] == "s3" and ok["vocals_key"] == "uvrd/stems/u3/vocals.wav" and "vocals_path" not in ok


@pytest.mark.parametrize("value, words", [
    (b'{"task_uuid": "a", "storage": "ftp", "audio_path": "/x"}', "'storage' must be one of local, s3"),
    (b'{"task_uuid": "a", "storage": "s3", "audio_path": "/x"}', "missing the field 'audio_key'"),
    (b'{"task_uuid": "a", "storage": "s3", "audio_key": "p/../../x"}', "'..'"),
    (b'{"task_uuid": "a", "storage": "s3", "audio_key": "/p/x"}', "must not start with '/'"),
])
def test_a_bad_s3_reference_is_named(value, words):
    with pytest.raises(BadMessage) as e:
        parse_task(value)
    assert words in str(e.value) and e.value.task_uuid == "a"


def test_a_replay_number_travels_with_the_task_and_names_its_delivery():
    task = messages.parse_task(json.dumps({"task_uuid": "t-1", "audio_path": "/a.wav", "replay": 2}).encode())
    assert task.replay == 2
    assert messages.delivery_id("t-1", task.replay) == "t-1/replay-2" and messages.delivery_id("t-1") == "t-1"
    assert messages.parse_task(json.dumps({"task_uuid": "t-1", "audio_path": "/a.wav"}).encode()).replay == 0
    for bad in (-1, True, 1.5, "1", messages.MAX_REPLAYS + 1):
        with pytest.raises(messages.BadMessage, match="'replay' must be a whole number"):
            messages.parse_task(json.dumps({"task_uuid": "t-1", "audio_path": "/a.wav", "replay": bad}).encode())


# The processor checks a task's options and ensemble again, whoever wrote the message: a number no
# bound can hold fails the task with a sentence, like any other bad field.
@pytest.mark.parametrize("field, words", [
    ('"options": {"mdx_batch_size": NaN}', "option mdx_batch_size must be an integer"),
    ('"options": {"vr_aggression": -Infinity}', "option vr_aggression must be an integer"),
    ('"options": {"mdx_overlap": 1e309}', "option mdx_overlap must be from 0.001 to 0.999"),
    ('"options": {"sample_rate": ' + "9" * 401 + "}", "option sample_rate must be from 8000 to 192000"),
    ('"ensemble": {"models": ["a.onnx", "b.ckpt"], "weights": [1, ' + "9" * 401 + "]}",
     "'ensemble.weights' must be"),
])
def test_a_task_with_a_number_no_bound_can_hold_is_a_bad_message_naming_it(field, words):
    value = f'{{"task_uuid": "a", "audio_path": "/x", "hook_url": "http://h.example/", {field}}}'.encode()
    with pytest.raises(BadMessage) as e:
        parse_task(value)
    assert words in str(e.value) and (e.value.task_uuid, e.value.hook_url) == ("a", "http://h.example/")


@pytest.mark.parametrize("value,seconds", [(212.5, 212.5), (0, 0.0), (None, None), ("212", None), (-1, None),
                                           (True, None), (float("inf"), None)])
def test_a_tasks_audio_seconds_are_read_when_they_are_a_length_and_ignored_otherwise(value, seconds):
    """The api's measure of the input's length orders the processor's turns only: absent (a message
    from before it) or nonsense, the task still runs, its length unknown."""
    body = {"task_uuid": "t-1", "audio_path": "/a.wav", **({"audio_seconds": value} if value is not None else {})}
    assert parse_task(json.dumps(body).encode()).audio_seconds == seconds


def test_a_value_nested_too_deeply_is_no_json_object():
    """What the boards and the read-ahead window read: skipped, never raised (a RecursionError)."""
    assert messages.json_object(b"[" * 100000 + b"]" * 100000) is None
    assert messages.json_object(b'{"a": ' * 100000 + b"1" + b"}" * 100000) is None
