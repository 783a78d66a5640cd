"""Outbound HTTP to addresses users chose (hook_url, audio URLs), without SSRF.

A URL is checked by resolving its host once and refusing any address that is
not globally routable (loopback, private, link-local, CGNAT, multicast,
reserved) unless the configuration allows it.  The connection then goes to
the address that was checked, never to a second DNS answer, with the host
name kept for the Host header and TLS (SNI and certificate checks).
Redirects are followed only through the same check.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import BinaryIO, Callable
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3

from . import peer_numbers

MAX_REDIRECTS = 3


class UnsafeURL(ValueError):
    """The URL may not be fetched or called; the message says why."""


class TooLarge(Exception):
    pass


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


def request(method: str, url: str, *, allow_private: bool, timeout: float, body: bytes | None = None,
            headers: dict | None = None, max_bytes: int = 1 << 20, sink: BinaryIO | None = None,
            resolver: Resolver = _resolve) -> Response:
    """One HTTP exchange to a checked address.  With *sink*, the body streams into it.

    Raises UnsafeURL, TooLarge, or urllib3/OS errors for network failures.
    """
    for _ in range(MAX_REDIRECTS + 1):
        target = check_url(url, allow_private, resolver)
        response = _exchange(method, target, body, headers or {}, timeout)
        try:
            location = response.headers.get("Location")
            if response.status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)
                if response.status == 303:
                    method, body = "GET", None
                continue
            data = _read(response, max_bytes, sink)
            return Response(response.status, dict(response.headers), data)
        finally:
            response.release_conn()
    raise UnsafeURL(f"more than {MAX_REDIRECTS} redirects")


def _exchange(method: str, target: Target, body: bytes | None, headers: dict, timeout: float):
    host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address, target.port, server_hostname=target.host, assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(), timeout=timeout, retries=False, maxsize=1)
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, retries=False, maxsize=1)
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
