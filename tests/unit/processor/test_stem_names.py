"""A task's custom stem names applied to the files a model wrote (uvrd/processor/job_options.py):
each stem ends under its own name with its own contents, or the task fails with a sentence before
any file is touched; never a stem overwritten by another."""

from __future__ import annotations

import pytest

from uvrd.processor import job_options
from uvrd.separation_options import OptionError, parse


def written(directory, **contents: bytes) -> dict[str, str]:
    """The stems a model wrote into *directory*, one file each, named for the stem."""
    stems = {}
    for stem, data in contents.items():
        path = directory / f"{stem}.flac"
        path.write_bytes(data)
        stems[stem] = str(path)
    return stems


def finish(stems: dict[str, str], names: dict[str, str]) -> dict[str, bytes]:
    out = job_options.finish(stems, parse({"stem_names": names}), "flac")
    return {name: open(path, "rb").read() for name, path in out.items()}


def test_a_swap_gives_each_stem_the_others_name_with_its_own_contents(tmp_path):
    stems = written(tmp_path, vocals=b"VOCALS", instrumental=b"INSTRUMENTAL")
    assert finish(stems, {"vocals": "instrumental", "instrumental": "vocals"}) == \
        {"instrumental": b"VOCALS", "vocals": b"INSTRUMENTAL"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instrumental.flac", "vocals.flac"]


def test_a_cycle_of_three_keeps_every_stem(tmp_path):
    stems = written(tmp_path, vocals=b"V", drums=b"D", bass=b"B", other=b"O")
    assert finish(stems, {"vocals": "drums", "drums": "bass", "bass": "vocals"}) == \
        {"drums": b"V", "bass": b"D", "vocals": b"B", "other": b"O"}


def test_a_name_freed_by_another_rename_may_be_taken(tmp_path):
    stems = written(tmp_path, vocals=b"V", instrumental=b"I", drums=b"D")
    assert finish(stems, {"vocals": "instrumental", "instrumental": "music"}) == \
        {"instrumental": b"V", "music": b"I", "drums": b"D"}


def test_a_name_another_stem_keeps_fails_the_task_before_any_file_moves(tmp_path):
    stems = written(tmp_path, vocals=b"V", instrumental=b"I", drums=b"D")
    with pytest.raises(OptionError) as e:
        finish(stems, {"drums": "Beat", "vocals": "instrumental"})
    assert str(e.value) == ("option stem_names would give the vocals and instrumental stems one name, "
                            "'instrumental': rename instrumental too (names may be swapped)")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == \
        {"vocals.flac": b"V", "instrumental.flac": b"I", "drums.flac": b"D"}


def test_a_plain_rename_moves_the_file(tmp_path):
    stems = written(tmp_path, vocals=b"V", instrumental=b"I")
    assert finish(stems, {"vocals": "voice"}) == {"voice": b"V", "instrumental": b"I"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instrumental.flac", "voice.flac"]
