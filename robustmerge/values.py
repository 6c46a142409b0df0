"""Strict parsing of user-given values (CLI strings, YAML and JSON config values).

Python's ``bool("false")`` is True and ``float("nan")`` passes every ``<``/``>`` range check,
so config values are never converted with the built-ins: these parsers accept only what
means what it says and raise the caller's :class:`~robustmerge.errors.UserError` otherwise.
"""
from __future__ import annotations

import math
from typing import Any

from .errors import UserError

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def parse_bool(value: Any, what: str, error: type[UserError] = UserError) -> bool:
    """``value`` as a bool: a bool, the int 0 or 1, or one of :data:`TRUE_WORDS` /
    :data:`FALSE_WORDS` (any case); anything else raises ``error`` naming ``what``.
    So the YAML string ``"false"`` is False, not True."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise error(f"{what} is not a boolean; write true or false")


def finite_number(value: Any, what: str, error: type[UserError] = UserError) -> float:
    """``value`` as a finite float: an int or float (not a bool, not NaN/Inf), else ``error``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{what} is not a number (got {type(value).__name__} {value!r}); give a finite number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise error(f"{what} is not a finite number; give a finite number")
    return number


def whole_number(value: Any, what: str, error: type[UserError] = UserError) -> int:
    """``value`` as an int: an int, or an integral float such as ``8.0`` (not a bool, not NaN)."""
    number = finite_number(value, what, error)
    if number != int(number):
        raise error(f"{what} is not a whole number; give an integer")
    return int(number)
