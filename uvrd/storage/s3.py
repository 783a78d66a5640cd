"""The S3 backend: inputs and stems as objects in one bucket, under ``storage.prefix``.

Layout: ``<prefix>/inputs/<task_uuid>.<ext>`` and ``<prefix>/stems/<task_uuid>/<file>``.
Files move as streams: above ``multipart_threshold`` an upload goes in parts of
``part_size`` and a download in ranged GETs of that size, so no file is ever
held whole in memory.  A multipart upload that fails is aborted by the transfer
manager, so a broken upload leaves no object behind to be mistaken for a stem.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from datetime import datetime, UTC
from pathlib import Path, PurePosixPath

import boto3
import structlog
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from uvrd.messages import BadMessage, Task, key_problem
from uvrd.storage import Storage, StorageError
from uvrd.storage import retention
from uvrd.storage.local import delete_local_files, owned_name, sweep_local

log = structlog.get_logger("uvrd.storage")

ERRORS = (BotoCoreError, ClientError, Boto3Error, OSError)
# DeleteObjects takes at most this many keys per call.
DELETE_BATCH = 1000
INPUT_DIR_PREFIX = ".input-"


def reason(e: Exception) -> str:
    return str(e) or type(e).__name__


def _not_found(e: ClientError) -> bool:
    error = e.response.get("Error", {})
    return error.get("Code") in ("404", "NoSuchKey", "NotFound") or \
        e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404


class S3Storage(Storage):
    name = "s3"

    def __init__(self, config):
        super().__init__(config)
        self.cfg = config.storage
        self.bucket = self.cfg.bucket
        self.root = self.cfg.root
        # Memory per transfer: the parts in flight, plus a short queue of 256 KiB writes on the way down.
        self.transfer = TransferConfig(multipart_threshold=self.cfg.multipart_threshold,
                                       multipart_chunksize=self.cfg.part_size, max_concurrency=4, max_io_queue=16)
        self._client = None
        self._lock = threading.Lock()

    @property
    def client(self):
        """Made on first use: after a fork (gunicorn workers), never before it."""
        with self._lock:
            if self._client is None:
                s = self.cfg
                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=s.endpoint_url or None, region_name=s.region or None,
                    aws_access_key_id=s.access_key_id or None, aws_secret_access_key=s.secret_access_key or None,
                    config=BotoConfig(signature_version="s3v4", s3={"addressing_style": s.addressing_style},
                                      connect_timeout=s.timeout, read_timeout=s.timeout,
                                      retries={"total_max_attempts": s.max_attempts, "mode": "standard"}))
            return self._client

    def input_key(self, name: str) -> str:
        return f"{self.root}/inputs/{name}"

    def stem_key(self, task_uuid: str, filename: str) -> str:
        return f"{self.root}/stems/{task_uuid}/{filename}"

    # -- api -----------------------------------------------------------------
    def put_input(self, spooled: Path, name: str) -> str:
        key = self.input_key(name)
        started = time.monotonic()
        try:
            self.client.upload_file(str(spooled), self.bucket, key, Config=self.transfer)
        except ERRORS as e:
            raise StorageError(f"could not store the audio in the bucket: {reason(e)}") from None
        finally:
            spooled.unlink(missing_ok=True)  # the spool only stages it on its way to the bucket
        # object_key, not key: KEY= is the API key a request came with (uvrd/api/auth.py)
        log.info("input stored", object_key=key, duration_ms=round((time.monotonic() - started) * 1000, 1))
        return key

    def discard_input(self, ref: str) -> None:
        self._delete(ref)

    # -- processor -----------------------------------------------------------
    def fetch_input(self, task: Task) -> Path:
        key = task.audio_key

        def bad(message: str) -> BadMessage:
            return BadMessage(message, task.task_uuid, task.hook_url)

        problem = key_problem(key, self.root)
        if problem:
            raise bad(f"audio_key {key[:200]!r} {problem}")
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if _not_found(e):
                raise bad(f"audio object {key!r} does not exist in the bucket") from None
            raise StorageError(f"could not read the audio object {key!r}: {reason(e)}") from None
        except ERRORS as e:
            raise StorageError(f"could not read the audio object {key!r}: {reason(e)}") from None
        if head.get("ContentLength") == 0:
            raise bad(f"audio object {key!r} is empty")
        # Private (0700), and under output_dir so that retention clears it after a crash.
        workdir = Path(tempfile.mkdtemp(prefix=f"{INPUT_DIR_PREFIX}{task.task_uuid}-",
                                        dir=self.config.processor.output_dir))
        path = workdir / PurePosixPath(key).name
        started = time.monotonic()
        try:
            self.client.download_file(self.bucket, key, str(path), Config=self.transfer)
        except ERRORS as e:
            shutil.rmtree(workdir, ignore_errors=True)
            if isinstance(e, ClientError) and _not_found(e):
                raise bad(f"audio object {key!r} does not exist in the bucket") from None
            raise StorageError(f"could not download the audio object {key!r}: {reason(e)}") from None
        log.info("input downloaded", object_key=key, audio_bytes=path.stat().st_size,
                 duration_ms=round((time.monotonic() - started) * 1000, 1))
        return path

    def release_input(self, path: Path) -> None:
        if path.parent.name.startswith(INPUT_DIR_PREFIX):
            shutil.rmtree(path.parent, ignore_errors=True)

    def remove_input(self, task: Task) -> None:
        name = task.audio_key.rpartition("/")[2]
        if task.audio_key == self.input_key(name) and owned_name(name, task.task_uuid):
            self._delete(task.audio_key)

    def put_stems(self, task_uuid: str, stems: dict[str, str]) -> dict[str, str]:
        stored: dict[str, str] = {}
        for name, path in stems.items():
            key = self.stem_key(task_uuid, Path(path).name)
            try:
                self.client.upload_file(path, self.bucket, key, Config=self.transfer)
            except ERRORS as e:
                # Stems already up would only be orphans next to a failed task.
                for done in stored.values():
                    self._delete(done)
                raise StorageError(f"could not store the stem {name!r} in the bucket: {reason(e)}") from None
            stored[name] = key
        log.info("stems stored", keys=list(stored.values()))
        return stored

    # -- uploader, api -------------------------------------------------------
    def ref_problem(self, ref: str) -> str | None:
        return key_problem(ref, self.root)

    def link(self, task_uuid: str, stem: str, ref: str, ttl: float | None = None) -> str:
        seconds = self.cfg.presign_ttl if ttl is None else min(self.cfg.presign_ttl, ttl)
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": ref},
                                                  ExpiresIn=max(1, int(seconds)))

    # -- retention -----------------------------------------------------------
    def sweep(self, now: float | None = None, judge: retention.Judge | None = None) -> int:
        now = time.time() if now is None else now
        removed = sweep_local(self.config, now, judge)
        for folder, max_age in (("stems", self.config.api.result_retention),
                                ("inputs", self.config.uploader.spool_retention)):
            try:
                removed += self._sweep_objects(f"{self.root}/{folder}/", now - max_age, judge)
            except ERRORS as e:
                log.warning("could not sweep expired objects", prefix=f"{self.root}/{folder}/", error=reason(e))
        return removed

    def delete_task_files(self, task_uuid: str) -> int:
        """The bucket's objects of the task (its stems folder, its input), and this host's files."""
        removed = delete_local_files(self.config, task_uuid)
        if retention.stems_task(task_uuid) is None:
            return removed
        try:
            keys = self._list(f"{self.root}/stems/{task_uuid}/")
            keys += [k for k in self._list(f"{self.root}/inputs/{task_uuid}.")
                     if retention.input_task(k.rpartition("/")[2]) == task_uuid]
            return removed + self._delete_keys(keys)
        except ERRORS as e:
            raise StorageError(f"could not delete the objects of task {task_uuid}: {reason(e)}") from None

    def _list(self, prefix: str) -> list[str]:
        return [o["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
                for o in page.get("Contents", [])]

    def _sweep_objects(self, prefix: str, cutoff: float, judge: retention.Judge | None = None) -> int:
        """The objects under *prefix* (``<root>/stems/`` or ``<root>/inputs/``) that are done with: a
        task's as *judge* says, the others once last modified before *cutoff*."""
        cutoff_dt = datetime.fromtimestamp(cutoff, UTC)
        task_of = retention.input_task if prefix.endswith("/inputs/") else retention.stems_task
        expired = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                task_uuid = task_of(o["Key"][len(prefix):].partition("/")[0]) if judge is not None else None
                decided = judge(task_uuid) if judge is not None and task_uuid is not None else retention.BY_AGE
                if decided == retention.DELETE or (decided == retention.BY_AGE and o["LastModified"] < cutoff_dt):
                    expired.append(o["Key"])
        removed = self._delete_keys(expired)
        if removed:
            log.info("retention sweep of objects", prefix=prefix, removed=removed)
        return removed

    def _delete_keys(self, keys: list[str]) -> int:
        removed = 0
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i:i + DELETE_BATCH]
            answer = self.client.delete_objects(Bucket=self.bucket,
                                                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            for error in answer.get("Errors", []):
                log.warning("could not delete an expired object", object_key=error.get("Key"), error=error.get("Message"))
            removed += len(batch) - len(answer.get("Errors", []))
        return removed

    def _delete(self, key: str) -> None:
        """Best effort: whatever is left behind, retention deletes later."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except ERRORS as e:
            log.warning("could not delete an object", object_key=key, error=reason(e))
