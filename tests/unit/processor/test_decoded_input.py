"""An input decoded ahead by the pipeline's fetch stage (decoded_input.py): the engine child's
``librosa.load`` of it gives what librosa itself gives, and what the child must decode itself (not
libsndfile's, a length it does not know, surround, long or over the limit) is not decoded ahead."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

from devtools import crafted_audio, tinymodel
from uvrd.processor import audio_probe, bounded_decode, decoded_input

LIMIT = 60.0
WHOLE = 20.0


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    wav = tinymodel.write_sample(d / "stereo.wav", seconds=3)
    samples, rate = soundfile.read(wav, dtype="int16")
    soundfile.write(d / "stereo16.flac", samples, rate, subtype="PCM_16")
    soundfile.write(d / "stereo24.wav", samples.astype(np.int32) << 16, rate, subtype="PCM_24")
    soundfile.write(d / "mono22k.flac", samples[::2, 0], rate // 2, subtype="PCM_16")
    return {"16-bit FLAC": d / "stereo16.flac", "24-bit WAV": d / "stereo24.wav", "mono FLAC at 22.05 kHz": d / "mono22k.flac",
            "WAV": wav}


def child_load(path: Path, decoded: Path | None, mono: bool, sr: int | None):
    """The engine child's load of *path*, as audio-separator asks for it, through bounded_decode."""
    with bounded_decode.limited(LIMIT, str(path), audio_probe.probe(str(path)), str(decoded) if decoded else None):
        return librosa.load(str(path), mono=mono, sr=sr)


@pytest.mark.parametrize("name", ["16-bit FLAC", "24-bit WAV", "mono FLAC at 22.05 kHz", "WAV"])
@pytest.mark.parametrize("mono, sr", [(False, 44100), (True, 44100), (False, None), (False, 32000)])
def test_samples_decoded_ahead_are_what_librosa_reads(files, tmp_path, name, mono, sr):
    decoded = decoded_input.decode_ahead(files[name], tmp_path, "task", LIMIT, WHOLE)
    assert decoded is not None and decoded.parent == tmp_path and decoded.name.startswith(".decoded-task-")
    got, got_sr = child_load(files[name], decoded, mono, sr)
    expected, expected_sr = librosa.load(str(files[name]), mono=mono, sr=sr)
    assert got_sr == expected_sr and got.dtype == expected.dtype == np.float32
    assert got.shape == expected.shape and np.array_equal(got, expected), "the very samples librosa reads"
    decoded_input.remove(decoded)
    assert not decoded.exists()
    decoded_input.remove(decoded)  # gone already: nothing to do


def test_an_offset_and_a_duration_read_what_librosa_reads(files, tmp_path):
    decoded = decoded_input.decode_ahead(files["16-bit FLAC"], tmp_path, "task", LIMIT, WHOLE)
    with bounded_decode.limited(LIMIT, str(files["16-bit FLAC"]), audio_probe.probe(str(files["16-bit FLAC"])),
                                str(decoded)):
        got, _ = librosa.load(str(files["16-bit FLAC"]), mono=False, sr=None, offset=0.5, duration=1.25)
    expected, _ = librosa.load(str(files["16-bit FLAC"]), mono=False, sr=None, offset=0.5, duration=1.25)
    assert np.array_equal(got, expected)


def test_what_the_child_decodes_itself_is_not_decoded_ahead(files, tmp_path):
    d = tmp_path / "inputs"
    d.mkdir()
    surround = d / "surround.wav"
    soundfile.write(surround, np.zeros((44100, 3), dtype=np.float32), 44100)
    cases = {
        "Matroska (not libsndfile's)": crafted_audio.stream(d / "s.mka", 2),
        "FLAC stream of unknown length": crafted_audio.stream(d / "s.flac", 2, "flac"),
        "three channels": surround,
        "not audio": d / "text.flac",
    }
    cases["not audio"].write_text("not audio")
    for name, path in cases.items():
        assert decoded_input.decode_ahead(path, tmp_path, "task", LIMIT, WHOLE) is None, name
    assert decoded_input.decode_ahead(files["WAV"], tmp_path, "task", LIMIT, whole_up_to=2.5) is None, "chunked"
    assert decoded_input.decode_ahead(files["WAV"], tmp_path, "task", 2.5, WHOLE) is None, "over the limit"
    assert not list(tmp_path.glob(".decoded-*")), "nothing left behind"


def test_a_file_shorter_than_its_header_is_left_to_the_child(files, tmp_path):
    """A cut FLAC's header still counts every frame: the samples that are there are the child's decode
    to read (and librosa's to complain about), not a shorter array handed over as if whole."""
    truncated = tmp_path / "truncated.flac"
    data = files["16-bit FLAC"].read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    assert soundfile.info(str(truncated)).frames == soundfile.info(str(files["16-bit FLAC"])).frames
    assert decoded_input.decode_ahead(truncated, tmp_path, "task", LIMIT, WHOLE) is None
    assert not list(tmp_path.glob(".decoded-*"))
