"""The storage backends against a real S3-compatible server (SeaweedFS on loopback):
streams in parts and ranges, presigned links that work and expire, refusals, retention."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import threading
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest
import requests

from support import wait_until

from uvrd.config import Config, ProcessorConfig, StorageConfig, UploaderConfig
from uvrd.messages import BadMessage, Task, key_problem
from uvrd.storage import StorageError, open_storage, retention

MiB = 1024 * 1024


@pytest.fixture
def config(objectstore, tmp_path) -> Config:
    """A configuration of its own prefix, so tests never see each other's objects."""
    storage = StorageConfig(**objectstore.storage_settings(prefix=f"t/{uuid.uuid4().hex[:12]}"))
    storage.validate()
    processor = ProcessorConfig(spool_dir=tmp_path / "spool", output_dir=tmp_path / "output")
    for d in (processor.spool_dir, processor.output_dir):
        d.mkdir()
    return Config(processor=processor, storage=storage)


def s3_task(key: str, task_uuid: str | None = None) -> Task:
    return Task(task_uuid=task_uuid or str(uuid.uuid4()), audio_path=None, hook_url=None, storage="s3", audio_key=key)


def spooled(config: Config, content: bytes, name: str = "x.wav") -> Path:
    path = config.processor.spool_dir / name
    path.write_bytes(content)
    return path


def write_random(path: Path, size: int) -> Path:
    """*size* random bytes, written a block at a time."""
    with path.open("wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
        f.write(os.urandom(size % MiB))
    return path


def test_an_input_goes_to_the_bucket_and_comes_back_into_a_private_directory(config, objectstore):
    store = open_storage(config)
    key = store.put_input(spooled(config, b"RIFF-audio-bytes", "abc.wav"), "abc.wav")
    assert key == f"{config.storage.root}/inputs/abc.wav"
    assert not (config.processor.spool_dir / "abc.wav").exists(), "the spool only stages the upload"
    assert objectstore.keys(config.storage.root) == [key]

    path = store.fetch_input(s3_task(key))
    assert path.read_bytes() == b"RIFF-audio-bytes" and path.name == "abc.wav"
    assert path.parent.parent == config.processor.output_dir
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    store.release_input(path)
    assert not path.parent.exists()

    store.remove_input(s3_task(key, task_uuid="abc"))
    assert objectstore.keys(config.storage.root) == []


def test_a_task_removes_only_its_own_input_object(config, objectstore):
    """A duplicated or forged task may name another task's object; only the object the api named
    after the task (inputs/<task_uuid>.<ext>) is its own to delete."""
    store = open_storage(config)
    mine, theirs = (store.put_input(spooled(config, b"RIFF-audio", f"{name}.wav"), f"{name}.wav")
                    for name in ("mine", "theirs"))
    elsewhere = f"{config.storage.root}/stems/mine/mine.wav"
    objectstore.client().put_object(Bucket=objectstore.bucket, Key=elsewhere, Body=b"RIFF-stem")
    for key in (theirs, elsewhere, f"{config.storage.root}/inputs/mine.wav.wav"):
        store.remove_input(s3_task(key, task_uuid="mine"))
    assert objectstore.keys(config.storage.root) == sorted([mine, theirs, elsewhere])
    store.remove_input(s3_task(mine, task_uuid="mine"))
    assert objectstore.keys(config.storage.root) == sorted([theirs, elsewhere])


@pytest.mark.parametrize("key, words", [
    ("{root}/inputs/missing.wav", "does not exist"),
    ("elsewhere/inputs/a.wav", "under the configured prefix"),
    ("{root}/inputs/../../etc/a.wav", "'..'"),
    ("/{root}/inputs/a.wav", "must not start with '/'"),
    ("{root}/" + "a" * 1100, "at most 1024 bytes"),
])
def test_a_task_naming_a_bad_or_missing_object_is_refused(config, key, words):
    store = open_storage(config)
    with pytest.raises(BadMessage) as e:
        store.fetch_input(s3_task(key.format(root=config.storage.root)))
    assert words in str(e.value)
    assert list(config.processor.output_dir.iterdir()) == [], "no download directory is left behind"


def test_an_empty_object_is_refused(config, objectstore):
    key = f"{config.storage.root}/inputs/empty.wav"
    objectstore.client().put_object(Bucket=objectstore.bucket, Key=key, Body=b"")
    with pytest.raises(BadMessage, match="is empty"):
        open_storage(config).fetch_input(s3_task(key))


def test_a_large_file_goes_up_in_parts_and_comes_down_in_ranges_never_whole_in_memory(config, objectstore, tmp_path):
    config = dataclasses.replace(config, storage=dataclasses.replace(config.storage, part_size=5 * MiB,
                                                                      multipart_threshold=5 * MiB))
    size = 34 * MiB
    source = write_random(config.processor.spool_dir / "big.wav", size)
    expected_parts = -(-size // config.storage.part_size)
    store = open_storage(config)
    tracemalloc.start()
    try:
        key = store.put_input(source, "big.wav")
        up_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        ranges = []
        store.client.meta.events.register("provide-client-params.s3.GetObject",
                                          lambda params, **kw: ranges.append(params.get("Range")))
        path = store.fetch_input(s3_task(key))
        down_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    head = objectstore.client().head_object(Bucket=objectstore.bucket, Key=key)
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith(f"-{expected_parts}"), head["ETag"]  # a multipart upload's ETag
    assert len(ranges) == expected_parts and all(r and r.startswith("bytes=") for r in ranges), ranges
    assert path.stat().st_size == size
    with path.open("rb") as f:
        f.seek(size - MiB)
        tail = f.read()
    assert tail == objectstore.client().get_object(Bucket=objectstore.bucket, Key=key,
                                                   Range=f"bytes={size - MiB}-")["Body"].read()
    # At most the parts in flight (4 at a time) are held, never the whole file.
    bound = 5 * config.storage.part_size
    assert bound < size and up_peak < bound and down_peak < bound, (up_peak, down_peak)
    print(f"peak memory: upload {up_peak / MiB:.1f} MiB, download {down_peak / MiB:.1f} MiB of a {size / MiB:.0f} MiB file")
    store.release_input(path)


def test_stems_are_stored_together_and_their_presigned_links_download_then_expire(config, objectstore):
    config = dataclasses.replace(config, storage=dataclasses.replace(config.storage, presign_ttl=2))
    store = open_storage(config)
    workdir = config.processor.output_dir / ".work-x"
    workdir.mkdir()
    files = {"vocals": b"vocal-bytes", "instrumental": b"instrumental-bytes"}
    for name, content in files.items():
        (workdir / f"{name}.wav").write_bytes(content)
    task_uuid = str(uuid.uuid4())
    keys = store.put_stems(task_uuid, {name: str(workdir / f"{name}.wav") for name in files})
    root = config.storage.root
    assert keys == {name: f"{root}/stems/{task_uuid}/{name}.wav" for name in files}
    assert sorted(p.name for p in workdir.iterdir()) == ["instrumental.wav", "vocals.wav"], "the caller's to remove"
    assert all(store.ref_problem(k) is None for k in keys.values())

    urls = {name: store.link(task_uuid, name, key) for name, key in keys.items()}
    for name, url in urls.items():
        assert url.startswith(objectstore.endpoint_url) and "X-Amz-Signature=" in url
        response = requests.get(url, timeout=10)
        assert response.status_code == 200 and response.content == files[name]
    assert requests.get(f"{objectstore.endpoint_url}/{objectstore.bucket}/{keys['vocals']}",
                        timeout=10).status_code == 403, "without the signature the bucket refuses"
    # Valid above; refused once its TTL has passed (a Response that is not ok is falsy: hence the list).
    expired = wait_until(lambda: (r := requests.get(urls["vocals"], timeout=10)).status_code == 403 and [r], 30,
                         "the presigned link to expire", interval=0.5)
    assert b"expired" in expired[0].content


def test_a_refused_upload_stores_no_stem_at_all(config, objectstore):
    """Credentials that may read but not write: a real refusal by the server, not a mock."""
    readonly = StorageConfig(**objectstore.storage_settings(readonly=True, prefix=config.storage.prefix))
    store = open_storage(dataclasses.replace(config, storage=readonly))
    workdir = config.processor.output_dir / ".work-y"
    workdir.mkdir()
    for name in ("vocals", "instrumental"):
        (workdir / f"{name}.wav").write_bytes(b"x" * 1000)
    with pytest.raises(StorageError, match=r"AccessDenied|Access Denied"):
        store.put_stems("t1", {name: str(workdir / f"{name}.wav") for name in ("vocals", "instrumental")})
    assert objectstore.keys(config.storage.root) == []
    assert len(list(workdir.iterdir())) == 2, "kept, for the caller to try again"


class Hangup:
    """A server that closes every connection as soon as it accepts it, and counts them."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def _serve(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self):
        self.server.close()


def test_an_unreachable_store_is_a_storage_error_after_its_attempts_not_a_hang(config, tmp_path):
    hangup = Hangup()
    try:
        gone = dataclasses.replace(config.storage, endpoint_url=hangup.url, max_attempts=2, timeout=2)
        store = open_storage(dataclasses.replace(config, storage=gone))
        # storage.max_attempts tries in all (the first one included), then the error.
        with pytest.raises(StorageError, match="could not store the audio"):
            store.put_input(spooled(config, b"abc"), "x.wav")
        put = hangup.connections
        assert put == gone.max_attempts
        with pytest.raises(StorageError, match="could not read the audio object"):
            store.fetch_input(s3_task(f"{gone.root}/inputs/x.wav"))
        assert hangup.connections - put == gone.max_attempts
    finally:
        hangup.close()


def test_retention_deletes_expired_objects_and_keeps_fresh_ones(config, objectstore):
    config = dataclasses.replace(config, api=dataclasses.replace(config.api, result_retention=3600),
                                 uploader=UploaderConfig(spool_retention=7200))
    store = open_storage(config)
    root = config.storage.root
    client = objectstore.client()
    for key in (f"{root}/stems/a/vocals.wav", f"{root}/inputs/b.wav", "elsewhere/stems/c.wav"):
        client.put_object(Bucket=objectstore.bucket, Key=key, Body=b"x")
    assert store.sweep() == 0
    # An hour and a bit later the stems are past retention, the input not yet past spool_retention.
    assert store.sweep(now=time.time() + 3700) == 1
    assert objectstore.keys(root) == [f"{root}/inputs/b.wav"]
    assert store.sweep(now=time.time() + 7300) == 1
    assert objectstore.keys(root) == [] and "elsewhere/stems/c.wav" in objectstore.keys("elsewhere/")


def test_the_sweep_deletes_a_gone_tasks_objects_at_once_and_keeps_a_finished_ones(config, objectstore):
    """Objects named after a task go as the task's status says (the judge), whatever their age; others by age."""
    store = open_storage(config)
    root = config.storage.root
    client = objectstore.client()
    gone, kept, other = (str(uuid.uuid4()) for _ in range(3))
    keys = [f"{root}/stems/{gone}/vocals.wav", f"{root}/stems/{gone}/instrumental.wav", f"{root}/inputs/{gone}.wav",
            f"{root}/stems/{kept}/vocals.wav", f"{root}/inputs/{kept}.flac", f"{root}/inputs/{other}.wav"]
    for key in keys:
        client.put_object(Bucket=objectstore.bucket, Key=key, Body=b"x")
    verdicts = {gone: retention.DELETE, kept: retention.KEEP}
    assert store.sweep(judge=lambda task_uuid: verdicts.get(task_uuid, retention.BY_AGE)) == 3
    assert objectstore.keys(root) == sorted(keys[3:])
    # A year on, the kept task's objects still stay (its expiry decides), the orphan goes by its age.
    assert store.sweep(now=time.time() + 365 * 86400, judge=lambda t: verdicts.get(t, retention.BY_AGE)) == 1
    assert objectstore.keys(root) == sorted(keys[3:5])
    # DELETE /v1/tasks/<uuid>/stems: every object of the task at once, and again is no error.
    assert store.delete_task_files(kept) == 2 and store.delete_task_files(kept) == 0
    assert objectstore.keys(root) == []


@pytest.mark.parametrize("key, ok", [
    ("p/inputs/a.wav", True), ("p/stems/u/vocals.flac", True), ("p", False), ("p/", False), ("q/a", False),
    ("pp/a", False), ("p/../a", False), ("p/./a", False), ("p//a", False), ("/p/a", False), ("p/a\nb", False),
    ("p/a\\b", False), ("p/" + "é" * 600, False), (None, False), (5, False), ("", False),
])
def test_keys_are_checked_against_the_prefix(key, ok):
    assert (key_problem(key, "p") is None) == ok
