"""gunicorn's gthread worker, made to hold many slow or idle clients.

Stock gthread gives a connection a thread as soon as its first byte arrives, and the thread then
blocks reading the rest of the request head with no time limit: a few clients sending one byte a
second hold every thread, and even ``GET /healthz`` waits.  Here the worker's main loop reads each
request head itself, without blocking, into a buffer per connection, with a deadline
(``api.header_timeout``) and a size cap.  A connection gets a thread only once its head is complete,
with the buffered bytes given back to gunicorn's parser (as gunicorn's own h2c code does); a
kept-alive connection goes the same way for its next request.  A head that does not arrive in time
is answered ``408`` and closed, one over the cap ``431``.

While a request is served, each socket read or write may wait at most ``api.body_timeout``: a
client that stops sending its body raises :class:`BodyTimeout` in the application (answered 408 by
uvrd/api/errors.py, and the connection closes), one that stops reading its answer is dropped.

This leans on gthread's internals (``enqueue_req``, ``finish_request``, ``murder_pending``,
``_cap_keepalive``, the TConn fields), so pyproject.toml pins gunicorn's major version.  TLS,
cleartext HTTP/2 and the uwsgi protocol, none of which uvrd configures, keep the stock behaviour.
"""

from __future__ import annotations

import json
import selectors
from collections import deque
from functools import partial

import structlog
from gunicorn import http
from gunicorn.workers.gthread import ThreadWorker

from uvrd.runtime.deadline import Deadline

log = structlog.get_logger("uvrd.api")

# Far above any head this api needs (a bearer token and a few short headers), and small enough
# that a thousand connections each holding one stay cheap.
MAX_HEAD_BYTES = 64 * 1024
READ_BYTES = 16 * 1024
HEAD_END = b"\r\n\r\n"


class BodyTimeout(Exception):
    """The client paused longer than ``api.body_timeout`` while sending the request body.

    Neither an OSError nor a ValueError on purpose: Werkzeug turns those, raised by a body read,
    into a 400 "client disconnected" or swallows them in the form parser.
    """


def refusal(status: str, message: str) -> bytes:
    """A complete HTTP response in the api's error shape, for a client no thread serves."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


class PendingHead:
    """A connection whose request head is still arriving."""

    __slots__ = ("buf", "conn", "deadline")

    def __init__(self, conn, held: bytes, deadline: Deadline):
        self.conn = conn
        self.buf = bytearray(held)
        self.deadline = deadline

    def complete(self, searched_from: int = 0) -> bool:
        return self.buf.find(HEAD_END, max(0, searched_from - len(HEAD_END) + 1)) >= 0


class _IdleLimitedReader:
    """A gunicorn body reader whose socket waits end in :class:`BodyTimeout`."""

    def __init__(self, reader, req, timeout: float):
        self.reader = reader
        self.req = req
        self.timeout = timeout

    def read(self, size):
        try:
            return self.reader.read(size)
        except TimeoutError:
            # The rest of the body is never read: the answer says so and the connection closes.
            self.req.force_close()
            raise BodyTimeout(f"the request body stopped arriving (nothing for {self.timeout:g} s)") from None


class SlowClientWorker(ThreadWorker):
    header_timeout = 10.0
    body_timeout = 30.0

    @classmethod
    def configured(cls, header_timeout: float, body_timeout: float) -> type[SlowClientWorker]:
        return type(cls.__name__, (cls,), {"header_timeout": header_timeout, "body_timeout": body_timeout})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Oldest deadline first: every head gets the same timeout, so appending keeps the order.
        self.heads: deque[PendingHead] = deque()
        self.reads_heads = (not self.cfg.is_ssl and self.cfg.http2_cleartext == "off"
                            and getattr(self.cfg, "protocol", "http") == "http")
        self.timed_out = refusal("408 Request Timeout",
                                 f"the request head did not arrive within {self.header_timeout:g} s")
        self.too_large = refusal("431 Request Header Fields Too Large",
                                 f"the request head is over {MAX_HEAD_BYTES} bytes")

    def run(self):
        # A private listener the master probes /readyz through (uvrd/api/watchdog.py), set before the
        # fork.  Always open, even with worker_connections reached: a busy worker is not a wedged one.
        listener = getattr(self, "probe_listener", None)
        if listener is not None:
            listener.setblocking(False)
            self.poller.register(listener, selectors.EVENT_READ, self.accept)
        super().run()

    # -- request heads, in the main loop --------------------------------------
    def enqueue_req(self, conn):
        """Every path to a thread (a new connection, a kept-alive one, pipelined bytes) starts here."""
        if not self.reads_heads:
            return super().enqueue_req(conn)
        held = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        head = PendingHead(conn, held, Deadline.after(self.header_timeout))
        if head.complete():
            return self._hand_over(head)
        conn.sock.setblocking(False)
        self.heads.append(head)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_head_readable, head))

    def on_head_readable(self, head: PendingHead, _sock) -> None:
        try:
            data = head.conn.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._forget(head)
            self._close(head.conn)
            return
        searched = len(head.buf)
        head.buf += data
        if head.complete(searched):
            self._forget(head)
            self._hand_over(head)
        elif len(head.buf) > MAX_HEAD_BYTES:
            self._refuse(head, self.too_large)

    def _hand_over(self, head: PendingHead) -> None:
        conn = head.conn
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(head.buf))
        conn.data_ready = True  # handle() must not wait for bytes it already holds
        super().enqueue_req(conn)

    def murder_pending(self):
        super().murder_pending()
        while self.heads and self.heads[0].deadline.expired():
            self._refuse(self.heads[0], self.timed_out)

    def _cap_keepalive(self, deadline):
        # gthread calls this as a graceful stop begins: heads still arriving get the same short linger
        # as kept-alive connections, and the master's probes go to the workers that stay.
        super()._cap_keepalive(deadline)
        for head in self.heads:
            head.deadline = head.deadline.earlier(Deadline(deadline))
        listener = getattr(self, "probe_listener", None)
        if listener is not None:
            try:
                self.poller.unregister(listener)
            except (KeyError, ValueError):
                pass
            listener.close()

    def _refuse(self, head: PendingHead, response: bytes) -> None:
        self._forget(head)
        sock = head.conn.sock
        try:
            sock.recv(MAX_HEAD_BYTES)  # unread bytes would turn the close into a reset
        except OSError:
            pass
        try:
            sock.send(response)
        except OSError:
            pass
        self._close(head.conn)

    def _forget(self, head: PendingHead) -> None:
        try:
            self.poller.unregister(head.conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.heads.remove(head)

    def _close(self, conn) -> None:
        self.nr_conns -= 1
        conn.close()

    # -- request bodies and answers, in a thread --------------------------------
    def handle_request(self, req, conn):
        if not self.reads_heads or req.body is None:
            return super().handle_request(req, conn)
        conn.sock.settimeout(self.body_timeout)
        reader = req.body.reader
        req.body.reader = _IdleLimitedReader(reader, req, self.body_timeout)
        try:
            return super().handle_request(req, conn)
        except TimeoutError:  # a body read times out as BodyTimeout: this is the answer's write
            log.info("client stopped reading its answer; connection closed", path=req.path,
                     waited_s=self.body_timeout)
            return False
        finally:
            # gunicorn's own drain of an unread body afterwards handles its timeouts itself.
            req.body.reader = reader
