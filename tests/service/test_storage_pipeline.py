"""The whole pipeline on object storage (``storage.backend = "s3"`` on a real S3-compatible server,
SeaweedFS), with a real broker, a real ``uvrd api`` subprocess and a real webhook receiver; the
processor and the uploader run in the test process (tests/inprocess.py).

The engine child is scripted (scripted_engine.py): these tests are about the bucket, not the model.
Its stems are the input at half amplitude, so a stem read back from the bucket tells whether the
whole input came down.  What a user relies on is read from outside: the bucket's objects, the
results, status and dead-letter topics, committed offsets, the webhook receiver and the api's
answers; that a task waits for the store, from the in-process daemon's status (what systemd's
STATUS= would say)."""

from __future__ import annotations

import json
import uuid
import wave

import numpy as np
import pytest
import requests

import scripted_engine
from separation_service import AUTH, api_settings, start_api, submit
from support import WebhookReceiver, wait_until
from devtools import tinymodel
from uvrd.boards import cancellations
from uvrd.processor.daemon import Processor
from uvrd.uploader.daemon import Uploader

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


def one(records: list[dict], task_uuid: str) -> dict:
    [record] = [r for r in records if r.get("task_uuid") == task_uuid]
    return record


def processor(stack, config):
    return stack.in_process(Processor, config=config, engine=scripted_engine.engine).wait_ready()


def waits_for_the_store(p, task_uuid: str) -> bool:
    """Whether *p* holds *task_uuid* while the store fails (host_trouble.py's STATUS=)."""
    return p.daemon.status() == f"storage failed: task {task_uuid} waits to try again"



@pytest.fixture
def prefix() -> str:
    return f"e2e/{uuid.uuid4().hex[:12]}"


def test_stems_reach_the_webhook_as_presigned_links_that_expire_and_retention_deletes_them(
        stack, kafka, objectstore, prefix, tmp_path):
    sample = tinymodel.write_sample(tmp_path / "sample.wav", seconds=2)
    storage = objectstore.storage_settings(prefix=prefix, presign_ttl=8)
    config = stack.write_config(storage=storage, api={**api_settings(), "result_retention": 20},
                                uploader={"spool_retention": 3600, "retention_interval": 1})
    processor(stack, config)
    stack.in_process(Uploader, config=config).wait_ready()
    api = start_api(stack, config)
    receiver = WebhookReceiver()
    try:
        task_uuid = submit(api, sample, receiver.url)

        [task] = [json.loads(r.value) for r in kafka.read_all(stack.tasks) if r.key == task_uuid.encode()]
        assert task["storage"] == "s3" and "audio_path" not in task
        assert task["audio_key"] == f"{prefix}/inputs/{task_uuid}.wav"
        assert not list(stack.spool.iterdir()), "the api's spool only staged the upload"

        [delivery] = wait_until(receiver.successes, 120, "the webhook")
        body = json.loads(delivery["body"])
        assert body["status"] == "success" and set(body["stems"]) == {"vocals", "instrumental"}
        assert body["vocals"] == body["stems"]["vocals"]

        result = one(kafka.results(stack.results), task_uuid)
        stem_keys = result["stems"]
        assert result["storage"] == "s3" and result["vocals_key"] == stem_keys["vocals"]
        assert "vocals_path" not in result
        assert objectstore.keys(prefix) == sorted(stem_keys.values()), "the input object goes once the task is final"
        assert not list(stack.output.glob(".input-*")) and not list(stack.output.glob(".work-*"))

        client = objectstore.client()
        for name, url in body["stems"].items():
            assert url.startswith(objectstore.endpoint_url + "/") and "X-Amz-Signature=" in url
            response = requests.get(url, timeout=10)
            assert response.status_code == 200, response.text
            stored = client.get_object(Bucket=objectstore.bucket, Key=stem_keys[name])["Body"].read()
            assert response.content == stored and stored[:4] == b"RIFF"

        # The API's status and stem links lead to the bucket as well.  Its board reads the status topic
        # on its own, so it may learn of the success a moment after the webhook went out.
        status = wait_until(lambda: "stems" in (s := requests.get(f"{api}/v1/tasks/{task_uuid}", headers=AUTH,
                                                                   timeout=10).json()) and s,
                            30, "the api's status to show the stems", interval=0.2)
        assert status["stems"]["vocals"].startswith(objectstore.endpoint_url + "/")
        redirect = requests.get(f"{api}/v1/tasks/{task_uuid}/stems/vocals", headers=AUTH, timeout=10,
                                allow_redirects=False)
        assert redirect.status_code == 302 and redirect.headers["Location"].startswith(objectstore.endpoint_url)

        expired = wait_until(lambda: (r := requests.get(body["stems"]["vocals"], timeout=10)).status_code == 403
                             and [r], 60, "the webhook's link to expire", interval=0.5)
        assert b"expired" in expired[0].content
        assert objectstore.keys(prefix) == sorted(stem_keys.values()), "expired links, objects still there"

        wait_until(lambda: objectstore.keys(prefix) == [], 60, "retention to delete the stems", interval=0.5)
    finally:
        receiver.close()


def test_a_large_input_goes_up_in_parts_and_is_separated(stack, kafka, objectstore, prefix, tmp_path):
    # Parts of the smallest size S3 allows (5 MiB), and an input that needs two of them: 36 s of
    # 44.1 kHz 16-bit stereo WAV is 36 * 176,400 B + its header, about 6.1 MiB.
    big = tinymodel.write_sample(tmp_path / "big.wav", seconds=36)
    size = big.stat().st_size
    assert 5 * MiB < size <= 2 * 5 * MiB
    storage = objectstore.storage_settings(prefix=prefix, multipart_threshold=5 * MiB, part_size=5 * MiB)
    config = stack.write_config(storage=storage, api=api_settings())
    api = start_api(stack, config)
    task_uuid = submit(api, big, None)
    key = f"{prefix}/inputs/{task_uuid}.wav"
    head = objectstore.client().head_object(Bucket=objectstore.bucket, Key=key)
    # A multipart upload's ETag ends in its number of parts.
    assert head["ContentLength"] == size and head["ETag"].strip('"').endswith("-2")

    processor(stack, config)
    result = wait_until(lambda: [r for r in kafka.results(stack.results) if r["task_uuid"] == task_uuid], 120,
                        "the result")[0]
    assert result["success"] is True and result["storage"] == "s3", result
    # The processor downloaded the whole input, both parts: the scripted engine's stems are the input
    # at half amplitude, so each stem the bucket holds is that, frame for frame, and as long.
    with wave.open(str(big), "rb") as source:
        frames = source.getnframes()
        half = (np.frombuffer(source.readframes(frames), "<i2") // 2).astype("<i2")
    client = objectstore.client()
    for name, stem_key in result["stems"].items():
        local = tmp_path / f"{name}.wav"
        client.download_file(objectstore.bucket, stem_key, str(local))
        with wave.open(str(local), "rb") as stem:
            assert stem.getnframes() == frames, f"{name}: as many frames as the input"
            assert np.array_equal(np.frombuffer(stem.readframes(frames), "<i2"), half), f"{name}: the input's samples"
    assert objectstore.keys(f"{prefix}/inputs/") == []


def test_a_refused_stem_upload_fails_the_task_and_never_reports_a_success(stack, kafka, objectstore, prefix, tmp_path):
    """The processor's credentials may read but not write: SeaweedFS refuses every stem upload."""
    sample = tinymodel.write_sample(tmp_path / "sample.wav", seconds=2)
    api_config = stack.write_config("api.toml", storage=objectstore.storage_settings(prefix=prefix),
                                    api=api_settings())
    # The refusals are waited out for job_timeout, as an outage would be, before the task fails.
    processor_config = stack.write_config("processor.toml", job_timeout=6, storage=objectstore.storage_settings(
        readonly=True, prefix=prefix, max_attempts=2))
    p = processor(stack, processor_config)
    api = start_api(stack, api_config)
    task_uuid = submit(api, sample, None)
    # An old-style task naming a local path reaches a processor configured for the bucket.
    local_task = stack.task(stack.spool_copy(sample))
    kafka.send(stack.tasks, local_task)

    # The first refusal does not fail the task: it waits, uncommitted, and tries again.
    wait_until(lambda: waits_for_the_store(p, task_uuid), 60, "the processor to wait for the store")
    assert kafka.results(stack.results) == [] and sum(kafka.committed(stack.group, stack.tasks).values()) == 0
    results = wait_until(lambda: [r for r in kafka.results(stack.results)
                                  if r["task_uuid"] in (task_uuid, local_task["task_uuid"])] if
                         len(kafka.results(stack.results)) >= 2 else None, 120, "both results")
    refused, mismatched = one(results, task_uuid), one(results, local_task["task_uuid"])
    assert refused["success"] is False and "could not store the stem" in refused["error_message"]
    assert "kept failing for over 6 s" in refused["error_message"]
    assert "AccessDenied" in refused["error_message"] or "Access Denied" in refused["error_message"]
    assert mismatched["success"] is False
    assert "configured for s3 storage" in mismatched["error_message"]
    assert objectstore.keys(f"{prefix}/stems/") == [], "no stem of a failed task is left in the bucket"
    dead = [json.loads(r.value) for r in kafka.read_all(stack.dead_letter)]
    assert {d["task_uuid"] for d in dead} == {task_uuid, local_task["task_uuid"]}
    assert not list(stack.output.glob(".input-*")) and not list(stack.output.glob(".work-*"))


def test_a_store_outage_holds_the_task_until_the_store_answers_again(stack, kafka, objectstore, prefix, tmp_path):
    """Neither the input's download nor the stems' upload fails a task while the store is down."""
    sample = tinymodel.write_sample(tmp_path / "sample.wav", seconds=2)
    config = stack.write_config(job_timeout=300, storage=objectstore.storage_settings(
        prefix=prefix, timeout=1, max_attempts=1))
    p = processor(stack, config)
    client = objectstore.client()

    def task_for(name: str | None = None) -> dict:
        """A task whose input the test put in the bucket as *name* (by default the task's own name)."""
        task_uuid = str(uuid.uuid4())
        key = f"{prefix}/inputs/{name or f'{task_uuid}.wav'}"
        client.upload_file(str(sample), objectstore.bucket, key)
        return {"task_uuid": task_uuid, "storage": "s3", "audio_key": key, "hook_url": None}

    def outage(task: dict, done: int, ran: int, send: bool = False) -> None:
        """The store stops answering until the processor waits for it with *task*, *done* tasks committed
        and *task*'s separation begun *ran* times (before the store is back: then it may begin)."""
        objectstore.pause()
        try:
            if send:
                kafka.send(stack.tasks, task)
            wait_until(lambda: waits_for_the_store(p, task["task_uuid"]), 60, "the processor to wait for the store")
            assert len(kafka.results(stack.results)) == done
            assert sum(kafka.committed(stack.group, stack.tasks).values()) == done
            assert kafka.runs_started(stack.status, task["task_uuid"]) == ran
        finally:
            objectstore.resume()

    fetched = task_for()
    outage(fetched, 0, ran=0, send=True)  # the input cannot be downloaded: held before its separation
    wait_until(lambda: len(kafka.results(stack.results)) == 1, 120, "the first result")

    # Slow in the scripted engine (its input's name says so), so that the store goes down while it runs:
    # its input is down already and its stems not yet up.  Not the task's own name, so its input object
    # stays in the bucket when it ends (storage.remove_input deletes only a task's own).
    stored = task_for(scripted_engine.input_name("slow-5s"))
    kafka.send(stack.tasks, stored)
    wait_until(lambda: (run := p.handler.separation.run) is not None and run.task_uuid == stored["task_uuid"],
               60, "the second task's separation to run")
    outage(stored, 1, ran=1)  # the separation ran, but its stems cannot be stored
    results = wait_until(lambda: len(kafka.results(stack.results)) == 2 and kafka.results(stack.results), 120,
                         "the second result")
    assert [(r["task_uuid"], r["success"]) for r in results] == [(fetched["task_uuid"], True),
                                                                  (stored["task_uuid"], True)]
    folder = f"{prefix}/stems/{stored['task_uuid']}"
    assert objectstore.keys(folder + "/") == [f"{folder}/instrumental.wav", f"{folder}/vocals.wav"]
    assert [kafka.runs_started(stack.status, t["task_uuid"]) for t in (fetched, stored)] == [1, 1], \
        "no separation ran twice"
    assert list(kafka.read_all(stack.dead_letter)) == []
    assert not list(stack.output.glob(".input-*")) and not list(stack.output.glob(".work-*"))


def test_a_task_cancelled_while_its_stems_are_stored_ends_once_as_the_success_it_is(stack, kafka, objectstore, prefix,
                                                                                   tmp_path):
    """A cancellation that comes after the separation, while the pipeline's store stage uploads the
    stems, spares no work: the task ends once, a success whose stems are in the bucket, and the request
    is settled with it (the processor's board forgets it)."""
    sample = tinymodel.write_sample(tmp_path / "sample.wav", seconds=2)
    config = stack.write_config(job_timeout=300, storage=objectstore.storage_settings(prefix=prefix, timeout=60))
    p = processor(stack, config)
    key = f"{prefix}/inputs/{scripted_engine.input_name('slow-3s')}"
    objectstore.client().upload_file(str(sample), objectstore.bucket, key)
    task = {"task_uuid": str(uuid.uuid4()), "storage": "s3", "audio_key": key, "hook_url": None}
    kafka.send(stack.tasks, task)
    wait_until(lambda: (run := p.handler.separation.run) is not None and run.task_uuid == task["task_uuid"],
               60, "the task's separation to run")
    objectstore.pause()
    try:
        wait_until(lambda: p.handler.pipeline.storing.busy, 60, "the stems in the store stage")
        record, _ = cancellations.request(stack.cancellations, task["task_uuid"])
        kafka.send(record.topic, record.value, key=record.key)
        wait_until(lambda: p.handler.cancellations.requested_at(task["task_uuid"]), 60, "the processor to see it")
        assert p.handler.pipeline.storing.busy and kafka.results(stack.results) == []
    finally:
        objectstore.resume()
    [result] = wait_until(lambda: kafka.results(stack.results), 120, "the result")
    assert result["task_uuid"] == task["task_uuid"] and result["success"] is True and not result.get("cancelled")
    assert sorted(result["stems"]) == ["instrumental", "vocals"]
    folder = f"{prefix}/stems/{task['task_uuid']}"
    assert objectstore.keys(folder + "/") == [f"{folder}/instrumental.wav", f"{folder}/vocals.wav"]
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 60, "the commit")
    assert kafka.runs_started(stack.status, task["task_uuid"]) == 1
    wait_until(lambda: p.handler.cancellations.requested_at(task["task_uuid"]) is None, 60,
               "the cancellation to be settled with the task")
    assert list(kafka.read_all(stack.dead_letter)) == []
