"""The single-host broker's parts, fast: the Kafka probe that READY=1 and WATCHDOG=1 rest on, the lock
that keeps two brokers off one data directory, and the environment Tansu is started with."""

from __future__ import annotations

import socket
import threading

import pytest

from uvrd.broker.local import BrokerInUse, LocalBroker, answers_kafka
from uvrd.broker.loopback import free_port
from uvrd.broker.tansu import TansuBroker


def test_the_probe_gets_an_answer_from_a_kafka_broker(broker):
    host, port = broker.bootstrap.rsplit(":", 1)
    assert answers_kafka(host, int(port))


def serve_once(reply: bytes | None) -> int:
    """A TCP server on loopback that answers one connection with *reply* (None: never answers)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            if reply is not None:
                conn.sendall(reply)
                return
            conn.recv(1024)  # holds the connection until the client gives up
        server.close()
    threading.Thread(target=serve, daemon=True).start()
    return port


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 400 Bad Request\r\n\r\n",            # another service on the port
    b"\x00\x00\x00\x0a\x00\x00\x00\x01\x00\x00",    # a well-formed answer to some other request
    b"\x00\x00",                                     # cut short
    None,                                            # silence
], ids=["http", "other-correlation", "short", "silent"])
def test_the_probe_says_no_to_anything_but_a_kafka_answer(reply):
    assert not answers_kafka("127.0.0.1", serve_once(reply), timeout=1.0)


def test_the_probe_says_no_when_nothing_listens():
    assert not answers_kafka("127.0.0.1", free_port(), timeout=1.0)


def test_a_second_broker_on_one_data_directory_is_refused_before_it_starts_anything(tmp_path):
    first = LocalBroker(tmp_path / "data", port=free_port())
    first.data_dir.mkdir(parents=True)
    first._take_lock()
    try:
        second = LocalBroker(tmp_path / "data", port=free_port())
        with pytest.raises(BrokerInUse, match="another broker uses"):
            second.start()
        assert second.store.proc is None and second.broker.proc is None
    finally:
        first._release_lock()


def test_tansu_ignores_the_callers_own_tansu_and_aws_variables(monkeypatch, tmp_path):
    """A daemon's environment must not move the broker's storage or listener: only what it is given counts."""
    monkeypatch.setenv("STORAGE_ENGINE", "s3://elsewhere/")
    monkeypatch.setenv("LISTENER_URL", "tcp://0.0.0.0:1")
    monkeypatch.setenv("AWS_ENDPOINT", "http://198.51.100.1")
    with TansuBroker(log_path=tmp_path / "broker.log") as b:
        host, port = b.bootstrap.rsplit(":", 1)
        assert answers_kafka(host, int(port))
        env = open(f"/proc/{b.proc.pid}/environ", "rb").read().split(b"\0")
        assert not [v for v in env if v.startswith((b"STORAGE_ENGINE=", b"LISTENER_URL=", b"AWS_"))]


def test_a_store_port_taken_before_weed_binds_it_is_drawn_again(tmp_path):
    """Another program binds one of the object store's ports between the draw and weed's start (CI:
    the filer's gRPC port, taken by an outgoing connection): the store still starts, on fresh ports."""
    from uvrd.broker.object_store import ObjectStore

    store = ObjectStore(tmp_path / "data", log_path=tmp_path / "weed.log")
    taken = store.ports["filer.port.grpc"]
    with socket.create_server(("127.0.0.1", taken)), store:
        assert store.ports["filer.port.grpc"] != taken
        store.client().put_object(Bucket=store.bucket, Key="k", Body=b"stored")
        assert store.client().get_object(Bucket=store.bucket, Key="k")["Body"].read() == b"stored"

