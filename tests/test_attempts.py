from uvrd.attempts import AttemptLedger


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
