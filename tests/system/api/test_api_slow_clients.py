"""Slow and idle clients against the real ``uvrd api``: real sockets that connect and say nothing,
trickle a request head a byte at a time, or stop in the middle of a body.  None of them may keep
a normal client waiting, and each ends with a 408."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

from support import wait_until
from uvrd.api.server import THREADS_PER_WORKER
from uvrd.api.worker import MAX_HEAD_BYTES

IDLE = 200
TRICKLING = 200
TRICKLE_S = 0.5
HEADER_TIMEOUT_S = 6.0
# Never finished: at one byte per TRICKLE_S it outlasts HEADER_TIMEOUT_S.
TRICKLED_HEAD = b"POST /v1/tasks HTTP/1.1\r\nHost: uvrd\r\nAuthorization: Bearer t0k3n\r\nContent-Length: 10\r\n"


def address(server) -> tuple[str, int]:
    host, _, port = server.url.removeprefix("http://").rpartition(":")
    return host, int(port)


class SlowClient:
    def __init__(self, addr, trickles: bool):
        self.sock = socket.create_connection(addr, timeout=5)
        self.sock.setblocking(False)
        self.trickles = trickles
        self.connected_at = time.monotonic()
        self.sent = 0
        self.answer = b""
        self.answered_at: float | None = None
        self.closed = False

    def trickle(self) -> None:
        if self.trickles and not self.closed and self.sent < len(TRICKLED_HEAD):
            try:
                self.sent += self.sock.send(TRICKLED_HEAD[self.sent:self.sent + 1])
            except OSError:
                pass

    def read(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.closed = True
                self.sock.close()
                return
            self.answer += data
            self.answered_at = self.answered_at or time.monotonic()

    @property
    def waiting(self) -> bool:
        """Still connected and not answered: the api is holding it."""
        self.read()
        return not self.closed and not self.answer


class SlowCrowd:
    """Idle and trickling clients, one thread sending every trickler its next byte each TRICKLE_S."""

    def __init__(self, addr, idle: int, trickling: int):
        self.clients = [SlowClient(addr, trickles=i < trickling) for i in range(idle + trickling)]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(TRICKLE_S):
            for c in self.clients:
                c.trickle()

    def waiting(self) -> int:
        return sum(c.waiting for c in self.clients)

    def all_answered(self) -> bool:
        return all(not c.waiting for c in self.clients)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for c in self.clients:
            c.sock.close()


def test_hundreds_of_slow_clients_do_not_keep_a_submission_waiting(api_stack, sample, record_property):
    server = api_stack.start(header_timeout=HEADER_TIMEOUT_S, workers=2)
    crowd = SlowCrowd(address(server), IDLE, TRICKLING)
    try:
        trickling = [c for c in crowd.clients if c.trickles]
        wait_until(lambda: all(c.sent >= 2 for c in trickling), 10, "every trickler to have sent bytes")

        started = time.monotonic()
        response = server.upload(sample)
        submit_s = time.monotonic() - started
        held = crowd.waiting()
        assert response.status_code == 202, response.text
        assert server.get("/healthz").status_code == 200
        assert held == IDLE + TRICKLING, f"only {held} slow clients were still held during the submission"
        record_property("summary", f"slow clients held={held} (idle={IDLE} trickling={TRICKLING}) "
                                   f"submit_202_s={submit_s:.3f} header_timeout_s={HEADER_TIMEOUT_S:g}")

        wait_until(crowd.all_answered, HEADER_TIMEOUT_S + 20, "every slow client to be answered")
        for c in crowd.clients:
            assert c.answer.startswith(b"HTTP/1.1 408 "), c.answer[:200]
            assert b"Connection: close" in c.answer
            assert "did not arrive within 6 s" in json.loads(c.answer.partition(b"\r\n\r\n")[2])["error"]
            assert c.answered_at - c.connected_at >= HEADER_TIMEOUT_S - 0.1, "answered before its deadline"
    finally:
        crowd.close()
    assert server.upload(sample).status_code == 202


def stalled_request(addr, content_type: str, first_bytes: bytes) -> socket.socket:
    """A complete head announcing a large body, then the first bytes of it, then nothing."""
    sock = socket.create_connection(addr, timeout=30)
    sock.sendall(f"POST /v1/tasks HTTP/1.1\r\nHost: uvrd\r\nAuthorization: Bearer t0k3n\r\n"
                 f"Content-Type: {content_type}\r\nContent-Length: 100000\r\n\r\n".encode() + first_bytes)
    return sock


def read_answer(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    sock.close()
    return answer


def test_a_body_that_stops_arriving_is_408_and_frees_its_thread(api_stack, sample):
    server = api_stack.start(body_timeout=2.0, workers=1)
    addr = address(server)
    form_start = (b"--b\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n\r\n"
                  + sample.read_bytes()[:1000])
    # Twice as many as the worker has threads: the second half is served only by threads the first frees.
    kinds = [("application/json", b'{"audio": "http://'), ("multipart/form-data; boundary=b", form_start)]
    socks = [stalled_request(addr, *kinds[i % 2]) for i in range(2 * THREADS_PER_WORKER)]
    answers: list[bytes] = []
    readers = [threading.Thread(target=lambda s=s: answers.append(read_answer(s))) for s in socks]
    for r in readers:
        r.start()
    for r in readers:
        r.join(60)
    assert len(answers) == len(socks)
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert b"Connection: close" in answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {
            "error": "the request body stopped arriving (nothing for 2 s)"}
    wait_until(lambda: [e["status"] for e in server.daemon.events("request")].count(408) == len(socks), 10,
               "an access line for each")
    assert not server.daemon.events("request failed"), "no 500 behind the 408s"
    wait_until(lambda: not api_stack.incoming(), 10, "the stalled uploads' temporary files to go")
    assert server.upload(sample).status_code == 202


def test_a_client_that_stops_reading_its_answer_is_dropped(api_stack, kafka):
    server = api_stack.start(body_timeout=2.0, workers=1)
    task_uuid = str(uuid.uuid4())
    stem = api_stack.output / task_uuid / "vocals.wav"
    stem.parent.mkdir()
    with open(stem, "wb") as f:
        f.truncate(256 * 1024 * 1024)  # far more than the sockets' buffers hold
    kafka.send(api_stack.topics.status, {"task_uuid": task_uuid, "state": "succeeded", "stems": {"vocals": str(stem)}})
    wait_until(lambda: server.get(f"/v1/tasks/{task_uuid}", headers=server.AUTH).status_code == 200, 15,
               "the status board to see the task")

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address(server))
    sock.sendall(f"GET /v1/tasks/{task_uuid}/stems/vocals HTTP/1.1\r\nHost: uvrd\r\n"
                 f"Authorization: Bearer {server.TOKEN}\r\n\r\n".encode())
    assert sock.recv(16).startswith(b"HTTP/1.1 200")  # then nothing more is read for a while
    wait_until(lambda: server.daemon.events("client stopped reading its answer; connection closed"), 30,
               "the api to give up on the reader")
    received = 0
    sock.settimeout(10)
    try:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        pass
    sock.close()
    assert received < stem.stat().st_size, "the connection ended before the whole file was sent"
    assert server.get("/healthz").status_code == 200


def read_until(sock: socket.socket, predicate, timeout: float = 20) -> bytes:
    got, sock_timeout = b"", sock.gettimeout()
    sock.settimeout(timeout)
    try:
        while not predicate(got):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    finally:
        sock.settimeout(sock_timeout)
    return got


def test_pipelined_and_kept_alive_requests_meet_the_same_head_deadline(api_stack):
    server = api_stack.start(header_timeout=2.0)
    sock = socket.create_connection(address(server), timeout=20)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: uvrd\r\n\r\n" * 2)  # the second one pipelined
    answers = read_until(sock, lambda got: got.count(b"HTTP/1.1 200 ") == 2 and got.endswith(b"}\n"))
    assert answers.count(b"HTTP/1.1 200 ") == 2 and b"Connection: keep-alive" in answers
    sock.sendall(b"GET /heal")  # a third on the kept-alive connection, which never ends
    late = read_until(sock, lambda got: False)
    assert late.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 2 s" in late
    sock.close()

    huge = socket.create_connection(address(server), timeout=20)
    huge.sendall(b"GET /healthz HTTP/1.1\r\nX-Padding: " + b"a" * (MAX_HEAD_BYTES + 1))
    refused = read_until(huge, lambda got: False)
    assert refused.startswith(b"HTTP/1.1 431 "), refused[:200]
    huge.close()
    assert server.get("/healthz").status_code == 200
