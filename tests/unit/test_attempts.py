import pytest

from support import fill, small_filesystem
from uvrd.processor.attempts import AttemptLedger


def test_counts_survive_a_new_ledger_and_clear(tmp_path):
    a = AttemptLedger(tmp_path / "att")
    assert a.start("t1") == 1 and a.start("t1") == 2
    assert AttemptLedger(tmp_path / "att").start("t1") == 3
    a.undo("t1")
    assert a.start("t1") == 3
    a.clear("t1")
    assert a.start("t1") == 1
    a.undo("t1")
    assert not (tmp_path / "att" / "t1").exists()


def test_a_full_disk_does_not_stop_the_count_from_answering(tmp_path):
    with small_filesystem(tmp_path / "disk", 1) as disk:
        if disk is None:
            pytest.skip("mounting a small tmpfs needs root")
        ledger = AttemptLedger(disk / ".attempts")
        assert ledger.start("t1") == 1
        ballast = fill(disk)
        assert ledger.start("t1") == 2, "counted in memory of the file it read"
        assert ledger.start("t2") == 1, "a new task still starts"
        assert sorted(p.name for p in (disk / ".attempts").iterdir()) == ["t1"], "no temporary file left"
        ballast.unlink()
