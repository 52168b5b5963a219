"""Parameter checks shared by the synthetic generators."""

from __future__ import annotations

from ..cache import DataError


def check_ints(**limits: tuple[object, int]) -> None:
    """Each keyword is name=(value, least): the value must be an int (not a bool) of at least `least`."""
    for name, (value, least) in limits.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise DataError(f"{name} must be an integer of at least {least}, got {value!r}.")
