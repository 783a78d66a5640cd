import io
import json
import logging
import os
import socket
import struct

import pytest
import structlog

from support import logging_restored
from uvrd.runtime import journal, logs


@pytest.fixture(autouse=True)
def restore_logging():
    """configure() rewires the root logger; later tests in this worker must not log into a closed journal."""
    with logging_restored():
        yield


def parse_native(datagram: bytes) -> dict:
    fields, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, _, v = line.partition(b"=")
            fields[k.decode()] = v.decode()
            i = nl + 1
        else:
            (size,) = struct.unpack("<Q", datagram[nl + 1:nl + 9])
            fields[line.decode()] = datagram[nl + 9:nl + 9 + size].decode()
            i = nl + 9 + size + 1
    return fields


def test_json_lines_carry_the_task_and_nothing_from_the_previous_one():
    out = io.StringIO()
    logs.configure("uvrd-test", stream=out)
    log = structlog.get_logger("t")
    logs.bind_task(task_uuid="one", offset=1)
    log.info("first")
    logs.bind_task(task_uuid="two")
    log.info("second")
    logging.getLogger("kafka.coordinator").warning("stdlib %s", "too")
    a, b, c = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (a["event"], a["task_uuid"], a["offset"]) == ("first", "one", 1)
    assert b["task_uuid"] == "two" and "offset" not in b
    assert c["event"] == "stdlib too" and c["logger"] == "kafka.coordinator" and c["task_uuid"] == "two"
    logs.bind_task()


def test_under_journald_entries_are_native_with_fields(tmp_path, monkeypatch):
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    monkeypatch.setattr(journal, "SOCKET_PATH", path)
    monkeypatch.setattr(journal.JournalSender.__init__, "__defaults__", (path,))
    stream = open(tmp_path / "stdout", "w")
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    try:
        logs.configure("uvrd-processor", stream=stream)
        logs.bind_task(task_uuid="abc-123")
        structlog.get_logger("t").warning("multi\nline", stems={"vocals": "/o/v.flac"})
        fields = parse_native(server.recv(65536))
    finally:
        logs.bind_task()
        server.close()
        stream.close()
    assert fields["TASK_UUID"] == "abc-123" and fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "uvrd-processor"
    assert json.loads(fields["MESSAGE"])["event"] == "multi\nline"
    assert json.loads(fields["STEMS"]) == {"vocals": "/o/v.flac"}
    assert (tmp_path / "stdout").read_text() == "", "nothing doubled on the stream"


def test_field_names_follow_journald_rules():
    assert journal.field_name("task_uuid") == "TASK_UUID"
    assert journal.field_name("_private") == "PRIVATE"
    assert journal.field_name("9lives-x") == "LIVES_X"
