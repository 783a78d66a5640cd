"""The webhook signature a receiver checks: HMAC over the raw body, inside a replay window."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import fuzz_examples
from uvrd.uploader import webhook

SECRET = "whsec"
BODY = b'{"task_uuid":"0b0c6b52-2c4d-4a0e-9a52-5c1b2d3e4f60","status":"success"}'


def test_a_fresh_signature_over_the_exact_body_is_accepted():
    now = time.time()
    header = webhook.sign(SECRET, BODY, now=now)
    assert webhook.verify(SECRET, header, BODY, now=now)
    assert not webhook.verify(SECRET, header, BODY + b" ", now=now), "the body is signed byte for byte"
    assert not webhook.verify("other", header, BODY, now=now)


@pytest.mark.parametrize("age", [webhook.REPLAY_WINDOW_S + 1, 3600, -(webhook.REPLAY_WINDOW_S + 1)])
def test_a_signature_outside_the_replay_window_is_refused(age):
    """A captured delivery replayed later (or one stamped in the future) must not pass."""
    now = time.time()
    header = webhook.sign(SECRET, BODY, now=now - age)
    assert not webhook.verify(SECRET, header, BODY, now=now)


def test_the_window_is_five_minutes_either_side():
    now = time.time()
    for age in (webhook.REPLAY_WINDOW_S - 1, -(webhook.REPLAY_WINDOW_S - 1)):
        assert webhook.verify(SECRET, webhook.sign(SECRET, BODY, now=now - age), BODY, now=now)
    assert webhook.REPLAY_WINDOW_S == 300


def test_the_timestamp_is_part_of_what_is_signed():
    """Moving t forward to get back into the window breaks the signature."""
    now = time.time()
    old = webhook.sign(SECRET, BODY, now=now - 3600)
    digest = old.partition(",v1=")[2]
    assert not webhook.verify(SECRET, f"t={int(now)},v1={digest}", BODY, now=now)


@pytest.mark.parametrize("header", [None, "", "v1=abc", "t=abc,v1=abc", "t=,v1=", "garbage"])
def test_malformed_headers_are_refused(header):
    assert not webhook.verify(SECRET, header, BODY)


@settings(max_examples=fuzz_examples(), deadline=None)
@given(header=st.one_of(st.text(max_size=120), st.builds(lambda t, v: f"t={t},v1={v}", st.text(max_size=20),
                                                          st.text(max_size=70))))
def test_any_header_a_receiver_gets_is_refused_or_accepted_never_an_error(header):
    """The signature header comes from whoever calls the receiver: a forged one (non-ASCII digits in t,
    non-ASCII in v1) must be a refusal, not an exception."""
    assert webhook.verify(SECRET, header, BODY) in (True, False)


def test_a_timestamp_of_digits_int_cannot_read_is_refused():
    now = time.time()
    digest = webhook.sign(SECRET, BODY, now=now).partition(",v1=")[2]
    for t in ("¹⁷⁰⁰⁰⁰⁰⁰⁰⁰", "١٧٠٠٠٠٠٠٠٠", f" {int(now)}", f"+{int(now)}"):
        assert not webhook.verify(SECRET, f"t={t},v1={digest}", BODY, now=now)
    assert not webhook.verify(SECRET, f"t={int(now)},v1=é{digest[1:]}", BODY, now=now)
