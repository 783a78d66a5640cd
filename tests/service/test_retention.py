"""Retention, stated, on a real broker: ``uvrd api`` under gunicorn, the processor (scripted engine)
and the uploader in this process, with local files and with a bucket (SeaweedFS).

- A task past ``api.result_retention`` (2 s here) answers 410 with when it expired, on its status
  and its stem links; the uploader's sweep then deletes its stems and input, as seen from outside
  (the spool and output directories listed, the bucket listed).
- ``DELETE /v1/tasks/<uuid>/stems`` deletes them at once, and every api of the deployment answers
  410 for the task; a queued task is a 409, another key gets 404.
"""

from __future__ import annotations

import uuid
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

import scripted_engine
from separation_service import AUTH, api_settings, start_api, submit
from support import wait_until
from devtools import tinymodel
from uvrd.processor.daemon import Processor
from uvrd.storage import links
from uvrd.uploader.daemon import Uploader

LINK_SECRET = "links"  # the stack's api.link_secret
WAIT_S = 60  # bounds each wait so that a failure ends the test; none is a claim about speed


@pytest.fixture(params=["local", "s3"])
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return tinymodel.write_sample(tmp_path_factory.mktemp("retention") / "sample.wav", seconds=1)


@pytest.fixture(scope="module")
def silent(tmp_path_factory) -> Path:
    """A WAV with no samples: the api takes it (it is a WAV), the processor fails it, and a failed
    task keeps its input (for a replay) until it expires."""
    path = tmp_path_factory.mktemp("retention-empty") / "empty.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
    return path


class Files:
    """A task's files as seen from outside: the spool and output directories listed, the bucket listed."""

    def __init__(self, stack, objectstore, prefix: str | None):
        self.stack, self.objectstore, self.prefix = stack, objectstore, prefix

    def of(self, task_uuid: str) -> list[str]:
        local = [str(p) for d in (self.stack.spool, self.stack.output) if d.exists()
                 for p in d.iterdir() if p.name.startswith(task_uuid)]
        remote = [k for k in self.objectstore.keys(self.prefix) if task_uuid in k] if self.prefix else []
        return sorted(local + remote)

    def stems(self, task_uuid: str) -> list[str]:
        return [f for f in self.of(task_uuid) if f"/stems/{task_uuid}/" in f or f.endswith(f"/output/{task_uuid}")]

    def inputs(self, task_uuid: str) -> list[str]:
        return [f for f in self.of(task_uuid) if f not in self.stems(task_uuid)]


def deployment(stack, objectstore, backend: str, retention: float, name: str = "uvrd.toml"):
    prefix = f"ret/{uuid.uuid4().hex[:12]}" if backend == "s3" else None
    storage = objectstore.storage_settings(prefix=prefix) if prefix else None
    config = stack.write_config(name, storage=storage, api={**api_settings(), "result_retention": retention},
                                uploader={"retention_interval": 0.2, "spool_retention": 3600})
    return config, Files(stack, objectstore, prefix)


def results(kafka, stack, *task_uuids: str) -> dict[str, dict]:
    def all_there():
        found = {r["task_uuid"]: r for r in kafka.results(stack.results) if r.get("task_uuid") in task_uuids}
        return found if len(found) == len(task_uuids) else None
    return wait_until(all_there, WAIT_S, "the results", interval=0.2)


def get(api: str, path: str, headers=AUTH) -> requests.Response:
    return requests.get(api + path, headers=headers, timeout=30)


def when(result: dict, seconds: float) -> str:
    """*result*'s finished_at plus *seconds*, as the api writes times."""
    finished = datetime.fromisoformat(result["finished_at"]).astimezone(UTC)
    return (finished + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def test_a_task_past_its_retention_answers_410_and_its_files_are_swept(stack, kafka, objectstore, backend,
                                                                       sample, silent):
    config, files = deployment(stack, objectstore, backend, retention=2)
    api = start_api(stack, config)
    stack.in_process(Processor, config=config, engine=scripted_engine.engine).wait_ready()
    ok, bad = submit(api, sample, None), submit(api, silent, None)
    done = results(kafka, stack, ok, bad)
    assert done[ok]["success"] is True and done[bad]["success"] is False, done

    # No uploader runs yet, so nothing sweeps: the stems of one, the kept input of the other are there.
    assert files.stems(ok) and not files.inputs(ok), files.of(ok)
    assert files.inputs(bad) and not files.stems(bad), files.of(bad)

    for task_uuid in (ok, bad):
        # (A list: a 4xx Response is falsy.)
        [gone] = wait_until(lambda t=task_uuid: (r := get(api, f"/v1/tasks/{t}")).status_code == 410 and [r],
                            WAIT_S, "the task to expire", interval=0.1)
        expected = when(done[task_uuid], 2)
        assert gone.json() == {"error": f"task {task_uuid} is gone: it expired at {expected}, and its stems and "
                                        "input are deleted", "expired_at": expected}
    # Its stem links too: with the key, and the signed link a webhook carried (its own expiry a day off).
    for headers in (AUTH, {}):
        path = f"/v1/tasks/{ok}/stems/vocals"
        url = links.stem_url(api, LINK_SECRET, ok, "vocals", 86400) if not headers else api + path
        answer = requests.get(url, headers=headers, timeout=30)
        assert answer.status_code == 410 and "expired at" in answer.json()["error"], answer.text
    # Another caller still cannot tell it from no task; the list leaves it out.
    assert get(api, f"/v1/tasks/{ok}", headers={"Authorization": "Bearer wrong"}).status_code == 401
    listed = [t["task_uuid"] for t in get(api, "/v1/tasks").json()["tasks"]]
    assert ok not in listed and bad not in listed

    stack.in_process(Uploader, config=config).wait_ready()
    wait_until(lambda: not files.of(ok) and not files.of(bad), WAIT_S, "the sweep to delete the files", interval=0.2)
    assert get(api, f"/v1/tasks/{ok}").status_code == 410


def test_deleting_stems_removes_them_at_once_and_every_api_answers_410(stack, kafka, objectstore, backend, sample):
    config, files = deployment(stack, objectstore, backend, retention=3600, name="first.toml")
    second_config = stack.write_config("second.toml", storage=(objectstore.storage_settings(prefix=files.prefix)
                                                               if files.prefix else None),
                                       api={**api_settings(), "result_retention": 3600})
    first, second = start_api(stack, config), start_api(stack, second_config)
    task_uuid = submit(first, sample, None)
    path = f"/v1/tasks/{task_uuid}/stems"

    # Not finished (no processor yet): nothing to delete.
    queued = requests.delete(first + path, headers=AUTH, timeout=30)
    assert queued.status_code == 409 and "has not finished (queued)" in queued.json()["error"], queued.text
    answer = get(first, f"/v1/tasks/{task_uuid}").json()
    assert answer["state"] == "queued" and answer["expires_at"] is None

    # Another key (a submit key of its own) gets what an unknown task gets.
    made = requests.post(first + "/v1/keys", headers=AUTH, json={"name": "other", "scope": "submit"}, timeout=30)
    assert made.status_code == 201, made.text
    other = {"Authorization": f"Bearer {made.json()['token']}"}
    wait_until(lambda: get(first, "/v1/whoami", headers=other).status_code == 200, WAIT_S, "the key on the api")

    stack.in_process(Processor, config=config, engine=scripted_engine.engine).wait_ready()
    done = results(kafka, stack, task_uuid)[task_uuid]
    assert done["success"] is True
    for api in (first, second):
        status = wait_until(lambda a=api: (s := get(a, f"/v1/tasks/{task_uuid}").json()).get("state") == "succeeded"
                            and s, WAIT_S, "the api to see the success", interval=0.1)
        assert status["expires_at"] == when(done, 3600)
    assert files.stems(task_uuid), files.of(task_uuid)
    refused = requests.delete(first + path, headers=other, timeout=30)
    assert refused.status_code == 404 and refused.json() == {"error": f"no task {task_uuid}"}
    assert files.stems(task_uuid), "another key's refusal deleted nothing"

    deleted = requests.delete(first + path, headers=AUTH, timeout=30)
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert body["state"] == "stems_deleted" and body["files_deleted"] is True
    assert files.of(task_uuid) == [], "deleted at once (no uploader, no sweep runs here)"

    sentence = f"task {task_uuid} is gone: its stems and input were deleted at {body['stems_deleted_at']} on request"
    gone = get(first, f"/v1/tasks/{task_uuid}")
    assert gone.status_code == 410, "the api that deleted answers so at once"
    assert gone.json() == {"error": sentence, "stems_deleted_at": body["stems_deleted_at"]}
    # The other api learns it from the status topic.
    wait_until(lambda: get(second, f"/v1/tasks/{task_uuid}").status_code == 410, WAIT_S,
               "the second api to answer 410", interval=0.1)
    for api in (first, second):
        assert get(api, f"/v1/tasks/{task_uuid}").json() == {"error": sentence,
                                                             "stems_deleted_at": body["stems_deleted_at"]}
        stem = requests.get(links.stem_url(api, LINK_SECRET, task_uuid, "vocals", 86400), timeout=30)
        assert stem.status_code == 410 and stem.json()["error"] == sentence
        assert get(api, f"/v1/tasks/{task_uuid}", headers=other).status_code == 404
        assert requests.delete(api + path, headers=AUTH, timeout=30).status_code == 410
