"""The stand-in accelerator's busy share: what the bench reports as the share of time the "card" worked."""

from devtools.standin_accelerator import busy_intervals, busy_share


def test_busy_share_counts_only_the_window():
    forwards = [(0.0, 4.0), (5.0, 9.0), (9.5, 12.0)]
    # 1..11: 3 + 4 + 1.5 busy of 10 s.
    assert busy_share(forwards, 1.0, 11.0) == 0.85


def test_busy_intervals_read_back(tmp_path):
    log = tmp_path / "busy.log"
    log.write_text("1.000000 2.500000\n3.000000 4.000000\n")
    assert busy_intervals(log) == [(1.0, 2.5), (3.0, 4.0)]
    assert busy_intervals(tmp_path / "none.log") == []


def test_the_stand_in_sleeps_and_every_models_forward_is_logged(tmp_path, monkeypatch):
    """The stand-in's forward is a sleep; another model runs its own, timed into the same log (bench
    section 11); the secondary stem's match-mix pass is no forward."""
    import numpy as np
    from audio_separator.separator.architectures.mdx_separator import MDXSeparator

    from devtools.standin_accelerator import MODEL, replace_forward

    calls = []

    def real(self, mix, is_match_mix=False):
        calls.append((self.model_name, is_match_mix))
        return mix + 1

    monkeypatch.setattr(MDXSeparator, "demix", real)  # undone after the test, replace_forward's with it
    log = tmp_path / "busy.log"
    replace_forward(0.01, str(log))

    class Model:
        sample_rate = 100

        def __init__(self, name):
            self.model_name = name

    mix = np.ones((2, 100))
    standin, other = Model(MODEL.removesuffix(".onnx")), Model("Spleeter")
    assert (MDXSeparator.demix(standin, mix) == 0.5).all()
    assert MDXSeparator.demix(standin, mix, is_match_mix=True) is mix
    assert (MDXSeparator.demix(other, mix) == 2).all()
    assert (MDXSeparator.demix(other, mix, is_match_mix=True) == 2).all()
    assert calls == [("Spleeter", False), ("Spleeter", True)]
    forwards = busy_intervals(log)
    assert len(forwards) == 2 and forwards[0][1] - forwards[0][0] >= 0.01
