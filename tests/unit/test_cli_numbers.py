"""Every number the ``uvrd`` command reads from its arguments: plain ASCII digits within the
argument's bounds, or one sentence on stderr and exit status 2, never a traceback.

``str.isdigit()`` and ``int()`` accept digits of other scripts and superscripts (or raise on them),
and ``float()`` accepts nan and inf: none of them is a number a user meant."""

from __future__ import annotations

import pytest

from uvrd.cli import main

# An address nothing answers on: a command that got past its arguments would report it unreachable.
ENDPOINT = ["--api", "http://127.0.0.1:9", "--token", "t"]
NOT_NUMBERS = ["²", "٣", "１２", "-1", " 1", "1_0", "0x10", "nan", "inf", "1e309", "", "9" * 400]


@pytest.mark.parametrize("letter", ["²/0", "0/²", "٣/0", "0/١٢", "1_0/2", " 1/2", "1/-2", "1/" + "9" * 400])
@pytest.mark.parametrize("action", ["show", "replay"])
def test_a_letter_whose_coordinates_are_no_numbers_is_one_line_and_exit_2(capsys, action, letter):
    assert main(["dead-letters", action, letter, *ENDPOINT]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"uvrd dead-letters: {letter!r} is neither PARTITION/OFFSET nor a task"), err


@pytest.mark.parametrize("value", [*NOT_NUMBERS, "0", "1001"])
@pytest.mark.parametrize("action", ["list", "replay"])
def test_a_limit_that_is_no_number_in_bounds_is_refused_by_name(capsys, action, value):
    with pytest.raises(SystemExit) as e:
        main(["dead-letters", action, "--limit", value, *ENDPOINT])
    assert e.value.code == 2
    assert "argument --limit: must be a whole number from 1 to 1000" in capsys.readouterr().err


@pytest.mark.parametrize("argument, value, words", [
    *[("--priority", v, "must be a whole number from 1 to 5") for v in [*NOT_NUMBERS, "0", "6"]],
    *[("--timeout", v, "must be a number of seconds, such as 600 or 2.5") for v in [*NOT_NUMBERS, "1.", ".5"]],
])
def test_submits_numbers_are_refused_by_name_before_anything_is_sent(capsys, tmp_path, argument, value, words):
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF")
    with pytest.raises(SystemExit) as e:
        main(["submit", str(audio), argument, value, *ENDPOINT])
    assert e.value.code == 2
    assert f"argument {argument}: {words}" in capsys.readouterr().err
