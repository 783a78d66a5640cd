import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import fuzz_examples
from uvrd.messages import BadMessage
from uvrd.storage.local import owned_name, remove_input, resolve_input


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
    (spool.parent / "u.wav").write_bytes(b"RIFF....")
    for path in ("../secret.wav", "../u.wav", str(spool.parent / "u.wav")):
        remove_input(spool, path, "u")
    assert (spool.parent / "secret.wav").exists() and (spool.parent / "u.wav").exists()


def test_remove_input_removes_only_the_tasks_own_file(spool):
    """The api names a task's input <task_uuid>.<ext> in the spool; a task naming any other file
    (another task's, or one a link leads to) leaves it."""
    for name in ("u.wav", "v.wav", "u.b.wav", "u.wav.part"):
        (spool / name).write_bytes(b"RIFF....")
    (spool / "sub" / "u.wav").write_bytes(b"RIFF....")
    (spool / "link-u.wav").symlink_to(spool / "v.wav")
    (spool / "u.flac").symlink_to(spool / "v.wav")
    for path in ("v.wav", "u.b.wav", "u.wav.part", "sub/u.wav", "sub/a.wav", "link-u.wav", "u.flac"):
        remove_input(spool, path, "u")
    remove_input(spool, "u.b.wav", "u.b.wav")
    assert sorted(p.name for p in spool.rglob("*") if p.is_file()) == \
        ["a.wav", "link-u.wav", "u.b.wav", "u.flac", "u.wav", "u.wav", "u.wav.part", "v.wav"]
    remove_input(spool, str(spool / "u.wav"), "u")
    remove_input(spool, "u.b.wav", "u.b")
    assert not (spool / "u.wav").exists() and not (spool / "u.b.wav").exists()
    assert (spool / "v.wav").exists() and (spool / "sub" / "u.wav").exists()


UUIDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,15}", fullmatch=True)
NAMES = st.one_of(st.text(st.characters(codec="ascii", exclude_characters="/\0"), min_size=1, max_size=24),
                  st.builds(str.__add__, UUIDS, st.text(".wavflc0-_", max_size=8)))


@given(name=NAMES, one=UUIDS, other=UUIDS)
@settings(max_examples=fuzz_examples(300))
def test_no_name_is_owned_by_two_tasks(name, one, other):
    """Whatever the task uuids and the file name, at most one task owns a file: the one it is
    named after, with an extension after the uuid."""
    if one != other:
        assert not (owned_name(name, one) and owned_name(name, other)), (name, one, other)
    if owned_name(name, one):
        assert name.startswith(one + ".") and "." not in name[len(one) + 1:]
    for ext in ("wav", "flac", "mp3", "ogg", "m4a", "aiff", "mka"):
        assert owned_name(f"{one}.{ext}", one)
