import json

import pytest

from uvrd.messages import BadMessage, failure_result, parse_task, success_result


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
