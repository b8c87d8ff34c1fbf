"""Checks of values that the command line and the Python API both take (one function per concept).

Each raises InputError naming `flag` (`--seed` on the command line, `seed` in the API), before
any work starts.
"""

from __future__ import annotations

import numbers

from transforms.core.errors import InputError

MAX_SEED = 2**32 - 1  # numpy's (and scikit-learn's random_state) limit


def check_seed(seed, flag: str = "--seed") -> int:
    """A random seed: an int in [0, 2**32 - 1] (numpy and scikit-learn refuse anything else)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InputError(
            flag,
            f"expected a whole number in 0..{MAX_SEED}, e.g. 0, got {seed!r} ({type(seed).__name__})",
        )
    if not 0 <= int(seed) <= MAX_SEED:
        raise InputError(
            flag, f"must be a whole number in 0..{MAX_SEED} (numpy's limit), got {int(seed)}"
        )
    return int(seed)


def check_int(value, flag: str, what: str, example: int) -> int:
    """An int given where one is expected (not a string, a float or a bool): the API's parameters."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(
            flag,
            f"expected {what} as an int, e.g. {example}, got {value!r} ({type(value).__name__})",
        )
    return int(value)
