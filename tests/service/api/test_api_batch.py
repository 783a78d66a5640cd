"""Several ``audio`` files in one POST /v1/tasks: one task per file, sharing the request's fields,
against the real server and broker.  A bad file refuses the whole request and queues nothing; more
files than ``api.max_files_per_request`` is a 400; a single file keeps its answer; Kafka failing a
batch part-way is a 503 that says which file's task is queued, unconfirmed or not queued."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest
import requests

from support import KafkaView, wait_until
from uvrd.api.app import create_app
from uvrd.api.context import EXTENSION
from uvrd.broker.loopback import free_port
from uvrd.config import PRIORITIES, ApiConfig
from uvrd.config.files import load
from devtools import tinymodel


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> list[Path]:
    """Three different WAV files, so each task's spooled audio can be told apart."""
    directory = tmp_path_factory.mktemp("batch")
    return [tinymodel.write_sample(directory / f"song{i}.wav", seconds=0.2 + 0.1 * i, seed=i) for i in range(3)]


def post_files(server, files: list[tuple[str, bytes]], **form) -> requests.Response:
    return server.post("/v1/tasks", headers=server.AUTH, files=[("audio", file) for file in files], data=form)


def marked_hook(server) -> str:
    """A hook URL no other test's task carries: it finds this test's records on a shared topic."""
    return f"{server.PUBLIC_HOOK}/{uuid.uuid4()}"


def tasks_with_hook(stack, kafka, hook_url: str) -> list[dict]:
    """Every task record, on every priority's topic, that names *hook_url*.  The api answers only
    after Kafka acknowledged what it produced, so after an answer this is complete."""
    topics = [stack.topics.task_topic(priority) for priority in PRIORITIES]
    records = [json.loads(r.value) for topic in topics for r in kafka.read_all(topic)]
    return [task for task in records if task.get("hook_url") == hook_url]


def spooled(stack) -> set[str]:
    return {p.name for p in stack.spool.iterdir() if not p.name.startswith(".")}


def test_three_files_are_three_tasks_in_order_sharing_the_fields(public_api, kafka, songs):
    stack = public_api.stack
    hook = marked_hook(public_api)
    options = {"mdx_overlap": 0.5, "sample_rate": 22050}
    response = post_files(public_api, [(song.name, song.read_bytes()) for song in songs], hook_url=hook,
                          priority="4", model="Other.onnx", output_format="wav", options=json.dumps(options))
    assert response.status_code == 202, response.text
    assert "Location" not in response.headers, "a batch has no one status URL"
    entries = response.json()["tasks"]
    uuids = [entry["task_uuid"] for entry in entries]
    assert len(set(uuids)) == 3
    assert entries == [{"task_uuid": u, "state": "queued", "status_url": f"{public_api.url}/v1/tasks/{u}",
                        "filename": song.name} for u, song in zip(uuids, songs)]

    for task_uuid, song in zip(uuids, songs):
        [task] = stack.records(kafka, stack.topics.task_topic(4), task_uuid)
        assert task["audio_path"] == str(stack.spool / f"{task_uuid}.wav")
        assert Path(task["audio_path"]).read_bytes() == song.read_bytes()
        assert (task["hook_url"], task["priority"], task["model"], task["output_format"], task["options"]) == \
            (hook, 4, "Other.onnx", "wav", options)
        assert task["storage"] == "local" and task["submitted_at"]
    assert len(tasks_with_hook(stack, kafka, hook)) == 3, "one record per file, no more"

    def queued_statuses():
        states = [[s["state"] for s in stack.records(kafka, stack.topics.status, u)] for u in uuids]
        return states if all(states) else None
    assert wait_until(queued_statuses, 60, "a queued status for every task") == [["queued"]] * 3
    wait_until(lambda: not stack.incoming(), 10, "the uploads' temporary files to go")

    def access_line():
        return next((e for e in public_api.daemon.events("request") if e.get("task_uuids") == uuids), None)
    assert wait_until(access_line, 60, "one access line naming every task")["status"] == 202


@pytest.mark.parametrize("bad_index", [0, 1, 2])
def test_one_file_that_is_not_audio_refuses_the_whole_request(public_api, kafka, songs, bad_index):
    stack = public_api.stack
    before = spooled(stack)
    files = [(song.name, song.read_bytes()) for song in songs]
    files[bad_index] = ("notes.txt", b"these are my lyrics, not a song")
    hook = marked_hook(public_api)
    response = post_files(public_api, files, hook_url=hook)

    assert response.status_code == 415, response.text
    body = response.json()
    assert body["part"] == {"index": bad_index, "filename": "notes.txt"}
    assert body["error"] == (f"the 'audio' file at index {bad_index} ('notes.txt') is refused: the audio is not in a "
                             "recognised format (WAV, FLAC, MP3, Ogg, MP4/M4A, AIFF or Matroska/WebM); nothing in "
                             "this request was queued")
    assert tasks_with_hook(stack, kafka, hook) == [], "not even the good files' tasks"
    assert spooled(stack) == before, "no file kept for any part"
    wait_until(lambda: not stack.incoming(), 10, "the uploads' temporary files to go")


def test_an_empty_file_refuses_the_whole_request_naming_it(public_api, kafka, songs):
    hook = marked_hook(public_api)
    response = post_files(public_api, [(songs[0].name, songs[0].read_bytes()), ("silence.wav", b"")], hook_url=hook)
    assert response.status_code == 400, response.text
    assert response.json()["part"] == {"index": 1, "filename": "silence.wav"}
    assert "the audio is empty" in response.json()["error"]
    assert tasks_with_hook(public_api.stack, kafka, hook) == []


def test_more_files_than_the_limit_are_refused_and_queue_nothing(api_stack, kafka, songs):
    server = api_stack.start(max_files_per_request=3)
    files = [(song.name, song.read_bytes()) for song in songs]

    response = post_files(server, [*files, files[0]], hook_url=server.PUBLIC_HOOK)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "the form has more than 3 'audio' files, the most this server takes in one "
                                        "request"}
    assert kafka.read_all(api_stack.topics.tasks) == []
    wait_until(lambda: not api_stack.incoming(), 10, "the uploads' temporary files to go")
    assert list(api_stack.spool.iterdir()) == []

    at_the_limit = post_files(server, files, hook_url=server.PUBLIC_HOOK)
    assert at_the_limit.status_code == 202, at_the_limit.text
    assert len(kafka.read_all(api_stack.topics.tasks)) == 3


def test_the_default_limit_is_32_files(public_api, kafka):
    assert ApiConfig().max_files_per_request == 32
    hook = marked_hook(public_api)
    tiny = ("tiny.wav", b"RIFF\x24\x00\x00\x00WAVE" + b"\x00" * 32)
    response = post_files(public_api, [tiny] * 33, hook_url=hook)
    assert response.status_code == 400, response.text
    assert "more than 32 'audio' files" in response.json()["error"]
    assert tasks_with_hook(public_api.stack, kafka, hook) == []


def test_a_single_file_keeps_its_answer(public_api, songs):
    response = post_files(public_api, [(songs[0].name, songs[0].read_bytes())], hook_url=public_api.PUBLIC_HOOK)
    assert response.status_code == 202, response.text
    task_uuid = response.json()["task_uuid"]
    status_url = f"{public_api.url}/v1/tasks/{task_uuid}"
    assert response.json() == {"task_uuid": task_uuid, "state": "queued", "status_url": status_url}
    assert response.headers["Location"] == status_url

    refused = post_files(public_api, [("notes.txt", b"not a song")], hook_url=public_api.PUBLIC_HOOK)
    assert refused.status_code == 415, refused.text
    assert refused.json() == {"error": "the audio is not in a recognised format (WAV, FLAC, MP3, Ogg, MP4/M4A, "
                                       "AIFF or Matroska/WebM)"}


def test_without_a_broker_a_batch_is_503_naming_every_file_and_leaves_no_file(api_stack, songs):
    api_stack.bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    server = api_stack.start(kafka={"request_timeout_ms": 3000})
    response = post_files(server, [(song.name, song.read_bytes()) for song in songs], hook_url=server.PUBLIC_HOOK)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"]
    assert response.json() == {"error": "the task queue is unavailable and nothing was queued; retry later",
                               "tasks": [{"state": "not_queued", "filename": song.name} for song in songs]}
    wait_until(lambda: not api_stack.incoming(), 10, "the uploads' temporary files to go")
    assert list(api_stack.spool.iterdir()) == []


def test_kafka_failing_part_way_is_a_503_that_says_which_files_are_queued(own_broker_stack, songs):
    """Kafka goes away just after it acknowledged the first of three tasks.  Only a hook on the
    producer can time that, so this one test runs the application in-process: the records still go
    to a real broker, which is really paused (SIGSTOP)."""
    broker, stack = own_broker_stack
    config = load(stack.write_config(kafka={"request_timeout_ms": 2000}))
    app = create_app(config)
    api = app.extensions[EXTENSION]
    acknowledged = api.backend.send_and_wait

    def pause_after_the_first(record):
        acknowledged(record)
        broker.pause()

    api.backend.send_and_wait = pause_after_the_first
    try:
        response = app.test_client().post(
            "/v1/tasks", headers={"Authorization": f"Bearer {config.api.tokens[0]}"},
            content_type="multipart/form-data", data={"audio": [(io.BytesIO(s.read_bytes()), s.name) for s in songs]})
    finally:
        broker.resume()
        api.close()

    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"]
    body = response.json
    assert body["error"] == ("Kafka did not take every task of this request: 1 of 3 files are queued and will run, "
                             "1 unconfirmed (it may still run: check its status_url before submitting it again), "
                             "1 not queued; 'tasks' says which file is which")
    queued, unconfirmed, not_queued = body["tasks"]
    public_url = config.api.public_url
    for entry, state, song in ((queued, "queued", songs[0]), (unconfirmed, "unconfirmed", songs[1])):
        assert entry == {"task_uuid": entry["task_uuid"], "state": state, "filename": song.name,
                         "status_url": f"{public_url}/v1/tasks/{entry['task_uuid']}"}
    assert not_queued == {"state": "not_queued", "filename": songs[2].name}

    view = KafkaView(broker.bootstrap)
    try:
        [task] = [json.loads(r.value) for r in view.read_all(stack.topics.tasks)
                  if r.key == queued["task_uuid"].encode()]
    finally:
        view.close()
    assert Path(task["audio_path"]).read_bytes() == songs[0].read_bytes()
    # The unconfirmed task may have landed: its audio stays.  The unsent one's is gone.
    assert spooled(stack) == {f"{queued['task_uuid']}.wav", f"{unconfirmed['task_uuid']}.wav"}


def test_the_openapi_document_describes_batches_as_the_server_answers_them(public_api, songs):
    document = public_api.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    create = document["paths"]["/v1/tasks"]["post"]
    audio = schemas["UploadSubmission"]["properties"]["audio"]
    assert (audio["type"], audio["minItems"], audio["maxItems"]) == ("array", 1, 32)
    assert create["responses"]["202"]["content"]["application/json"]["schema"] == {
        "oneOf": [{"$ref": "#/components/schemas/TaskAccepted"}, {"$ref": "#/components/schemas/BatchAccepted"}]}
    for status in ("400", "413", "415", "503"):
        assert create["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/SubmissionError"}

    def fits(value: dict, schema: dict) -> bool:
        return set(schema["required"]) <= set(value) <= set(schema["properties"])

    accepted = post_files(public_api, [(song.name, song.read_bytes()) for song in songs[:2]])
    assert fits(accepted.json(), schemas["BatchAccepted"])
    states = schemas["BatchTask"]["properties"]["state"]["enum"]
    assert all(fits(task, schemas["BatchTask"]) and task["state"] in states for task in accepted.json()["tasks"])
    refused = post_files(public_api, [(songs[0].name, songs[0].read_bytes()), ("notes.txt", b"not a song")])
    assert fits(refused.json(), schemas["SubmissionError"])
    assert fits(refused.json()["part"], schemas["SubmissionError"]["properties"]["part"])
