"""Numbers read from JSON (a request's body, a form's JSON text, a task message), checked against
bounds without an exception on the way.

Python's json reads ``NaN``, ``Infinity`` and ``1e309`` (as ``inf``) although JSON has no such
numbers, and integers of any length.  ``int()`` raises on NaN and infinity, ``float()`` on an
integer past 1e308, and so does ``format(value, "g")``; comparing an int with a float is exact
whatever their sizes.  So a value is taken as it came, compared with its bounds, and converted
only once it lies within them.
"""

from __future__ import annotations

import math

Number = int | float
# A number's digits shown in a sentence at most; a client's 401-digit integer is not echoed.
MAX_SHOWN_DIGITS = 15


def number(value: object) -> Number | None:
    """*value* if it is a JSON number that bounds can be checked against: an int of any size or a
    float other than NaN (infinity is a number that no finite bound holds); None for anything
    else, a bool included."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if isinstance(value, float) and math.isnan(value) else value


def whole(value: object) -> int | None:
    """*value* as an int if it is a JSON number with no fraction (JSON's ``5.0`` is 5); None for
    anything else, NaN and infinity included."""
    found = number(value)
    if isinstance(found, float):
        return int(found) if found.is_integer() else None
    return found


def within(value: Number, low: float, high: float) -> bool:
    return low <= value <= high


def shown(value: Number) -> str:
    """*value* for a sentence: short, whatever its size."""
    if isinstance(value, int) and len(str(abs(value))) > MAX_SHOWN_DIGITS:
        return f"a number of {len(str(abs(value)))} digits"
    return f"{value:g}"
