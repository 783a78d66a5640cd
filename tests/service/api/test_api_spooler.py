"""Fetching an audio URL into the spool: SSRF checks hold when DNS answers change, and
``api.fetch_timeout`` bounds the whole download."""

from __future__ import annotations

import socket
import uuid

import pytest

from peers import Hanger, Trickler
from support import RebindingDNS, rebinding_pair, wait_until
from uvrd.api.errors import ApiError
from uvrd.api.spooler import Spool


@pytest.fixture
def spool(tmp_path):
    s = Spool(tmp_path / "spool", max_bytes=2_000_000)
    s.prepare()
    return s


def test_an_audio_url_whose_dns_answer_changes_is_fetched_from_the_checked_address(spool, sample, monkeypatch):
    checked, rebound = rebinding_pair(body=sample.read_bytes())
    try:
        dns = RebindingDNS("audio.rebind.test", first="127.0.0.1", then="127.0.0.2")
        monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
        task_uuid = str(uuid.uuid4())
        path = spool.fetch(f"http://audio.rebind.test:{checked.port}/song.wav", task_uuid, allow_private=True,
                           timeout=5)
        assert path == spool.directory / f"{task_uuid}.wav" and path.read_bytes() == sample.read_bytes()
        assert checked.hits == ["/song.wav"] and rebound.hits == [] and dns.lookups == 1
    finally:
        checked.close()
        rebound.close()


def test_an_audio_url_that_resolves_to_loopback_is_refused_without_a_connection(spool, monkeypatch):
    checked, rebound = rebinding_pair()
    try:
        dns = RebindingDNS("audio.private.test", first="127.0.0.2", then="127.0.0.1")
        monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
        with pytest.raises(ApiError) as e:
            spool.fetch(f"http://audio.private.test:{checked.port}/x", str(uuid.uuid4()), allow_private=False,
                        timeout=5)
        assert e.value.status == 400 and "not a public address" in e.value.message
        assert checked.hits == [] and rebound.hits == [] and dns.lookups == 1
        assert list(spool.directory.iterdir()) == [], "nothing is kept, not even a temporary file"
    finally:
        checked.close()
        rebound.close()


def test_an_audio_url_that_trickles_or_hangs_is_504_at_fetch_timeout_and_leaves_nothing(api_stack, kafka):
    """The real api, a real origin sending a WAV a byte every 0.2 s (each read well inside any
    per-read timeout), and one that never answers: the fetch ends at api.fetch_timeout."""
    trickler = Trickler(interval=0.2, at_once=b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n",
                        trickle=b"RIFF\x00\x00\x00\x00WAVE")
    hanger = Hanger()
    try:
        api = api_stack.start(allow_private_urls=True, fetch_timeout=2.0)
        for origin in (trickler, hanger):
            response = api.submit_url(origin.url("/song.wav"))
            assert response.status_code == 504, response.text
            assert response.json() == {"error": "fetching the audio URL took longer than this server allows (2 s); "
                                                "nothing was queued"}
            assert origin.paths() == ["/song.wav"]
        assert trickler.bytes_sent >= 5, "the origin was still sending when the fetch was cut off"
        wait_until(lambda: not api_stack.incoming(), 10, "the fetches' temporary files to go")
        assert list(api_stack.spool.iterdir()) == [], "no file kept in the spool"
        assert kafka.read_all(api_stack.topics.tasks) == [], "nothing queued"
        assert api.get("/healthz").status_code == 200
    finally:
        trickler.close()
        hanger.close()
