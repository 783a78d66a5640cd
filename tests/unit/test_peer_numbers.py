"""Numbers from peers: plain ASCII digits of a bounded length, or None, never an exception."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from support import fuzz_examples
from uvrd.peers import numbers as peer_numbers

# What isdigit() accepts but int() refuses, digits int() reads from other scripts, and what int() and
# float() take that no protocol allows.
HOSTILE = ["²", "¹²", "١٢٣", "１２", "-1", "+1", " 1", "1 ", "1_000", "1e3", "0x10", "nan", "inf", "1.5", "",
           "9" * 19, "\u0000", "٣"]


def test_plain_ascii_digits_are_numbers():
    assert peer_numbers.decimal("0") == 0
    assert peer_numbers.decimal("1700000000") == 1700000000
    assert peer_numbers.decimal("9" * 18) == int("9" * 18)


def test_everything_else_is_none():
    for value in [*HOSTILE, None, 12, b"12", ["1"]]:
        assert peer_numbers.decimal(value) is None, value


@settings(max_examples=fuzz_examples(), deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_a_bounded_number_or_none(text):
    value = peer_numbers.decimal(text)
    if value is None:
        assert not (text.isascii() and text.isdigit() and len(text) <= peer_numbers.MAX_DIGITS)
    else:
        assert value == int(text) and 0 <= value < 10 ** peer_numbers.MAX_DIGITS


def test_retry_after_takes_delay_seconds_and_http_dates_capped():
    now = 1_700_000_000.0
    assert peer_numbers.retry_after("7", now, cap=60) == 7.0
    assert peer_numbers.retry_after("86400", now, cap=60) == 60.0
    in_30_s = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 30))
    assert peer_numbers.retry_after(in_30_s, now, cap=60) == 30.0
    assert peer_numbers.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now, cap=60) == 0.0, "a past date: now"
    assert peer_numbers.retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now, cap=60) == 60.0
    assert peer_numbers.retry_after(" 7 ", now, cap=60) == 7.0, "header whitespace is not part of the value"
    for value in [v for v in HOSTILE if v.strip() != "1"] + [None, "Mon, 99 Zzz 9999 99:99:99 GMT",
                                                           "Wed, 21 Oct 2015 07:28:00 GMT" * 4]:
        assert peer_numbers.retry_after(value, now, cap=60) is None, value


@settings(max_examples=fuzz_examples(), deadline=None)
@given(st.one_of(st.text(max_size=80), st.from_regex(r"[A-Za-z]{3}, [0-9]{1,2} [A-Za-z]{3} [0-9]{1,6} "
                                                     r"[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2} [A-Z+0-9-]{1,5}")))
def test_any_retry_after_is_a_wait_within_the_cap_or_none(text):
    wait = peer_numbers.retry_after(text, time.time(), cap=300)
    assert wait is None or 0.0 <= wait <= 300


def test_a_fraction_is_ascii_digits_with_at_most_one_point():
    assert (peer_numbers.fraction("600"), peer_numbers.fraction("2.5")) == (600.0, 2.5)
    for value in [*(h for h in HOSTILE if h != "1.5"), "1.", ".5", "1.2.3", None, 2.5]:
        assert peer_numbers.fraction(value) is None, value
