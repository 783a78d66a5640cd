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
