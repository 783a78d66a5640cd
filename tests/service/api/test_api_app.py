"""``uvrd api`` against a real broker, as a subprocess, seen from outside:
HTTP answers, the task and status topics, and the files in the spool."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from support import wait_until
from uvrd.storage import links
from uvrd.config import DEFAULT_PRIORITY
from devtools import tinymodel


def accepted(response: requests.Response) -> str:
    assert response.status_code == 202, response.text
    return response.json()["task_uuid"]


def refused(response: requests.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    message = response.json()["error"]
    for word in words:
        assert word in message, message
    return message


# -- submission ---------------------------------------------------------------

def test_upload_is_queued_on_its_priority_topic_under_a_server_chosen_name(public_api, kafka, sample):
    stack = public_api.stack
    response = public_api.post("/v1/tasks", headers=public_api.AUTH,
                               files={"audio": ("../../escape.wav", sample.read_bytes())},
                               data={"hook_url": public_api.PUBLIC_HOOK, "priority": "5",
                                     "model": "Other.onnx", "output_format": "flac"})
    task_uuid = accepted(response)
    body = response.json()
    assert body == {"task_uuid": task_uuid, "state": "queued", "status_url": f"{public_api.url}/v1/tasks/{task_uuid}"}
    assert response.headers["Location"] == body["status_url"]

    [task] = stack.records(kafka, stack.topics.task_topic(5), task_uuid)
    assert task["audio_path"] == str(stack.spool / f"{task_uuid}.wav")
    assert task["hook_url"] == public_api.PUBLIC_HOOK and task["priority"] == 5
    assert task["model"] == "Other.onnx" and task["output_format"] == "flac" and task["submitted_at"]
    assert stack.records(kafka, stack.topics.task_topic(DEFAULT_PRIORITY), task_uuid) == []
    with open(task["audio_path"], "rb") as f:
        assert f.read() == sample.read_bytes()
    assert not (stack.root / "escape.wav").exists() and not (stack.spool.parent.parent / "escape.wav").exists()
    wait_until(lambda: not stack.incoming(), 10, "the upload's temporary file to go")

    statuses = wait_until(lambda: stack.records(kafka, stack.topics.status, task_uuid), 10, "a queued status")
    assert statuses[0]["state"] == "queued" and statuses[0]["priority"] == 5
    assert statuses[0]["model"] == "Other.onnx" and statuses[0]["submitted_at"] == task["submitted_at"]


def test_without_a_priority_the_task_takes_the_default_topic(public_api, kafka, sample):
    stack = public_api.stack
    task_uuid = accepted(public_api.upload(sample))
    [task] = stack.records(kafka, stack.topics.tasks, task_uuid)
    assert stack.topics.task_topic(DEFAULT_PRIORITY) == stack.topics.tasks
    assert task["priority"] == DEFAULT_PRIORITY
    assert "model" not in task and "output_format" not in task


def test_without_a_hook_url_the_task_is_queued_for_its_status_alone(public_api, kafka, sample):
    stack = public_api.stack
    response = public_api.post("/v1/tasks", headers=public_api.AUTH, files={"audio": ("a.wav", sample.read_bytes())})
    [task] = stack.records(kafka, stack.topics.tasks, accepted(response))
    assert task["hook_url"] is None


def test_an_audio_url_is_fetched_into_the_spool(open_api, origin, kafka, sample):
    stack = open_api.stack
    url = origin.serve(sample.read_bytes())
    task_uuid = accepted(open_api.submit_url(url, hook_url="http://127.0.0.1:9/hook", priority=4))
    [task] = stack.records(kafka, stack.topics.task_topic(4), task_uuid)
    assert task["audio_path"] == str(stack.spool / f"{task_uuid}.wav")
    with open(task["audio_path"], "rb") as f:
        assert f.read() == sample.read_bytes()
    # The worker that queued the task knows its state at once, before the status topic echoes it.
    status = open_api.get(f"/v1/tasks/{task_uuid}", headers=open_api.AUTH)
    assert status.status_code == 200, status.text
    assert status.json()["state"] == "queued" and status.json()["priority"] == 4


def test_old_generate_endpoint_takes_basic_auth(open_api, origin, kafka, sample):
    stack = open_api.stack
    body = {"audio": origin.serve(sample.read_bytes()), "hook_url": "http://127.0.0.1:9/hook"}
    task_uuid = accepted(open_api.post("/generate", json=body, auth=open_api.BASIC))
    [task] = stack.records(kafka, stack.topics.tasks, task_uuid)
    assert task["priority"] == DEFAULT_PRIORITY and os.path.isfile(task["audio_path"])

    for kwargs in ({}, {"auth": ("old", "wrong")}, {"headers": open_api.AUTH}):
        response = open_api.post("/generate", json=body, **kwargs)
        refused(response, 401, "Basic")
        assert response.headers["WWW-Authenticate"].startswith("Basic ")


# -- refusals ------------------------------------------------------------------

def test_an_upload_over_the_limit_is_413(public_api, oversize):
    spool = public_api.stack.spool
    before = sorted(spool.glob("[!.]*"))
    refused(public_api.upload(oversize), 413, str(public_api.MAX_UPLOAD))
    wait_until(lambda: not public_api.stack.incoming(), 10, "no temporary file left")
    assert sorted(spool.glob("[!.]*")) == before


def test_an_audio_url_over_the_limit_is_413(open_api, origin, oversize):
    url = origin.serve(oversize.read_bytes())
    refused(open_api.submit_url(url, hook_url="http://127.0.0.1/"), 413, str(open_api.MAX_UPLOAD))
    wait_until(lambda: not open_api.stack.incoming(), 10, "the fetch's temporary file to go")


def test_content_that_is_not_audio_is_415(public_api, open_api, origin):
    refused(public_api.upload(b"%PDF-1.7 this is a document, not a song"), 415, "WAV")
    url = origin.serve(b"<html>a web page</html>")
    refused(open_api.submit_url(url, hook_url="http://127.0.0.1/"), 415, "not in a recognised format")
    wait_until(lambda: not public_api.stack.incoming() and not open_api.stack.incoming(), 10,
               "no temporary file left")


def test_a_hook_url_to_a_private_address_is_400(public_api, sample):
    message = refused(public_api.upload(sample, hook_url="http://127.0.0.1/"), 400, "hook_url", "127.0.0.1")
    assert "not a public address" in message
    wait_until(lambda: not public_api.stack.incoming(), 10, "the refused upload's temporary file to go")


def test_an_audio_url_to_a_private_address_is_400_without_a_fetch(public_api, origin):
    url = origin.serve(b"RIFF....WAVE")
    response = public_api.submit_url(url)
    refused(response, 400, "audio URL", "not a public address")
    assert url.removeprefix(origin.url) not in origin.hits


def test_a_failing_audio_url_is_502(open_api, origin):
    missing = f"{origin.url}/files/{uuid.uuid4()}.wav"
    refused(open_api.submit_url(missing, hook_url="http://127.0.0.1/"), 502, "HTTP 404")


@pytest.mark.parametrize("priority", ["0", "6", "high", "2.5", "-1"])
def test_a_bad_priority_in_a_form_is_400(public_api, sample, priority):
    refused(public_api.upload(sample, priority=priority), 400, "priority", "1 to 5")


@pytest.mark.parametrize("priority", [0, 6, "5", True, 2.5, [5]])
def test_a_bad_priority_in_json_is_400(public_api, priority):
    body = {"audio": "https://93.184.215.14/a.wav", "hook_url": public_api.PUBLIC_HOOK, "priority": priority}
    refused(public_api.post("/v1/tasks", headers=public_api.AUTH, json=body), 400, "priority")


def test_an_unknown_model_is_400_naming_the_allowed_ones(public_api, sample):
    refused(public_api.upload(sample, model="Nope.onnx"), 400, "model", tinymodel.TINY_MODEL, "Other.onnx")


def test_an_unknown_output_format_is_400(public_api, sample):
    refused(public_api.upload(sample, output_format="exe"), 400, "output_format", "flac")


def test_malformed_submissions_are_refused(public_api, sample):
    auth = public_api.AUTH
    refused(public_api.post("/v1/tasks", headers=auth, files={"audio": ("a.wav", sample.read_bytes())},
                            data={"hook_url": "ftp://93.184.215.14/"}), 400, "hook_url", "http")
    refused(public_api.post("/v1/tasks", headers=auth, json={"audio": "https://93.184.215.14/a.wav", "hook_url": 7}),
            400, "hook_url")
    refused(public_api.post("/v1/tasks", headers=auth, data={"hook_url": public_api.PUBLIC_HOOK},
                            files={"other": ("a.wav", b"x")}), 400, "'audio'")
    refused(public_api.post("/v1/tasks", headers=auth, json={"hook_url": public_api.PUBLIC_HOOK}), 400, "'audio'")
    refused(public_api.post("/v1/tasks", headers=auth, json=["not", "an", "object"]), 400, "object")
    refused(public_api.post("/v1/tasks", headers={**auth, "Content-Type": "application/json"}, data=b"{nope"),
            400, "JSON")
    refused(public_api.post("/v1/tasks", headers={**auth, "Content-Type": "text/plain"}, data=b"hello"), 415,
            "multipart/form-data")


# -- status and stems ----------------------------------------------------------

def test_an_unknown_task_is_404(public_api):
    task_uuid = str(uuid.uuid4())
    refused(public_api.get(f"/v1/tasks/{task_uuid}", headers=public_api.AUTH), 404, f"no task {task_uuid}")
    refused(public_api.get("/v1/tasks/-not-a-uuid", headers=public_api.AUTH), 404, "no task")


# A task that finished an hour ago: well inside api.result_retention (7 days), so it still answers.
_AN_HOUR_AGO = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
SUBMITTED, STARTED, FINISHED = (_AN_HOUR_AGO + timedelta(seconds=s) for s in (0, 1, 9))
SUBMITTED_AT, STARTED_AT, FINISHED_AT = (t.isoformat(timespec="milliseconds") for t in (SUBMITTED, STARTED, FINISHED))


def _finished_task(open_api, kafka, stems: dict[str, str]) -> str:
    """A task the processor reports succeeded, written to the status topic as the processor would."""
    task_uuid = str(uuid.uuid4())
    kafka.send(open_api.stack.topics.status, {
        "task_uuid": task_uuid, "state": "succeeded", "submitted_at": SUBMITTED_AT,
        "started_at": STARTED_AT, "finished_at": FINISHED_AT,
        "stems": stems, "worker": "gpu-host-1"})
    wait_until(lambda: open_api.get(f"/v1/tasks/{task_uuid}", headers=open_api.AUTH).status_code == 200, 15,
               "the status board to see the task")
    return task_uuid


def _stem_files(open_api, task_uuid: str) -> dict[str, str]:
    directory = open_api.stack.output / task_uuid
    directory.mkdir()
    stems = {}
    for name in ("vocals", "instrumental"):
        path = directory / f"upload_({name.title()})_{tinymodel.TINY_MODEL}.wav"
        tinymodel.write_sample(path, 0.2, seed=len(name))
        stems[name] = str(path)
    return stems


def test_a_succeeded_task_shows_its_state_and_signed_stem_links(open_api, kafka):
    planned = str(uuid.uuid4())
    stems = _stem_files(open_api, planned)
    kafka.send(open_api.stack.topics.status, {"task_uuid": planned, "state": "queued", "priority": 2})
    kafka.send(open_api.stack.topics.status, {
        "task_uuid": planned, "state": "succeeded", "submitted_at": SUBMITTED_AT,
        "finished_at": FINISHED_AT, "stems": stems, "worker": "gpu-host-1"})

    def succeeded():
        r = open_api.get(f"/v1/tasks/{planned}", headers=open_api.AUTH)
        return r if r.status_code == 200 and r.json()["state"] == "succeeded" else None
    response = wait_until(succeeded, 15, "the succeeded state")
    body = response.json()
    assert body["task_uuid"] == planned and body["priority"] == 2
    assert body["finished_at"] == FINISHED_AT and "error_message" not in body
    # Kept for api.result_retention (7 days by default) after it finished.
    expected = (FINISHED + timedelta(days=7)).isoformat(timespec="milliseconds")
    assert body["expires_at"] == expected
    assert set(body["stems"]) == {"vocals", "instrumental"}
    for name, link in body["stems"].items():
        assert link.startswith(f"{open_api.url}/v1/tasks/{planned}/stems/{name}?expires=")
    assert str(open_api.stack.output) not in response.text and "gpu-host-1" not in response.text

    # A webhook receiver holds only the link: no token needed.
    download = requests.get(body["stems"]["vocals"], timeout=30)
    assert download.status_code == 200, download.text
    with open(stems["vocals"], "rb") as f:
        assert download.content == f.read()
    assert download.headers["Content-Type"].startswith("audio/")

    tampered = body["stems"]["vocals"][:-1] + ("0" if body["stems"]["vocals"][-1] != "0" else "1")
    refused(requests.get(tampered, timeout=30), 403, "invalid or has expired")
    other_stem = body["stems"]["vocals"].replace("/stems/vocals?", "/stems/instrumental?")
    refused(requests.get(other_stem, timeout=30), 403)
    expired = links.stem_url(open_api.url, open_api.LINK_SECRET, planned, "vocals", ttl=-60)
    refused(requests.get(expired, timeout=30), 403)
    bare = f"{open_api.url}/v1/tasks/{planned}/stems/vocals"
    refused(requests.get(bare, timeout=30), 401)
    refused(requests.get(bare, headers={"Authorization": "Bearer wrong"}, timeout=30), 401)
    assert requests.get(bare, headers=open_api.AUTH, timeout=30).status_code == 200
    refused(open_api.get(f"/v1/tasks/{planned}/stems/drums", headers=open_api.AUTH), 404, "no stem 'drums'")


def test_a_stem_path_outside_the_output_directory_is_never_served(open_api, kafka, tmp_path):
    secret = tmp_path / "secret.wav"
    tinymodel.write_sample(secret, 0.1)
    inside = open_api.stack.output / f"links-{uuid.uuid4()}"
    inside.mkdir()
    (inside / "escape.wav").symlink_to(secret)
    stems = {"absolute": str(secret), "dotdot": str(open_api.stack.output / ".." / ".." / secret.name),
             "symlink": str(inside / "escape.wav"), "directory": str(inside), "passwd": "/etc/passwd"}
    task_uuid = _finished_task(open_api, kafka, stems)
    for name in stems:
        response = open_api.get(f"/v1/tasks/{task_uuid}/stems/{name}", headers=open_api.AUTH)
        refused(response, 404, "not available")
        assert secret.read_bytes()[:64] not in response.content


def test_readyz_is_200_once_kafka_answers_and_status_is_loaded(public_api):
    # Each gunicorn worker loads the states itself: judge the answer that said 200, not a later one.
    ready = wait_until(lambda: (r := public_api.get("/readyz")).status_code == 200 and r, 30, "GET /readyz to answer 200")
    assert ready.json() == {"status": "ready", "execution_providers": {}}  # no processor in this deployment
    assert public_api.get("/healthz").json() == {"status": "ok"}


def test_the_openapi_document_describes_every_endpoint(public_api):
    document = public_api.get("/openapi.json").json()
    assert document["openapi"].startswith("3.0.")
    assert set(document["paths"]) == {"/v1/tasks", "/generate", "/v1/tasks/{task_uuid}",
                                      "/v1/tasks/{task_uuid}/stems/{stem}", "/v1/tasks/{task_uuid}/stems",
                                      "/v1/workers", "/v1/models", "/v1/queues",
                                      "/v1/dead-letters", "/v1/dead-letters/{partition}/{offset}",
                                      "/v1/dead-letters/{partition}/{offset}/replay", "/v1/keys", "/v1/keys/{name}",
                                      "/v1/whoami", "/v1/usage", "/healthz", "/readyz", "/openapi.json"}
    assert set(document["paths"]["/v1/tasks"]) == {"post", "get"}
    assert set(document["paths"]["/v1/keys"]) == {"post", "get"}
    assert set(document["paths"]["/v1/keys/{name}"]) == {"patch", "delete"}
    assert set(document["paths"]["/v1/tasks/{task_uuid}"]) == {"get", "delete"}
    assert {"202", "404", "409"} <= set(document["paths"]["/v1/tasks/{task_uuid}"]["delete"]["responses"])
    assert set(document["paths"]["/v1/tasks/{task_uuid}/stems"]) == {"delete"}
    assert {"200", "404", "409", "410"} <= set(document["paths"]["/v1/tasks/{task_uuid}/stems"]["delete"]["responses"])
    assert "410" in document["paths"]["/v1/tasks/{task_uuid}"]["get"]["responses"]
    assert "expires_at" in document["components"]["schemas"]["TaskStatus"]["required"]
    create = document["paths"]["/v1/tasks"]["post"]
    assert set(create["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert {"200", "202", "400", "401", "409", "413", "415", "422", "429", "502", "503"} <= set(create["responses"])
    assert set(document["components"]["securitySchemes"]) >= {"bearerAuth", "basicAuth"}
    upload = document["components"]["schemas"]["UploadSubmission"]["properties"]
    assert upload["model"]["enum"] == [tinymodel.TINY_MODEL, "Other.onnx"]
    assert upload["options"]["type"] == "string"  # a form carries the options' JSON text
    options = document["components"]["schemas"]["SeparationOptions"]["properties"]
    assert options["mdx_overlap"]["maximum"] == 0.999 and options["bit_depth"]["enum"] == [16, 24, 32]
    json.dumps(document)  # plain JSON all through
