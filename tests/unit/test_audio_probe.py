import subprocess

import numpy as np
import pytest
import soundfile as sf

from devtools import crafted_audio
from uvrd.processor.audio_probe import NOT_AUDIO, AudioInfo, Unusable, check, probe


def test_reads_length_rate_and_channels_of_what_libsndfile_knows(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros((8000 * 3, 8), "float32"), 8000)
    assert probe(str(path)) == AudioInfo(seconds=3.0, rate=8000, channels=8)


def test_asks_ffprobe_about_formats_libsndfile_does_not_read(tmp_path):
    path = tmp_path / "a.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono", "-t", "2",
                    "-c:a", "aac", str(path)], check=True)
    info = probe(str(path))
    assert (info.rate, info.channels) == (22050, 1) and info.seconds == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize("content", [b"", b"this is not audio\n" * 100, b"RIFF\x10\x00\x00\x00WAVEfmt "])
def test_what_is_not_audio_is_named_so(tmp_path, content):
    path = tmp_path / "x.wav"
    path.write_bytes(content)
    with pytest.raises(Unusable) as e:
        probe(str(path))
    assert str(e.value) == NOT_AUDIO


def test_refuses_no_samples_and_over_the_limit_and_takes_the_rest():
    with pytest.raises(Unusable, match="no audio"):
        check(AudioInfo(seconds=0.0, rate=44100, channels=2), 3600)
    with pytest.raises(Unusable) as e:
        check(AudioInfo(seconds=7200.0, rate=8000, channels=1), 3600)
    assert "2:00:00 long" in str(e.value) and "max_audio_seconds = 3600" in str(e.value)
    check(AudioInfo(seconds=0.001, rate=44100, channels=2), 3600)
    # A stream that does not say passes this early check; its decode stops at the limit (test_bounded_decode.py).
    check(AudioInfo(seconds=None, rate=44100, channels=2), 3600)


@pytest.mark.parametrize("container", ["flac", "matroska"])
def test_a_stream_that_does_not_declare_its_length_has_no_length(tmp_path, container):
    """Written to a pipe, the muxer cannot go back to write the length: libsndfile then says
    'the largest count there is' (FLAC), ffprobe says nothing (Matroska).  Neither is a length."""
    path = crafted_audio.stream(tmp_path / f"stream.{container}", 3, container)
    info = probe(str(path))
    assert info.seconds is None and info.channels == 2
