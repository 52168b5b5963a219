"""`--set key=value` parsing and type checks of config values against the known defaults."""
from __future__ import annotations

from typing import Any

from search.errors import UsageError
from trainables.registry import value_problem

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
TEST_KEY = "eval/test"  # True in no config a search runs; tune-train sets it after these checks


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(type(value), type(value).__name__)


def check_value(key: str, value: Any, known: dict[str, Any], where: str) -> Any:
    """Return value (ints widened to float where the default is a float) or raise UsageError.

    Besides the type, keys with a fixed set of names or a numeric range are checked too, and
    eval/test=True is refused: a search never opens the held-out test split.
    """
    if key not in known:
        raise UsageError(f"Unknown config key {key!r} in {where}; known keys are: {', '.join(sorted(known))}.")
    default = known[key]
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(default):
        raise UsageError(
            f"{key}={value!r} in {where} has the wrong type: {key} takes {_type_name(default)} "
            f"(default {default!r})."
        )
    if problem := value_problem(key, value):
        raise UsageError(f"{problem[:-1]} (in {where}).")
    if key == TEST_KEY and value:
        raise UsageError(f"{key}=True in {where} is not accepted: a search never evaluates on the held-out test "
                         f"split; tune-train does, once, on the config it re-trains.")
    return value


def parse_value(key: str, text: str, known: dict[str, Any]) -> Any:
    """Parse the text of `--set key=text` into the type of the key's default."""
    if key not in known:
        raise UsageError(f"Unknown config key {key!r} in --set; known keys are: {', '.join(sorted(known))}.")
    default = known[key]
    try:
        if isinstance(default, bool):
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError
            return text.lower() in _TRUE
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise UsageError(
            f"--set {key}={text} has the wrong type: {key} takes {_type_name(default)} (default {default!r})."
        ) from None
    return text


def parse_sets(items: list[str], known: dict[str, Any]) -> dict[str, Any]:
    """Parse repeated `--set key=value` flags."""
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r} is not of the form key=value, e.g. --set optim/lr=1e-4.")
        values[key.strip()] = parse_value(key.strip(), text.strip(), known)
    return values
