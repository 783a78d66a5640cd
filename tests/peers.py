"""Hostile and slow HTTP peers on loopback, as raw TCP servers: they send whatever bytes a test
gives them, at whatever pace, which no well-behaved server library would.

- :class:`RawPeer` answers each request with the bytes ``answer(path)`` returns, then closes;
- :class:`Trickler` answers one byte every *interval* seconds, for ever;
- :class:`Hanger` takes the request and answers nothing until :meth:`Hanger.release`.

Each records the requests it read (path, headers, body) and the connections it holds open.
With *tls* (an ``ssl.SSLContext`` for a server), connections are TLS.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

REQUEST_READ_TIMEOUT_S = 10.0
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it was read


class _Server:
    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.tls = tls
        self.requests: list[Request] = []
        self.open_connections = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self.base = f"{'https' if tls else 'http'}://{host}:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return self.base + path

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
            self.open_connections += 1
        try:
            conn.settimeout(REQUEST_READ_TIMEOUT_S)
            if self.tls is not None and not self.handshake_first(conn):
                return
            if self.tls is not None:
                plain, conn = conn, self.tls.wrap_socket(conn, server_side=True)
                with self._lock:
                    self._conns.discard(plain)
                    self._conns.add(conn)
            request = _read_request(conn)
            if request is None:
                return
            with self._lock:
                self.requests.append(request)
            self.respond(conn, request)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self._lock:
                self.open_connections -= 1
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def handshake_first(self, conn: socket.socket) -> bool:
        """Whether a TLS peer does its handshake before anything else (a Hanger may not)."""
        return True

    def respond(self, conn: socket.socket, request: Request) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def _read_request(conn: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else ""
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return Request(path, headers, body, time.monotonic())


class RawPeer(_Server):
    """Answers each request with ``answer(path)`` (bytes), then closes the connection."""

    def __init__(self, answer: Callable[[str], bytes] | bytes, **kwargs):
        self.answer = answer if callable(answer) else (lambda path: answer)
        super().__init__(**kwargs)

    def respond(self, conn: socket.socket, request: Request) -> None:
        conn.sendall(self.answer(request.path))
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
            # Let the client read all of it before the close could reset the connection.
            conn.settimeout(2)
            while conn.recv(65536):
                pass


class Trickler(_Server):
    """Sends *at_once*, then *trickle* and after it "a" for ever, one byte every *interval* seconds.

    By default a status line, then a header that never ends; with a Content-Length in *at_once*, a
    download that never finishes."""

    def __init__(self, interval: float = 0.2, at_once: bytes = b"", trickle: bytes = b"HTTP/1.1 200 OK\r\nX-Trickle: ",
                 **kwargs):
        self.interval, self.at_once, self.trickle = interval, at_once, trickle
        self.bytes_sent = 0
        super().__init__(**kwargs)

    def respond(self, conn: socket.socket, request: Request) -> None:
        conn.sendall(self.at_once)
        i = 0
        while not self._closed.is_set():
            conn.sendall(self.trickle[i:i + 1] if i < len(self.trickle) else b"a")
            i += 1
            with self._lock:
                self.bytes_sent += 1
            time.sleep(self.interval)


class Hanger(_Server):
    """Takes the request (or, over TLS, not even the handshake) and answers nothing until released;
    then 200."""

    def __init__(self, **kwargs):
        self.released = threading.Event()
        super().__init__(**kwargs)

    def handshake_first(self, conn: socket.socket) -> bool:
        # Never answers the ClientHello: the client waits inside its TLS handshake.
        self.released.wait()
        return False

    def respond(self, conn: socket.socket, request: Request) -> None:
        conn.settimeout(None)
        self.released.wait()
        conn.sendall(OK)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        super().close()


def self_signed(directory: Path, host: str = "localhost") -> tuple[Path, Path]:
    """A certificate for *host* (and its key), made with the openssl command; a client that trusts
    the certificate file accepts the server."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


# -- hostile answers, for hypothesis ---------------------------------------------------------------

def hostile_answers():
    """Whole HTTP answers as bytes: status lines, headers and bodies that lie, overflow or are not
    HTTP at all, beside well-formed ones (so that what comes after the first checks is reached)."""
    from hypothesis import strategies as st

    def raw(text: str) -> bytes:
        return text.encode("utf-8", "surrogatepass")

    numbers = st.one_of(
        st.sampled_from(["０", "٣", "¹", "³", "5\u0663", "1e3", "-1", "+5", " 5", "5 ", "0x10", "nan", "inf", "1_0",
                         "9" * 40, "", "5, 5", "5,6", "Sun, 06 Nov 1994 08:49:37 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
                         "Mon, 32 Foo 0000 99:99:99 GMT", "Thu, 01 Jan 1970 00:00:00 -0000", "abc"]),
        st.integers(0, 10 ** 6).map(str), st.text(max_size=30))
    locations = st.one_of(
        st.sampled_from(["http://[::1", "http://[v7.x]/", "//\x00", "ftp://x/", "/again", "http://a b/",
                         "http://127.0.0.1:1/", "\udcff", "http://user:pw@h.example/", "https://localhost:1/",
                         "http://h.example:99999/", "http://h.example:0/", "", "?", "#"]),
        st.text(max_size=30))
    header = st.one_of(
        st.tuples(st.just("Content-Length"), numbers),
        st.tuples(st.just("Retry-After"), numbers),
        st.tuples(st.just("Transfer-Encoding"),
                  st.sampled_from(["chunked", "gzip, chunked", "identity", "chunked, chunked", "x", ""])),
        st.tuples(st.just("Content-Encoding"), st.sampled_from(["gzip", "deflate", "br", "zstd", "x-rot13", "gzip, gzip"])),
        st.tuples(st.just("Location"), locations),
        st.tuples(st.sampled_from(["Connection", "Content-Type", "Set-Cookie", "Trailer"]), st.text(max_size=20)),
        st.tuples(st.text(max_size=12), st.text(max_size=30)),
    ).map(lambda nv: raw(f"{nv[0]}: {nv[1]}"))
    odd_line = st.one_of(
        st.binary(max_size=40), st.just(b"X-Huge: " + b"a" * 70000), st.just(b"no colon here"),
        st.just(b" folded continuation"), st.just(b"\x00\xff: \x80"))
    status_code = st.one_of(
        st.integers(0, 1200).map(str), st.sampled_from(["200", "204", "301", "302", "303", "307", "429", "503"]),
        st.sampled_from(["２００", "٢٠٠", "2OO", "+200", "-1", "20", "2000", "99999999999999999999", ""]),
        st.text(max_size=5))
    version = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2", "HTTP/1.1 ", "ICY", "", "http/1.1"])
    well_formed = st.builds(lambda c: raw(f"HTTP/1.1 {c} Reason"), st.sampled_from(
        ["200", "201", "204", "301", "302", "303", "307", "308", "400", "410", "429", "500", "503"]))
    status_line = st.one_of(
        well_formed, well_formed,
        st.builds(lambda v, c, r: raw(f"{v} {c} {r}"), version, status_code, st.text(max_size=20)),
        st.binary(max_size=40))
    headers = st.one_of(st.lists(st.one_of(header, odd_line), max_size=6),
                        st.just([b"X-Many: yes"] * 150))
    body = st.one_of(
        st.binary(max_size=200),
        st.sampled_from([b"5\r\nab\r\n0\r\n\r\n", b"zz\r\nabc\r\n", b"ffffffffffffffffffff\r\nab", b"0\r\n\r\n",
                         b"3\r\nabc\r\n", b"3;ext\r\nabc\r\n0\r\nTrailer: x\r\n\r\n", b"\x1f\x8b\x08\x00garbage",
                         b"-1\r\n"]))
    eol = st.one_of(st.just(b"\r\n"), st.sampled_from([b"\r\n", b"\n", b"\r"]))
    anything = st.builds(lambda s, hs, b, e: s + e + b"".join(h + e for h in hs) + e + b,
                         status_line, headers, body, eol)

    def answer(code: str, *lines: bytes, body: bytes = b"") -> bytes:
        return raw(f"HTTP/1.1 {code} Reason\r\n") + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body

    # Well-formed but for one lie, so that each lie reaches the code that reads it.
    redirect = st.builds(lambda code, location: answer(code, raw(f"Location: {location}"), b"Content-Length: 0"),
                         st.sampled_from(["301", "302", "303", "307", "308"]), locations)
    retry = st.builds(lambda code, value: answer(code, raw(f"Retry-After: {value}"), b"Content-Length: 0"),
                      st.sampled_from(["429", "503"]), numbers)
    length = st.builds(lambda code, value, b: answer(code, raw(f"Content-Length: {value}"), body=b),
                       st.sampled_from(["200", "500"]), numbers, body)
    chunked = st.builds(lambda code, b: answer(code, b"Transfer-Encoding: chunked", body=b),
                        st.sampled_from(["200", "503"]), body)
    return st.one_of(anything, redirect, retry, length, chunked)
