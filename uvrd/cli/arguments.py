"""The types of the ``uvrd`` command's numeric arguments, by the rule numbers from peers follow
(uvrd/peers/numbers.py): plain ASCII digits of a bounded length.

argparse's own ``type=int`` takes other scripts' digits ("٣") and ``type=float`` takes nan and
inf; what a user typed by mistake is refused instead, by argparse, as one sentence naming the
argument, with exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from uvrd.peers import numbers


def whole(low: int, high: int) -> Callable[[str], int]:
    """The argument type of a whole number from *low* to *high*."""
    def parse(text: str) -> int:
        value = numbers.decimal(text)
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, not {text[:40]!r}")
        return value
    return parse


def seconds(text: str) -> float:
    """The argument type of a duration in seconds, whole or with a fraction."""
    value = numbers.fraction(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, such as 600 or 2.5, not {text[:40]!r}")
    return value
