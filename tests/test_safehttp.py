import http.server
import socket
import threading

import pytest

from support import RebindingDNS, rebinding_pair
from uvrd.deadline import Deadline
from uvrd.safehttp import TooLarge, UnsafeURL, check_url, request


@pytest.fixture(scope="module")
def server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/redirect-out":
                self.send_response(302)
                self.send_header("Location", "ftp://files.example/inside")
                self.end_headers()
                return
            body = b"x" * (int(self.path.strip("/")) if self.path.strip("/").isdigit() else 5)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            data = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(201)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(self.headers["Host"].encode()[: len(data)] if data == b"host?" else data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.mark.parametrize("url, words", [
    ("ftp://example.com/x", "only http and https"),
    ("http://127.0.0.1/x", "not a public address"),
    ("http://[::1]/x", "not a public address"),
    ("http://169.254.169.254/latest/meta-data", "not a public address"),
    ("http://10.0.0.8/", "not a public address"),
    ("http://100.64.0.1/", "not a public address"),
    ("http://[::ffff:127.0.0.1]/", "not a public address"),
    ("http://user:pw@example.com/", "credentials"),
    ("http://example.com:99999/", "not a valid URL"),
])
def test_unsafe_urls_are_refused(url, words):
    with pytest.raises(UnsafeURL, match=words):
        check_url(url, allow_private=False, resolver=lambda host, port: [host.strip("[]")])


def test_every_dns_answer_is_checked_and_the_checked_one_is_used():
    with pytest.raises(UnsafeURL):
        check_url("http://rebind.example/", False, resolver=lambda h, p: ["93.184.216.34", "127.0.0.1"])
    target = check_url("http://ok.example/a?b=1", False, resolver=lambda h, p: ["93.184.216.34"])
    assert (target.address, target.path, target.port) == ("93.184.216.34", "/a?b=1", 80)


def test_requests_go_to_the_checked_address_with_the_real_host(server):
    port = server.rsplit(":", 1)[1]
    named = f"http://hooks.test:{port}/"
    r = request("POST", named, allow_private=True, deadline=Deadline.after(5), body=b"host?",
                resolver=lambda h, p: ["127.0.0.1"])
    assert r.status == 201 and r.body == f"hooks.test:{port}".encode()[:5]


def test_size_limit_and_redirect_checks(server):
    assert request("GET", server + "/100", allow_private=True, deadline=Deadline.after(5), max_bytes=100).body == b"x" * 100
    with pytest.raises(TooLarge):
        request("GET", server + "/101", allow_private=True, deadline=Deadline.after(5), max_bytes=100)
    # A redirect goes through the same check as the first URL.
    with pytest.raises(UnsafeURL, match="only http and https"):
        request("GET", server + "/redirect-out", allow_private=True, deadline=Deadline.after(5))


@pytest.fixture
def pair():
    checked, rebound = rebinding_pair()
    yield checked, rebound
    checked.close()
    rebound.close()


def test_a_name_is_resolved_once_and_the_request_goes_to_that_answer(pair, monkeypatch):
    """DNS rebinding: a name that changes its answer between the check and the connection."""
    checked, rebound = pair
    dns = RebindingDNS("rebind.test", first="127.0.0.1", then="127.0.0.2")
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    r = request("GET", f"http://rebind.test:{checked.port}/a", allow_private=True, deadline=Deadline.after(5))
    assert (r.status, r.body) == (200, b"ok")
    assert checked.hits == ["/a"] and rebound.hits == []
    assert dns.lookups == 1
