"""Every decode the engine does stops at max_audio_seconds, whatever the file's header says: the
decoders audio-separator itself calls (MDX/MDXC/Demucs's prepare_mix, VR's loading_mix), on real
files that lie about their length or do not say it."""

from __future__ import annotations

import re
import types
import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import fuzz_examples
from devtools import crafted_audio, tinymodel
from uvrd.processor import audio_probe, bounded_decode

LIMIT = 8.0


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("crafted")
    return {
        "m4a claiming 1 s, holding 30 s": crafted_audio.lying_m4a(d / "lie.m4a", 30, claims=1),
        "Matroska stream of 30 s": crafted_audio.stream(d / "long.mka", 30),
        "FLAC stream of 30 s": crafted_audio.stream(d / "long.flac", 30, "flac"),
        "m4a claiming 1 s, holding 7 s": crafted_audio.lying_m4a(d / "short-lie.m4a", 7, claims=1),
        "Matroska stream of 7 s": crafted_audio.stream(d / "short.mka", 7),
        "FLAC stream of 7 s": crafted_audio.stream(d / "short.flac", 7, "flac"),
        "WAV of 7 s": tinymodel.write_sample(d / "short.wav", seconds=7),
    }


def bounded_load(path: Path, mono: bool = False):
    with bounded_decode.limited(LIMIT, str(path), audio_probe.probe(str(path))):
        return librosa.load(str(path), mono=mono, sr=44100)


@pytest.mark.parametrize("name", ["m4a claiming 1 s, holding 30 s", "Matroska stream of 30 s", "FLAC stream of 30 s"])
def test_audio_longer_than_the_limit_is_refused_whatever_its_header_says(files, name):
    info = audio_probe.probe(str(files[name]))
    audio_probe.check(info, LIMIT)  # the header alone lets each of them through
    with pytest.raises(audio_probe.Unusable) as e:
        bounded_load(files[name])
    header = "its header says 1 s" if "claiming" in name else "its container declares no length"
    assert str(e.value) == (f"audio is longer than this processor's limit of 8 s "
                            f"(processor.max_audio_seconds = 8); {header}")


@pytest.mark.parametrize("name", ["m4a claiming 1 s, holding 7 s", "Matroska stream of 7 s", "FLAC stream of 7 s",
                                  "WAV of 7 s"])
def test_audio_within_the_limit_is_decoded_whole(files, name):
    y, sr = bounded_load(files[name])
    assert sr == 44100 and y.shape[0] == 2
    assert y.shape[1] == pytest.approx(7 * 44100, abs=0.1 * 44100), "every sample, whatever the header claims"


@pytest.mark.parametrize("name", ["m4a claiming 1 s, holding 7 s", "Matroska stream of 7 s", "WAV of 7 s"])
def test_a_bounded_decode_gives_what_librosa_gives(files, name):
    """ffmpeg's decode stands in for audioread's: the same samples (audioread's are 16-bit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's deprecation of audioread
        expected, _ = librosa.load(str(files[name]), mono=False, sr=44100)
    for mono in (False, True):
        got, sr = bounded_load(files[name], mono=mono)
        want = librosa.to_mono(expected) if mono else expected
        assert got.shape == want.shape and got.dtype == np.float32 and sr == 44100
        assert np.abs(got - want).max() < 1e-3


def test_ffmpeg_decodes_no_further_than_asked(files):
    path = str(files["Matroska stream of 30 s"])
    y = bounded_decode.decode(path, rate=48000, channels=2, offset=0.0, seconds=2.0)
    # -t counts from the stream's first timestamp, before Opus's pre-skip (312 samples) is dropped.
    assert y.shape[0] == 2 and 96000 - 480 <= y.shape[1] <= 96000
    assert np.abs(y).max() > 0.01, "real samples, not the empty buffer"
    mono = bounded_decode.decode(path, rate=48000, channels=1, offset=1.0, seconds=0.5)
    assert mono.ndim == 1 and 24000 - 480 <= mono.shape[0] <= 24000


def test_what_ffmpeg_cannot_decode_is_named_so(tmp_path):
    junk = tmp_path / "junk.m4a"
    junk.write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"not audio" * 100)
    with pytest.raises(audio_probe.Unusable, match=re.escape(audio_probe.NOT_AUDIO)):
        bounded_decode.decode(str(junk), rate=44100, channels=2, offset=0.0, seconds=5.0)


def test_the_bound_is_lifted_after_the_job(files):
    bounded_load(files["WAV of 7 s"])
    y, _ = librosa.load(str(files["WAV of 7 s"]), mono=False, sr=None, duration=None)
    assert y.shape[1] == 7 * 44100


def test_two_jobs_at_once_each_decode_under_their_own_bound_and_none_is_left_after(files):
    """The engine child runs two jobs at once in the pipeline (device_gate.py): each thread's
    librosa.load is bounded by its own job, and neither job's end lifts or leaves the other's."""
    import threading

    path = str(files["WAV of 7 s"])
    inside, release, seen = threading.Barrier(2), threading.Event(), {}

    def job(name: str, limit: float) -> None:
        with bounded_decode.limited(limit, path, audio_probe.probe(path)):
            inside.wait(10)  # both jobs' bounds are in place now
            if name == "short":
                release.wait(10)  # the long job ends first: its end must not lift this one's bound
            try:
                seen[name] = librosa.load(path, mono=False, sr=None)[0].shape[1]
            except audio_probe.Unusable as e:
                seen[name] = str(e)
            if name == "long":
                release.set()

    threads = [threading.Thread(target=job, args=args) for args in (("short", 3.0), ("long", 60.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert seen["long"] == 7 * 44100
    assert "audio is longer than" in str(seen["short"]), seen
    assert librosa.load(path, mono=False, sr=None)[0].shape[1] == 7 * 44100  # no bound left behind


# -- audio-separator's own decoders -------------------------------------------------------------

def test_mdx_mdxc_and_demucs_prepare_mix_is_bounded(files):
    from audio_separator.separator.common_separator import CommonSeparator

    import logging

    mdx = types.SimpleNamespace(logger=logging.getLogger("test"), sample_rate=44100, input_bit_depth=None)
    lie = files["m4a claiming 1 s, holding 30 s"]
    with bounded_decode.limited(LIMIT, str(lie), audio_probe.probe(str(lie))), \
            pytest.raises(audio_probe.Unusable, match="longer than this processor's limit"):
        CommonSeparator.prepare_mix(mdx, str(lie))
    short = files["m4a claiming 1 s, holding 7 s"]
    with bounded_decode.limited(LIMIT, str(short), audio_probe.probe(str(short))):
        assert CommonSeparator.prepare_mix(mdx, str(short)).shape[1] == pytest.approx(7 * 44100, abs=4410)


def test_vr_loading_mix_is_bounded(files):
    import logging
    from importlib import resources

    from audio_separator.separator.architectures.vr_separator import VRSeparator
    from audio_separator.separator.uvr_lib_v5.vr_network.model_param_init import ModelParameters

    params = resources.files("audio_separator.separator.uvr_lib_v5.vr_network") / "modelparams" / "4band_44100.json"
    stream = files["Matroska stream of 30 s"]
    vr = types.SimpleNamespace(logger=logging.getLogger("test"), model_params=ModelParameters(str(params)),
                               audio_file_path=str(stream), wav_subtype="PCM_16", torch_device_mps=None,
                               is_vr_51_model=False, high_end_process=False)
    with bounded_decode.limited(LIMIT, str(stream), audio_probe.probe(str(stream))), \
            pytest.raises(audio_probe.Unusable, match="its container declares no length"):
        VRSeparator.loading_mix(vr)


def test_no_module_of_audio_separator_holds_librosa_load_itself():
    """The bound replaces librosa.load on the librosa module: a module that imported the function
    (``from librosa import load``) would decode around it."""
    import audio_separator

    root = Path(audio_separator.__file__).parent
    for source in root.rglob("*.py"):
        text = source.read_text(errors="replace")
        assert not re.search(r"from\s+librosa(\.core)?(\.audio)?\s+import[^\n]*\bload\b", text), source
        assert not re.search(r"=\s*librosa\.load\b(?!\()", text), source


@settings(max_examples=fuzz_examples(10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=st.one_of(st.just(0.0), st.floats(0.001, LIMIT), st.floats(LIMIT, 250_000)))  # 32-bit fields at 16 kHz
def test_what_a_header_claims_never_lets_audio_past_the_limit(files, tmp_path, claims):
    """Any claimed length, on a file over the limit and one under it: the claim may refuse a file
    early (audio_probe.check), but only the audio decides what passes."""
    for name, over in (("m4a claiming 1 s, holding 30 s", True), ("m4a claiming 1 s, holding 7 s", False)):
        path = tmp_path / f"{over}.m4a"
        path.write_bytes(crafted_audio.claim(files[name].read_bytes(), claims))
        try:
            audio_probe.check(audio_probe.probe(str(path)), LIMIT)
            y, sr = bounded_load(path)
        except audio_probe.Unusable:
            assert over or claims > LIMIT or claims == 0.0, (name, claims)
        else:
            assert not over, f"{name} claiming {claims} s was decoded: {y.shape[1] / sr:.1f} s"
            assert y.shape[1] == pytest.approx(7 * sr, abs=0.1 * sr)
