"""The one TOML configuration file, with ``UVRD_<SECTION>_<KEY>`` overrides.

Every section is a frozen dataclass: a daemon reads its configuration once at
start-up and never mutates it.  Any problem (unreadable file, bad TOML,
unknown section or key, value of the wrong type or out of range) raises
:class:`ConfigError` with one line naming the culprit; the CLI turns that into
exit status 78 (EX_CONFIG) so that ``RestartPreventExitStatus=78`` stops a
unit from restarting on it.  Reading the file, its drop-ins and the environment is
config/files.py's.
"""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass, field
from pathlib import Path

from uvrd.messages import STORAGE_KINDS
from uvrd.peers import numbers

EX_CONFIG = 78

# How a result and its task's offset are committed ("delivery" is the webhook's word).
COMMIT_MODES = ("exactly-once", "at-least-once")
# Formats audio-separator can write through ffmpeg/soundfile.
OUTPUT_FORMATS = ("flac", "wav", "mp3", "ogg", "opus", "m4a", "aiff")


class ConfigError(Exception):
    """A configuration problem, stated in one line."""


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "localhost:9092"
    client_id: str = "uvrd"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_plain_username: str = ""
    sasl_plain_password: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password: str = ""
    ssl_check_hostname: bool = True
    # A separation can outlast these: the processor keeps polling (paused) so
    # they only bound how fast a dead member is noticed.
    session_timeout_ms: int = 45000
    heartbeat_interval_ms: int = 3000
    max_poll_interval_ms: int = 300000
    request_timeout_ms: int = 30000

    def validate(self) -> None:
        _require(self.bootstrap_servers.strip() != "", "kafka.bootstrap_servers", "must not be empty")
        protocols = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
        _require(self.security_protocol in protocols, "kafka.security_protocol", f"must be one of {', '.join(protocols)}")
        _require(self.heartbeat_interval_ms < self.session_timeout_ms, "kafka.heartbeat_interval_ms",
                 "must be below kafka.session_timeout_ms")
        for name in ("session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms", "request_timeout_ms"):
            _require(getattr(self, name) > 0, f"kafka.{name}", "must be positive")


PRIORITIES = (1, 2, 3, 4, 5)
DEFAULT_PRIORITY = 3


@dataclass(frozen=True)
class TopicsConfig:
    tasks: str = "uvrd.tasks"
    results: str = "uvrd.results"
    dead_letter: str = "uvrd.dead-letter"
    # Compacted, keyed by task_uuid: the latest state of every task.
    status: str = "uvrd.status"
    # Compacted, keyed by task_uuid: the cancellations asked for and not yet settled.
    cancellations: str = "uvrd.cancellations"
    # Compacted, keyed by worker: each processor's latest heartbeat.
    workers: str = "uvrd.workers"
    # Keyed by task_uuid, kept a day: the webhook events tasks opt into (started, progress, requeued).
    events: str = "uvrd.events"
    # Compacted, keyed by dead letter (partition/offset): each replay done (uvrd/boards/replays.py).
    replays: str = "uvrd.replays"
    # Compacted, keyed by key name: the named API keys and their revocations (uvrd/keys/).
    keys: str = "uvrd.keys"
    # Compacted, keyed by a hash of (key, Idempotency-Key): each idempotent submission's tasks
    # (uvrd/api/idempotency.py).
    idempotency: str = "uvrd.idempotency"

    def task_topic(self, priority: int) -> str:
        """One topic per priority; the default priority keeps the plain name old producers use."""
        return self.tasks if priority == DEFAULT_PRIORITY else f"{self.tasks}.p{priority}"

    def task_topics(self) -> dict[str, int]:
        """Every task topic with its priority, highest priority first."""
        return {self.task_topic(p): p for p in sorted(PRIORITIES, reverse=True)}

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            _require(getattr(self, f.name).strip() != "", f"topics.{f.name}", "must not be empty")


@dataclass(frozen=True)
class ProcessorConfig:
    group_id: str = "uvrd-processor"
    model: str = "UVR-MDX-NET-Inst_HQ_4.onnx"
    # Further models a task may ask for by name; each is loaded on first use.
    extra_models: tuple[str, ...] = ()
    # "auto": a GPU when there is one, else the CPU (mixed fleets); "cuda": refuse to start on the CPU;
    # "cpu": never a GPU.  Unset: "cuda" in a per-GPU unit (uvrd-processor@N), else "auto".
    device: str = ""
    # Models one engine holds at once: loading one more unloads the least recently used (memory).
    max_loaded_models: int = 3
    model_dir: Path = Path("/var/lib/uvrd/models")
    spool_dir: Path = Path("/var/lib/uvrd/spool")
    output_dir: Path = Path("/var/lib/uvrd/output")
    output_format: str = "flac"
    commit: str = "exactly-once"
    # While one task is in the model, fetch and decode the next one's input and store the last one's
    # stems (pipeline.py); false: one task start to finish, the order the bench compares against.
    pipeline: bool = True
    # Within a priority, tasks of different API keys run in turns (processor/read_ahead.py), not in
    # offset order; false: offset order, the order before keys.
    fair_share: bool = True
    # With fair_share: the task records read ahead per priority level, at most, to choose among.
    fair_share_window: int = 256
    drain_timeout: float = 600.0
    job_timeout: float = 900.0
    # Times a job is re-run after its engine was killed (timeout) or died.
    job_retries: int = 2
    # Longer inputs are refused (an operator's cap: a job's time and disk grow with its length).
    max_audio_seconds: float = 43200.0
    # Inputs longer than chunk_seconds + chunk_overlap_seconds are separated in pieces of that length,
    # crossfaded over the overlap: the engine's memory is bounded by the piece, not the input.
    chunk_seconds: float = 300.0
    chunk_overlap_seconds: float = 10.0
    # Starts of one task (across restarts of this host's processor) before it
    # is failed as a task that keeps killing its worker.
    max_attempts: int = 3
    # The broker must have answered a heartbeat within this many seconds for
    # the worker to count as healthy.
    broker_timeout: float = 60.0
    # The engine child must have shown a heartbeat within this many seconds.
    engine_stall_timeout: float = 15.0
    engine_start_timeout: float = 600.0
    # Empty: derived from the host name and the unit instance, so that a
    # restarted worker fences its own zombie and no two workers share one.
    transactional_id: str = ""
    # audio-separator's MDX settings; hop_length must not exceed the model's n_fft.
    mdx_hop_length: int = 1024
    mdx_segment_size: int = 256
    mdx_batch_size: int = 1
    # A running task's progress goes to the status topic at most this often (seconds).
    progress_interval: float = 2.0
    # The worker's heartbeat goes to topics.workers this often, and whenever its state changes (seconds).
    heartbeat_interval: float = 10.0
    # Prometheus /metrics, HOST:PORT; a per-GPU unit (uvrd-processor@N) adds N to the port.  Empty: none.
    metrics_listen: str = "127.0.0.1:9470"

    @property
    def models(self) -> tuple[str, ...]:
        return (self.model, *[m for m in self.extra_models if m != self.model])

    def validate(self) -> None:
        _require(self.commit in COMMIT_MODES, "processor.commit", f"must be one of {', '.join(COMMIT_MODES)}")
        _require(self.device in ("", "auto", "cuda", "cpu"), "processor.device", "must be one of auto, cuda, cpu")
        _require(self.output_format in OUTPUT_FORMATS, "processor.output_format",
                 f"must be one of {', '.join(OUTPUT_FORMATS)}")
        _require(self.model.strip() != "", "processor.model", "must not be empty")
        for name in ("drain_timeout", "job_timeout", "broker_timeout", "engine_stall_timeout", "engine_start_timeout",
                     "max_audio_seconds", "progress_interval", "heartbeat_interval", "chunk_overlap_seconds"):
            _require(getattr(self, name) > 0, f"processor.{name}", "must be positive")
        _require(self.chunk_seconds >= 10, "processor.chunk_seconds", "must be at least 10")
        _require(self.chunk_overlap_seconds <= self.chunk_seconds / 2, "processor.chunk_overlap_seconds",
                 "must be at most half of processor.chunk_seconds")
        _require(self.job_retries >= 0, "processor.job_retries", "must not be negative")
        _require(self.max_attempts >= 1, "processor.max_attempts", "must be at least 1")
        _require(1 <= self.fair_share_window <= 100_000, "processor.fair_share_window", "must be from 1 to 100000")
        _require(self.max_loaded_models >= 1, "processor.max_loaded_models", "must be at least 1")
        for name in ("mdx_hop_length", "mdx_segment_size", "mdx_batch_size"):
            _require(getattr(self, name) > 0, f"processor.{name}", "must be positive")
        for name in ("model_dir", "spool_dir", "output_dir"):
            _require(getattr(self, name).is_absolute(), f"processor.{name}", "must be an absolute path")
        _require_listen_or_empty(self.metrics_listen, "processor.metrics_listen")


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


# The most api.max_files_per_request may be: a worker's open-file limit grows by it per thread
# (uvrd/api/server.py).
MAX_FILES_PER_REQUEST = 256


@dataclass(frozen=True)
class ApiConfig:
    listen: str = "127.0.0.1:8080"
    # Base of the links uvrd hands out (status URL, stem downloads, webhooks).  Empty: derived
    # from listen (see listen_url); set it whenever clients reach the api by another name.
    public_url: str = ""
    workers: int = 2
    # Bearer tokens for /v1; empty refuses every request but the health checks.
    tokens: tuple[str, ...] = ()
    # "user:password" pairs for the old service's POST /generate (HTTP Basic).
    basic_auth: tuple[str, ...] = ()
    # Bounds a whole request: a batch's files together.
    max_upload_bytes: int = 500 * 1024 * 1024
    # Audio files one multipart request may carry, each its own task.  Each holds a descriptor
    # (its spool file) while the request lasts, so the server's open-file limit grows with it.
    max_files_per_request: int = 32
    # One audio URL download, whole: connect, send and every byte of the answer.
    fetch_timeout: float = 30.0
    # hook_url and audio URLs may name loopback/private/link-local addresses only if true.
    allow_private_urls: bool = False
    # Signs stem download links (webhook and status links work without a token until they expire).
    link_secret: str = ""
    link_ttl: float = 7 * 86400.0
    drain_timeout: float = 30.0
    # A client must send its whole request head within header_timeout, and never pause longer
    # than body_timeout while sending a body: 408 otherwise, so slow clients cannot hold threads.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    # systemd's watchdog is pinged while the api answered ready (a worker, Kafka, the status
    # board, the producer) within this many seconds: a short broker outage does not restart it.
    ready_timeout: float = 60.0
    # How long a finished task's stems and input are kept: the task's expires_at is its finished_at
    # plus this.  Then the uploader's sweep deletes them (local files and the bucket) and the task
    # answers 410.  (Its old name, uploader.retention, still works.)
    result_retention: float = 7 * 86400.0
    # Prometheus /metrics of every worker together, HOST:PORT, served by the master process (not on
    # listen: it has no token, so loopback by default).  Empty: none.
    metrics_listen: str = "127.0.0.1:9461"

    def __post_init__(self) -> None:
        if not self.public_url:
            object.__setattr__(self, "public_url", self.listen_url)

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listens_on_wildcard(self) -> bool:
        return self.listen_host in WILDCARD_HOSTS

    @property
    def listen_url(self) -> str:
        """``http://<listen>``; for a wildcard address, this host's name (a guess: set public_url)."""
        host = socket.gethostname() if self.listens_on_wildcard else self.listen_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.listen.rpartition(':')[2]}"

    def validate(self) -> None:
        _require(_listen_port(self.listen) is not None, "api.listen", "must be HOST:PORT")
        _require(self.public_url.startswith(("http://", "https://")), "api.public_url", "must be an http(s) URL")
        _require(self.workers >= 1, "api.workers", "must be at least 1")
        _require(self.max_upload_bytes > 0, "api.max_upload_bytes", "must be positive")
        _require(1 <= self.max_files_per_request <= MAX_FILES_PER_REQUEST, "api.max_files_per_request",
                 f"must be 1 to {MAX_FILES_PER_REQUEST}")
        for pair in self.basic_auth:
            _require(":" in pair, "api.basic_auth", "entries must be user:password")
        for name in ("fetch_timeout", "link_ttl", "drain_timeout", "header_timeout", "body_timeout", "ready_timeout"):
            _require(getattr(self, name) > 0, f"api.{name}", "must be positive")
        _require(MIN_RESULT_RETENTION <= self.result_retention <= MAX_RESULT_RETENTION, "api.result_retention",
                 f"must be {MIN_RESULT_RETENTION:.0f} to {MAX_RESULT_RETENTION:.0f} seconds (10 years)")
        _require_listen_or_empty(self.metrics_listen, "api.metrics_listen")


# api.result_retention: a second at least (a finished task answers before it is gone), ten years at most
# (far beyond any sensible keeping, and well inside what a datetime holds).
MIN_RESULT_RETENTION = 1.0
MAX_RESULT_RETENTION = 10 * 365 * 86400.0

# Each delivery in flight is a thread and a connection.
MAX_UPLOADER_CONCURRENCY = 256


@dataclass(frozen=True)
class UploaderConfig:
    group_id: str = "uvrd-uploader"
    # Signs each webhook (X-Uvrd-Signature); receivers verify with the same secret.
    webhook_secret: str = ""
    # One delivery attempt, whole: connect, send and every byte of the answer.
    timeout: float = 10.0
    # Webhooks delivered at once: a slow or hanging receiver holds one of them, not the uploader.
    concurrency: int = 8
    max_attempts: int = 8
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    drain_timeout: float = 60.0
    broker_timeout: float = 60.0
    # A finished task's stems and input go at its expires_at (api.result_retention, which was called
    # uploader.retention); files no task claims (killed jobs' work directories) once that old.
    # Spool files older than this are orphans (a submission whose produce never happened).  A
    # queued task's input is this old only if the backlog is: keep it above the longest backlog.
    spool_retention: float = 7 * 86400.0
    retention_interval: float = 3600.0
    transactional_id: str = ""
    # Prometheus /metrics, HOST:PORT.  Empty: none.
    metrics_listen: str = "127.0.0.1:9462"

    def validate(self) -> None:
        _require(self.max_attempts >= 1, "uploader.max_attempts", "must be at least 1")
        _require(1 <= self.concurrency <= MAX_UPLOADER_CONCURRENCY, "uploader.concurrency",
                 f"must be 1 to {MAX_UPLOADER_CONCURRENCY}")
        for name in ("timeout", "backoff_initial", "backoff_max", "drain_timeout", "broker_timeout",
                     "spool_retention", "retention_interval"):
            _require(getattr(self, name) > 0, f"uploader.{name}", "must be positive")
        _require_listen_or_empty(self.metrics_listen, "uploader.metrics_listen")


ADDRESSING_STYLES = ("auto", "path", "virtual")
# S3 refuses parts under 5 MiB (but the last) and presigned URLs valid over 7 days (SigV4).
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PRESIGN_TTL = 7 * 86400.0


@dataclass(frozen=True)
class StorageConfig:
    # "local": spool_dir and output_dir on this host (one host); "s3": an S3-compatible bucket.
    backend: str = "local"
    # Empty: AWS's own endpoint for the region.
    endpoint_url: str = ""
    bucket: str = ""
    # Every object uvrd writes, reads or deletes lies under "<prefix>/".
    prefix: str = "uvrd"
    region: str = ""
    # Both empty: boto3's standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, instance roles).
    access_key_id: str = ""
    secret_access_key: str = ""
    addressing_style: str = "auto"
    # How long the stem links in webhooks and status answers stay valid.
    presign_ttl: float = 86400.0
    # Files above the threshold go up in parts of part_size and come down in ranges of it.
    multipart_threshold: int = 16 * 1024 * 1024
    part_size: int = 8 * 1024 * 1024
    timeout: float = 60.0
    # Tries of one request (connection errors, 5xx, throttling) before the operation fails.
    max_attempts: int = 4

    @property
    def root(self) -> str:
        return self.prefix.strip("/")

    def validate(self) -> None:
        _require(self.backend in STORAGE_KINDS, "storage.backend", f"must be one of {', '.join(STORAGE_KINDS)}")
        _require(self.addressing_style in ADDRESSING_STYLES, "storage.addressing_style",
                 f"must be one of {', '.join(ADDRESSING_STYLES)}")
        _require(not self.endpoint_url or self.endpoint_url.startswith(("http://", "https://")),
                 "storage.endpoint_url", "must be an http(s) URL or empty")
        _require(bool(self.root) and ".." not in self.root.split("/") and "//" not in self.root,
                 "storage.prefix", "must be a non-empty key prefix without '..' or empty segments")
        _require(bool(self.access_key_id) == bool(self.secret_access_key), "storage.access_key_id",
                 "and storage.secret_access_key must be set together (or both left empty)")
        _require(0 < self.presign_ttl <= MAX_PRESIGN_TTL, "storage.presign_ttl",
                 f"must be positive and at most {MAX_PRESIGN_TTL:g} s (S3's limit)")
        _require(self.part_size >= MIN_PART_BYTES, "storage.part_size", f"must be at least {MIN_PART_BYTES} bytes")
        _require(self.multipart_threshold >= MIN_PART_BYTES, "storage.multipart_threshold",
                 f"must be at least {MIN_PART_BYTES} bytes")
        _require(self.timeout > 0, "storage.timeout", "must be positive")
        _require(self.max_attempts >= 1, "storage.max_attempts", "must be at least 1")
        if self.backend == "s3":
            _require(self.bucket.strip() != "", "storage.bucket", "must be set when storage.backend is s3")


def _listen_port(listen: str) -> int | None:
    """The port of a ``HOST:PORT``, or None: plain ASCII digits from 1 to 65535 (uvrd/peers/numbers.py
    says why ``isdigit()`` and ``int()`` are not enough)."""
    host, _, port = listen.rpartition(":")
    number = numbers.decimal(port, max_digits=5)
    return number if host and number is not None and 0 < number < 65536 else None


@dataclass(frozen=True)
class BrokerConfig:
    """``uvrd broker``: the single-host broker (Tansu on a SeaweedFS store) that the package runs
    unless the operator points kafka.bootstrap_servers at a cluster and disables its unit."""
    # Loopback by default: the broker has no authentication.
    listen: str = "127.0.0.1:9092"
    # Topics, group offsets and transactions: everything queued lives here.
    data_dir: Path = Path("/var/lib/uvrd/broker")
    # Partitions of each task topic it creates: how many processors (GPUs) share the work.
    task_partitions: int = 4
    start_timeout: float = 90.0

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def validate(self) -> None:
        _require(_listen_port(self.listen) is not None, "broker.listen", "must be HOST:PORT")
        _require(self.task_partitions >= 1, "broker.task_partitions", "must be at least 1")
        _require(self.start_timeout > 0, "broker.start_timeout", "must be positive")


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    uploader: UploaderConfig = field(default_factory=UploaderConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    source: str = "built-in defaults"
    # "section.key" of every setting the file or the environment gave.
    explicit: frozenset[str] = frozenset()
    # One line per old key name the file or the environment still uses.
    deprecated: tuple[str, ...] = ()


SECTIONS: dict[str, type] = {"kafka": KafkaConfig, "topics": TopicsConfig, "processor": ProcessorConfig,
                             "api": ApiConfig, "uploader": UploaderConfig, "storage": StorageConfig,
                             "broker": BrokerConfig}


def _require_listen_or_empty(listen: str, key: str) -> None:
    if listen:
        host, _, port = listen.rpartition(":")
        _require(bool(host) and port.isascii() and port.isdigit() and 0 < int(port) < 65536, key,
                 "must be HOST:PORT or empty")


def _require(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {why}")
