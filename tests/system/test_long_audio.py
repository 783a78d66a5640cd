"""Long inputs are separated in chunks, not refused: with real weights the chunked stems score as
the whole file's and their seams neither click nor jump; ten minutes go through the whole service
in the memory one chunk takes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from separation_service import SeparationService
from support import separate_in_engine

from devtools import sdr, tinymodel
from devtools.children import peak_rss_mb, reset_peak_rss
from devtools.crafted_audio import two_tones
from uvrd.processor.engine_protocol import Separated

pytestmark = pytest.mark.slow

RATE = 44100
# The MUSDB excerpt is 6 s: six of it make 36 s, in four chunks of 10 s (three seams).
REPEATS, CHUNK_S, OVERLAP_S = 6, 10.0, 2.0
# How much louder than inside the chunks the difference from the whole file may be at a seam
# (measured: 3.2 dB crossfaded, 8.6 dB end to end, for both stems).
SEAM_ALLOWANCE_DB = 5.0


@pytest.fixture(scope="module")
def looped(musdb, tmp_path_factory):
    """The excerpt six times over, 16-bit as a user sends it, with the true stems alike."""
    mixture, _ = soundfile.read(musdb.mixture, dtype="int16")
    path = tmp_path_factory.mktemp("looped") / "looped.wav"
    soundfile.write(path, np.tile(mixture, (REPEATS, 1)), RATE, subtype="PCM_16")
    return path, {stem: np.tile(musdb.reference(stem), (REPEATS, 1)) for stem in ("vocals", "instrumental")}


@pytest.fixture(scope="module")
def separations(spleeter_models, looped, tmp_path_factory):
    """The looped excerpt separated whole, in crossfaded chunks, and in chunks put end to end (what
    audio-separator's own chunk_duration does), each through uvrd's engine with Spleeter's weights."""
    audio, _ = looped
    out = {}
    for name, chunking in (("whole", {}), ("chunked", {"chunk_seconds": CHUNK_S, "chunk_overlap_seconds": OVERLAP_S}),
                           ("end to end", {"chunk_seconds": CHUNK_S, "chunk_overlap_seconds": 0.0})):
        run = separate_in_engine(spleeter_models.model_dir, spleeter_models.model, audio,
                                 tmp_path_factory.mktemp(name.replace(" ", "-")), **chunking)
        assert isinstance(run.result, Separated), run.result
        out[name] = {stem: soundfile.read(path, dtype="float32")[0] for stem, path in run.result.stems.items()}
    return out


def seams(frames: int, overlap_s: float = OVERLAP_S) -> list[slice]:
    """Around each seam: from half a second before the overlap to half a second after it."""
    hop, half = int(CHUNK_S * RATE), RATE // 2
    return [slice(k * hop - half, k * hop + int(overlap_s * RATE) + half) for k in range(1, frames // hop + 1)
            if k * hop < frames]


def worst_error_db(whole: np.ndarray, other: np.ndarray, span: slice, block: int = RATE // 10) -> float:
    """The loudest 100 ms of difference from the whole file's stem within *span*, in dB against
    that stem's mean power: a seam's damage is local, and a stem may be near silent there."""
    level = np.mean(whole ** 2)
    error = (whole[span] - other[span]) ** 2
    return float(10 * np.log10(max(np.mean(error[i:i + block]) for i in range(0, len(error) - block + 1, block // 2))
                               / level))


@pytest.mark.parametrize("stem", ["vocals", "instrumental"])
def test_chunked_stems_score_as_the_whole_files_do(separations, looped, stem):
    _, truth = looped
    scores = {name: sdr.sdr(truth[stem], sdr.fit(stems[stem], len(truth[stem]))) for name, stems in separations.items()}
    print(f"\nlong audio, {stem}: SDR whole {scores['whole']:.2f} dB, in crossfaded chunks {scores['chunked']:.2f} dB,"
          f" chunks end to end {scores['end to end']:.2f} dB")
    assert {len(s[stem]) for s in separations.values()} == {len(truth[stem])}
    assert scores["chunked"] > scores["whole"] - 0.5


@pytest.mark.parametrize("stem", ["vocals", "instrumental"])
def test_the_seams_add_little_to_what_chunking_changes_and_do_not_click(separations, stem):
    """Chunks differ from the whole file everywhere a little (each chunk starts the model's own
    segments afresh); a seam must not add much to that, where chunks put end to end do."""
    whole, chunked, end_to_end = (separations[n][stem] for n in ("whole", "chunked", "end to end"))
    hop = int(CHUNK_S * RATE)
    inside = max(worst_error_db(whole, chunked, slice(k * hop + int((OVERLAP_S + 1) * RATE), (k + 1) * hop - RATE))
                 for k in (1, 2))
    faded = [worst_error_db(whole, chunked, seam) for seam in seams(len(whole))]
    cut = [worst_error_db(whole, end_to_end, seam) for seam in seams(len(whole))]
    print(f"\nlong audio, {stem}, the loudest 100 ms of difference from the whole file: inside the chunks "
          f"{inside:.1f} dB; at the seams crossfaded {', '.join(f'{x:.1f}' for x in faded)} dB, end to end "
          f"{', '.join(f'{x:.1f}' for x in cut)} dB")
    assert max(faded) < inside + SEAM_ALLOWANCE_DB < max(cut)
    steps = {name: np.abs(np.diff(audio, axis=0)).max(axis=1) for name, audio in (("whole", whole),
                                                                                  ("chunked", chunked))}
    for seam in seams(len(whole)):
        # A click is a step between two samples far beyond what the music itself has there.
        assert steps["chunked"][seam].max() < 1.5 * steps["whole"][seam].max()


# Ten minutes in chunks of 20 s: 30 of them, each a thirtieth of the input.  Held whole, the input
# alone (stereo float32) would take 212 MB against 8 MB for one chunk, so a memory that grew with the
# input shows at this length as plainly as at two hours.
LONG_S, TEST_CHUNK_S, TEST_OVERLAP_S = 600, 20.0, 2.0


@pytest.fixture(scope="module")
def chunked_service(module_stack, model_dir):
    svc = SeparationService(module_stack, [tinymodel.install(model_dir)], model_dir, chunk_seconds=TEST_CHUNK_S,
                            chunk_overlap_seconds=TEST_OVERLAP_S, progress_interval=1.0)
    yield svc
    svc.close()


def engine_pid(processor) -> int:
    """The processor's engine child (a multiprocessing spawn of it), by its parent's PID."""
    children = processor.children()
    engines = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(engines) == 1, children
    return engines[0]


# Ten minutes of audio through the tiny model: about 30 s on an idle 2-core machine with one engine
# thread, three times that beside two CPU-bound processes.  The bound ends the test; it does not time it.
@pytest.mark.timeout(900)
def test_a_long_input_is_separated_whole_in_the_memory_one_chunk_takes(chunked_service, tmp_path):
    engine = engine_pid(chunked_service.processor)
    # What one chunk's separation costs the engine: an input just one chunk long, separated whole.
    one_chunk = tinymodel.write_sample(tmp_path / "one-chunk.wav", seconds=TEST_CHUNK_S + TEST_OVERLAP_S)
    reset_peak_rss(engine)
    chunked_service.separate(one_chunk)
    one_chunk_mb = peak_rss_mb(engine)

    long_input = two_tones(tmp_path / "long.flac", LONG_S)
    reset_peak_rss(engine)
    started = time.monotonic()
    done = chunked_service.separate(long_input, timeout=750)
    took = time.monotonic() - started
    long_mb = peak_rss_mb(engine)
    assert engine_pid(chunked_service.processor) == engine, "the same engine did both"
    print(f"\nlong audio: {LONG_S / 60:g} min separated in {took:.0f} s; the engine's peak RSS {long_mb:.0f} MB, "
          f"{one_chunk_mb:.0f} MB for one chunk's length ({TEST_CHUNK_S + TEST_OVERLAP_S:g} s) separated whole")
    for stem, path in done.stems.items():
        info = soundfile.info(path)
        assert (info.frames, info.samplerate, info.channels) == (LONG_S * RATE, RATE, 2), (stem, info)
    # Held whole, the input alone would add this much (stereo float32); the chunks add a small part of it.
    whole_input_mb = LONG_S * RATE * 2 * 4 / 2**20
    assert long_mb - one_chunk_mb < whole_input_mb / 2, "the engine's memory grew with the input, not with the chunk"
    assert done.status["progress"] == 1.0
