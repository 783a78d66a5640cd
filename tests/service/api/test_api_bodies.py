"""Request bodies the api's parsers refuse, sent to the real server: multipart forms with file parts
other than ``audio`` or with too many fields, JSON nested too deeply or too large, and fuzzed bodies
of both kinds (too many ``audio`` files: tests/api/test_api_batch.py).  Each is a 4xx with a clear
sentence, never a 500, and nothing is left in the spool."""

from __future__ import annotations

import base64
import json
import resource
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import fuzz_examples, wait_until
from uvrd.api.forms import MAX_FORM_FIELDS
from uvrd.api.submit import MAX_JSON_BYTES

BOUNDARY = "uvrd-test-boundary"


def multipart(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """A form body of (name, file name or None for a field, content) parts."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def post_form(server, parts, timeout: float = 30) -> requests.Response:
    return requests.post(server.url + "/v1/tasks", data=multipart(parts), timeout=timeout,
                         headers={**server.AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


def refused(response: requests.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in response.json()["error"], response.json()


def spooled(stack) -> set[str]:
    return {p.name for p in stack.spool.iterdir()}


# -- forms ---------------------------------------------------------------------

@pytest.mark.parametrize("parts", [
    [("cover", "cover.png", b"png"), ("audio", "a.wav", None)],
    [("audio", "a.wav", None), ("cover", "cover.png", b"png")],
    [("audio", "a.wav", None), ("hook_url", "", b"https://93.184.215.14/hook")],  # a field sent as a file
], ids=["file-before-audio", "file-after-audio", "field-as-file"])
def test_a_file_part_other_than_audio_is_400(public_api, sample, parts):
    before = spooled(public_api.stack)
    parts = [(name, filename, sample.read_bytes() if content is None else content) for name, filename, content in parts]
    refused(post_form(public_api, parts), 400, "only the form field 'audio' may be a file")
    wait_until(lambda: spooled(public_api.stack) == before, 10, "the spool to hold nothing new")


def test_the_number_of_fields_is_capped(public_api, sample):
    audio = ("audio", "a.wav", sample.read_bytes())
    extras = [(f"x{i}", None, b"1") for i in range(MAX_FORM_FIELDS + 1)]
    assert post_form(public_api, [audio, *extras[:MAX_FORM_FIELDS]]).status_code == 202, "up to the cap is fine"
    refused(post_form(public_api, [audio, *extras]), 400, f"the form has more than {MAX_FORM_FIELDS} fields")
    refused(post_form(public_api, [*extras, audio]), 400, f"more than {MAX_FORM_FIELDS} fields")
    refused(post_form(public_api, [audio, audio, *extras]), 400, f"more than {MAX_FORM_FIELDS} fields")


def test_a_burst_of_forms_with_a_thousand_file_parts_each_stays_a_400(api_stack, sample):
    """The issue's attack: six forms at once, each an audio file and a thousand more file parts,
    against workers whose open-file limit is a systemd default's quarter (256)."""
    server = api_stack.start(workers=2)
    workers = wait_until(lambda: [e["pid"] for e in server.daemon.events("api worker ready")] or None, 30, "workers")
    for pid in workers:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (256, 256))
    form = [("audio", "a.wav", sample.read_bytes()[:4096])] + [(f"f{i}", f"{i}.bin", b"x") for i in range(1000)]
    most_incoming, done = 0, threading.Event()

    def watch_spool():
        nonlocal most_incoming
        while not done.is_set():
            most_incoming = max(most_incoming, len(api_stack.incoming()))

    watcher = threading.Thread(target=watch_spool)
    watcher.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: post_form(server, form), range(6)))
    finally:
        done.set()
        watcher.join()
    for answer in answers:
        refused(answer, 400, "only the form field 'audio' may be a file, not 'f0'")
    assert most_incoming <= 6, f"{most_incoming} temporary files at once: more than one per form"
    wait_until(lambda: not api_stack.incoming(), 10, "the temporary files to go")
    assert not server.daemon.events("request failed")
    assert "Too many open files" not in server.daemon.log_text()
    assert server.upload(sample).status_code == 202


PART = st.tuples(st.sampled_from(["audio", "hook_url", "priority", "model", "x"]), st.booleans(),
                 st.sampled_from([b"", b"3", b"x" * 100, b"RIFF"]))


@settings(max_examples=fuzz_examples(40), deadline=None, suppress_health_check=list(HealthCheck))
@given(parts=st.lists(PART, max_size=MAX_FORM_FIELDS + 6))
def test_any_form_is_refused_clearly_or_queued(public_api, sample, parts):
    form = [(name, f"{name}.bin" if is_file else None, sample.read_bytes() if name == "audio" and is_file else c)
            for name, is_file, c in parts]
    response = post_form(public_api, form)
    assert response.status_code in (202, 400), response.text
    files = [name for name, is_file, _ in parts if is_file]
    if len(parts) - len(files) > MAX_FORM_FIELDS or any(name != "audio" for name in files) or not files:
        assert response.status_code == 400
    if response.status_code == 202 and len(files) > 1:
        assert [task["state"] for task in response.json()["tasks"]] == ["queued"] * len(files)
    elif response.status_code == 202:
        assert response.json()["state"] == "queued"
    wait_until(lambda: not public_api.stack.incoming(), 10, "the temporary file to go")


# -- JSON ----------------------------------------------------------------------

def post_json_bytes(server, path: str, body: bytes) -> requests.Response:
    auth = {"Authorization": "Basic " + base64.b64encode(":".join(server.BASIC).encode()).decode()}
    headers = {**(auth if path == "/generate" else server.AUTH), "Content-Type": "application/json"}
    return requests.post(server.url + path, data=body, headers=headers, timeout=30)


@pytest.mark.parametrize("path", ["/v1/tasks", "/generate"])
@pytest.mark.parametrize("depth", [1_100, 10_000])
def test_deeply_nested_json_is_400(public_api, path, depth):
    for body in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        refused(post_json_bytes(public_api, path, body), 400, "nested too deeply")
    assert not public_api.daemon.events("request failed")


@pytest.mark.parametrize("path", ["/v1/tasks", "/generate"])
def test_a_json_body_over_the_limit_is_413(public_api, path):
    body = json.dumps({"audio": "https://93.184.215.14/a.wav", "pad": "x" * MAX_JSON_BYTES}).encode()
    refused(post_json_bytes(public_api, path, body), 413, f"the JSON body is over {MAX_JSON_BYTES} bytes")


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4))
BODIES = st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.tuples(st.integers(1, 3000), st.sampled_from([b"[", b'{"a":', b'{"audio":['])).map(lambda t: t[1] * t[0]),
    st.integers(4000, 6000).map(lambda n: b"9" * n),  # an integer too long to convert
)


@settings(max_examples=fuzz_examples(60), deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["/v1/tasks", "/generate"]), body=BODIES)
def test_any_json_body_gets_a_clear_answer(public_api, path, body):
    response = post_json_bytes(public_api, path, body)
    assert response.status_code < 500, response.text
    assert isinstance(response.json()["error"], str)
