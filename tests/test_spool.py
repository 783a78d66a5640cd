import os

import pytest

from uvrd.messages import BadMessage
from uvrd.spool import remove_input, resolve_input


@pytest.fixture
def spool(tmp_path):
    d = tmp_path / "spool"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "a.wav").write_bytes(b"RIFF....")
    (tmp_path / "secret.wav").write_bytes(b"RIFF....")
    return d


def test_relative_and_absolute_paths_inside_resolve(spool):
    assert resolve_input(spool, "sub/a.wav", "u", "h") == (spool / "sub" / "a.wav").resolve()
    assert resolve_input(spool, str(spool / "sub" / "a.wav"), "u", "h") == (spool / "sub" / "a.wav").resolve()


def test_a_link_inside_the_spool_to_a_file_inside_is_fine(spool):
    (spool / "ln.wav").symlink_to(spool / "sub" / "a.wav")
    assert resolve_input(spool, "ln.wav", "u", "h") == (spool / "sub" / "a.wav").resolve()


@pytest.mark.parametrize("path", ["../secret.wav", "sub/../../secret.wav", "/etc/passwd", ".", "linkdir/secret.wav"])
def test_nothing_outside_the_spool_is_reachable(spool, path):
    (spool / "linkdir").symlink_to(spool.parent)
    with pytest.raises(BadMessage, match="outside the spool"):
        resolve_input(spool, path, "u", "h")


def test_fifo_is_refused_without_blocking(spool):
    os.mkfifo(spool / "pipe.wav")
    with pytest.raises(BadMessage, match="not a regular file"):
        resolve_input(spool, "pipe.wav", "u", "h")


def test_remove_input_never_touches_files_outside(spool):
    remove_input(spool, "../secret.wav")
    assert (spool.parent / "secret.wav").exists()
    remove_input(spool, "sub/a.wav")
    assert not (spool / "sub" / "a.wav").exists()
