"""The ground truth the quality tests measure against: a MUSDB18 excerpt and its true stems."""

from __future__ import annotations

import soundfile

from devtools import musdb_excerpt, sdr


def test_the_excerpt_is_stereo_44k_and_its_stems_add_up_to_the_mixture(musdb):
    mixture = sdr.read_audio(musdb.mixture)
    assert (mixture.rate, mixture.channels, mixture.frames) == (44100, 2, 264600 - 4096)
    assert soundfile.info(str(musdb.mixture)).subtype == "PCM_16", "the mixture is a plain WAV a user would send"
    for stem in ("vocals", "instrumental"):
        assert musdb.reference(stem).shape == mixture.samples.shape
    together = musdb.reference("vocals") + musdb.reference("instrumental")
    # 22.3 dB measured: the stems are AAC-coded separately; the clicks outside the crop would cost it.
    assert sdr.sdr(mixture.samples, together) > 21.0


def test_the_mixture_as_an_estimate_scores_the_issues_baseline(musdb):
    """The figures issue 14 measured: a wrong crop, a stem left out of the accompaniment or the
    two references swapped would each move them by decibels."""
    assert abs(musdb.score("vocals", musdb.mixture) - -7.2) < 0.1
    assert abs(musdb.score("instrumental", musdb.mixture) - 7.0) < 0.1


def test_a_second_call_uses_the_cache(musdb):
    before = {p: p.stat() for p in (musdb.mixture, musdb.vocals, musdb.accompaniment)}
    again = musdb_excerpt.excerpt()
    assert again == musdb
    for path, stat in before.items():
        now = path.stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), f"{path.name} was rewritten"
