"""The yes/no family: the strict first-word reading POPE and MME share."""

from __future__ import annotations

import re

_FIRST_WORD = re.compile(r"\s*([A-Za-z]+)")


def strict_yes_no(text: str) -> str | None:
    """The first word, lower-cased, if it is "yes" or "no"; otherwise ``None`` (non-conforming).

    "Yes, there is a dog." -> "yes"; "NO" -> "no"; "Not sure", "There is no dog", "Nope",
    "" -> ``None``.
    """
    m = _FIRST_WORD.match(text)
    word = m.group(1).lower() if m else ""
    return word if word in ("yes", "no") else None
