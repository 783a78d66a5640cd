"""``uvrd submit --output``'s downloads against real HTTP servers on loopback, honest and not."""

from __future__ import annotations

import io
import socket
import threading
from pathlib import Path

import pytest

from uvrd.client.stem_download import DownloadError, download, file_name

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB


class RawServer:
    """Answers every connection with *answer(request_bytes) -> bytes*, then closes it."""

    def __init__(self, answer):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(65536)
                try:
                    conn.sendall(self._answer(request))
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def ok(body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n").encode() + body


@pytest.fixture
def serve():
    servers = []

    def start(answer):
        servers.append(RawServer(answer))
        return servers[-1].url
    yield start
    for s in servers:
        s.close()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_whole_stem_lands_under_its_final_name(serve, tmp_path):
    url = serve(lambda _: ok(PAYLOAD, 'Content-Disposition: attachment; filename="t1_vocals.flac"\r\n'))
    path = download(url + "/v1/tasks/t1/stems/vocals?sig=x", tmp_path, Path("/music/song.wav"), "vocals")
    assert path == tmp_path / "song_vocals.flac" and path.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["song_vocals.flac"]


def test_a_transfer_cut_short_is_an_error_and_leaves_no_file(serve, tmp_path):
    announced = ok(PAYLOAD)
    url = serve(lambda _: announced[:len(announced) - 1000])  # the server closes 1000 bytes early
    with pytest.raises(DownloadError, match="vocals: the transfer broke off"):
        download(url + "/x/vocals.wav", tmp_path, Path("song.wav"), "vocals")
    assert leftovers(tmp_path) == []


def test_a_refusal_is_an_error_that_names_the_status(serve, tmp_path):
    url = serve(lambda _: b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    with pytest.raises(DownloadError, match="HTTP 403"):
        download(url + "/x/vocals.wav", tmp_path, Path("song.wav"), "vocals")
    assert leftovers(tmp_path) == []


def test_nobody_listening_is_an_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(DownloadError, match="could not connect"):
            download(f"http://127.0.0.1:{port}/vocals.wav", tmp_path, Path("song.wav"), "vocals")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_sees_a_progress_bar_that_ends_full(serve, tmp_path):
    url = serve(lambda _: ok(PAYLOAD))
    screen = Terminal()
    download(url + "/stems/vocals.wav", tmp_path, Path("song.wav"), "vocals", progress_to=screen)
    last = screen.getvalue().rstrip("\n").split("\r")[-1]
    assert last.startswith("vocals") and "100%" in last and "[" + "#" * 30 + "]" in last


def test_a_file_or_pipe_gets_no_progress_bar(serve, tmp_path):
    url = serve(lambda _: ok(PAYLOAD))
    quiet = io.StringIO()
    download(url + "/stems/vocals.wav", tmp_path, Path("song.wav"), "vocals", progress_to=quiet)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("url, disposition, name", [
    ("https://bucket.example/uvrd/stems/t1/vocals.flac?X-Amz-Signature=abc", None, "song_vocals.flac"),
    ("http://api/v1/tasks/t1/stems/vocals?sig=x", 'attachment; filename="t1_vocals.mp3"', "song_vocals.mp3"),
    ("http://api/v1/tasks/t1/stems/vocals", None, "song_vocals"),
    ("http://api/x/a.b/../evil/$(rm).sh%2F..%2F..", None, "song_vocals"),
])
def test_stems_are_named_after_the_input_and_never_choose_their_own_directory(url, disposition, name):
    assert file_name(Path("/in/song.wav"), "vocals", url, disposition) == name
    assert file_name(Path("song.wav"), "../../etc/x", url, disposition).startswith("song_.._.._etc_x")
