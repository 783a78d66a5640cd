import pytest

from uvrd.runtime.drain import drain_window, margin_for, own_unit, parse_timespan


@pytest.mark.parametrize("text, seconds", [
    ("10min", 600.0), ("1min 30s", 90.0), ("90", 90.0), ("500ms", 0.5), ("1h 2min 3s", 3723.0), ("2.5s", 2.5),
])
def test_systemctl_spans_parse(text, seconds):
    assert parse_timespan(text) == pytest.approx(seconds)


def test_infinity_means_no_systemd_deadline():
    assert parse_timespan("infinity") is None


@pytest.mark.parametrize("text", ["10 parsecs", "min", "1min x"])
def test_bad_spans_are_refused(text):
    with pytest.raises(ValueError):
        parse_timespan(text)


def test_margin_leaves_time_to_commit_and_close():
    assert margin_for(600) == 60 and margin_for(30) == 5 and margin_for(6) == 3


def test_outside_systemd_the_configured_window_applies():
    assert drain_window(42.0, environ={}) == 42.0


def test_unit_name_comes_from_the_cgroup(tmp_path):
    f = tmp_path / "cgroup"
    f.write_text("0::/system.slice/system-uvrd\\x2dprocessor.slice/uvrd-processor@1.service\n")
    assert own_unit(f) == "uvrd-processor@1.service"
    f.write_text("0::/user.slice/user-0.slice/session-3.scope\n")
    assert own_unit(f) is None
