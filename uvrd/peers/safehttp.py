"""Outbound HTTP to addresses users chose (hook_url, audio URLs), without SSRF.

A URL is checked by resolving its host once and refusing any address that is
not globally routable (loopback, private, link-local, CGNAT, multicast,
reserved) unless the configuration allows it.  The connection then goes to
the address that was checked, never to a second DNS answer, with the host
name kept for the Host header and TLS (SNI and certificate checks).
Redirects are followed only through the same check.

Every request has one :class:`~uvrd.runtime.deadline.Deadline` for all of it: connect,
send, the whole answer, redirects included.  urllib3's timeouts bound each
socket operation, not the exchange, so a peer that trickles its answer a byte
at a time would hold the caller for ever; a timer shuts the connection's socket
down when the deadline passes, which ends any read or write in progress (TLS
too: the timer shuts down the kernel socket underneath), and
:class:`DeadlineExceeded` replaces whatever the broken read raised.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import threading
from dataclasses import dataclass
from typing import BinaryIO
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
import urllib3.connection

from uvrd.peers import numbers as peer_numbers
from uvrd.runtime.deadline import Deadline

MAX_REDIRECTS = 3


class UnsafeURL(ValueError):
    """The URL may not be fetched or called; the message says why."""


class TooLarge(Exception):
    pass


class DeadlineExceeded(Exception):
    """The exchange (connect, send, the whole answer, redirects) outlasted its deadline."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query
    address: str


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict
    body: bytes


Resolver = Callable[[str, int], list[str]]


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def check_url(url: str, allow_private: bool, resolver: Resolver = _resolve) -> Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UnsafeURL(f"not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL(f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise UnsafeURL("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeURL("credentials in the URL are not allowed")
    if port == 0:  # not "the default port": nothing listens there, and 0 would silently become 80
        raise UnsafeURL("port 0 is not a port a URL can name")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = resolver(parts.hostname, port)
    except (OSError, UnicodeError) as e:
        raise UnsafeURL(f"host {parts.hostname!r} does not resolve: {e}") from None
    if not addresses:
        raise UnsafeURL(f"host {parts.hostname!r} does not resolve")
    if not allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            ip = getattr(ip, "ipv4_mapped", None) or ip
            if not ip.is_global or ip.is_multicast:
                raise UnsafeURL(f"host {parts.hostname!r} resolves to {address}, which is not a public address")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port, path, addresses[0])


def request(method: str, url: str, *, allow_private: bool, deadline: Deadline, body: bytes | None = None,
            headers: dict | None = None, max_bytes: int = 1 << 20, sink: BinaryIO | None = None,
            resolver: Resolver = _resolve) -> Response:
    """One HTTP exchange to a checked address, over before *deadline*.  With *sink*, the body streams into it.

    Raises UnsafeURL, TooLarge, DeadlineExceeded, or urllib3/OS errors for network failures.
    (Resolving a name is bounded by the system resolver's own timeouts, not by *deadline*: a
    thread cannot interrupt getaddrinfo; an exchange is not started once *deadline* has passed.)
    """
    with _Cutoff(deadline) as cutoff:
        for _ in range(MAX_REDIRECTS + 1):
            target = check_url(url, allow_private, resolver)
            response = _exchange(method, target, body, headers or {}, cutoff)
            try:
                location = response.headers.get("Location")
                if response.status in (301, 302, 303, 307, 308) and location:
                    url = _redirect(url, location)
                    if response.status == 303:
                        method, body = "GET", None
                    continue
                data = _read(response, max_bytes, sink)
                return Response(response.status, dict(response.headers), data)
            finally:
                response.release_conn()
        raise UnsafeURL(f"more than {MAX_REDIRECTS} redirects")


def _redirect(url: str, location: str) -> str:
    try:
        return urljoin(url, location)
    except ValueError as e:  # "http://[::1", say: urljoin parses what the peer sent
        raise UnsafeURL(f"the redirect's Location is not a valid URL: {e}") from None


class _Cutoff:
    """Ends an exchange at its deadline: shuts down every socket it opened once the deadline passes.

    The sockets are watched through duplicates of their descriptors: TLS wrapping detaches the
    socket object urllib3 created, and a duplicate also keeps the descriptor from being closed and
    reused by another connection before the timer is cancelled.
    """

    def __init__(self, deadline: Deadline):
        self.deadline = deadline
        self.budget = deadline.remaining()
        self.fired = False
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._done = False
        self._timer: threading.Timer | None = None

    def __enter__(self) -> _Cutoff:
        if not math.isinf(self.budget):
            self._timer = threading.Timer(self.budget, self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, kind, error, tb) -> None:
        with self._lock:
            self._done = True
            if self._timer is not None:
                self._timer.cancel()
            for sock in self._watched:
                sock.close()
            self._watched.clear()
        # What a cut-off causes: a network error, or (a close-delimited body) an answer cut short.
        cut = self.fired or (self.deadline.expired() and error is not None)
        if cut and (error is None or isinstance(error, (urllib3.exceptions.HTTPError, OSError))):
            raise self.exceeded() from error

    def exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"the exchange took over {self.budget:.3g} s")

    def socket_timeout(self) -> float | None:
        """Each socket operation's timeout: what is left of the budget; DeadlineExceeded if nothing."""
        left = self.deadline.remaining()
        if left <= 0:
            raise self.exceeded()
        return None if math.isinf(left) else left

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self._done:
                return
            watched = sock.dup()
            self._watched.append(watched)
            if self.fired:
                _shut(watched)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            for sock in self._watched:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected (any more): nothing to end


class _WatchedConnection:
    """urllib3's connection with its new socket handed to the exchange's :class:`_Cutoff`."""

    def __init__(self, *args, cutoff: _Cutoff, **kwargs):
        super().__init__(*args, **kwargs)
        self._cutoff = cutoff

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self._cutoff.watch(sock)
        return sock


class _HTTPConnection(_WatchedConnection, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_WatchedConnection, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _exchange(method: str, target: Target, body: bytes | None, headers: dict, cutoff: _Cutoff):
    host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    timeout = cutoff.socket_timeout()
    if target.scheme == "https":
        pool = _HTTPSPool(
            target.address, target.port, server_hostname=target.host, assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(), timeout=timeout, retries=False, maxsize=1,
            cutoff=cutoff)
    else:
        pool = _HTTPPool(target.address, target.port, timeout=timeout, retries=False, maxsize=1, cutoff=cutoff)
    return pool.urlopen(method, target.path, body=body, headers={**headers, "Host": host_header},
                        redirect=False, preload_content=False, assert_same_host=False)


def _read(response, max_bytes: int, sink: BinaryIO | None) -> bytes:
    declared = peer_numbers.decimal(response.headers.get("Content-Length"))
    if declared is not None and declared > max_bytes:
        raise TooLarge(f"{declared} bytes, over the {max_bytes}-byte limit")
    total = 0
    chunks = []
    for chunk in response.stream(64 * 1024):
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge(f"over the {max_bytes}-byte limit")
        if sink is not None:
            sink.write(chunk)
        else:
            chunks.append(chunk)
    return b"".join(chunks)
