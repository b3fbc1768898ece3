"""Did-you-mean hints for misspelt names (keywords, ops, functions)."""

from __future__ import annotations

import difflib
from typing import Iterable, Optional


def closest(word: str, choices: Iterable[str]) -> Optional[str]:
    """The choice ``word`` is most likely a misspelling of ('tahn' -> 'tanh'), or None."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'tanh'?"`` to append to a message, or "" when nothing is close."""
    guess = closest(word, choices)
    return f"; did you mean '{guess}'?" if guess else ""
