"""Numbers read from peers (HTTP headers, query strings, signatures), parsed strictly.

``str.isdigit()`` accepts characters that ``int()`` refuses (superscripts,
other scripts' digits), and ``int()``/``float()`` accept what no protocol
allows (signs, spaces, underscores, "nan", a million digits).  A value that
came over the network is a number here only if it is plain ASCII digits of a
bounded length; anything else is None, never an exception.
"""

from __future__ import annotations

import email.utils
import re
from datetime import UTC

_DIGITS = re.compile(r"[0-9]+")
_DIGITS_AND_FRACTION = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Enough for any time stamp or byte count uvrd meets; more is a hostile peer, not a number.
MAX_DIGITS = 18
# "Sun, 06 Nov 1994 08:49:37 GMT" and its obsolete forms fit well inside this.
MAX_HTTP_DATE_CHARS = 64


def decimal(value: object, max_digits: int = MAX_DIGITS) -> int | None:
    """The non-negative integer *value* spells in ASCII digits, or None."""
    if not isinstance(value, str) or not 0 < len(value) <= max_digits or not _DIGITS.fullmatch(value):
        return None
    return int(value)


def fraction(value: object, max_chars: int = MAX_DIGITS) -> float | None:
    """The non-negative number *value* spells in ASCII digits with an optional fraction ("2.5"),
    or None: never nan, inf or an exponent, which ``float()`` would read."""
    if not isinstance(value, str) or not 0 < len(value) <= max_chars or not _DIGITS_AND_FRACTION.fullmatch(value):
        return None
    return float(value)


def retry_after(value: object, now: float, cap: float) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` value (delay-seconds or HTTP-date, RFC 9110
    section 10.2.3), at most *cap*; None when the value is neither.  *now* is the Unix time."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    seconds = decimal(value)
    if seconds is not None:
        return float(min(seconds, cap))
    if not value or len(value) > MAX_HTTP_DATE_CHARS or not value.isascii():
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's unknown zone; HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    try:
        delay = when.timestamp() - now
    except (OverflowError, OSError, ValueError):
        return None
    return float(min(max(delay, 0.0), cap))
