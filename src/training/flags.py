"""Declaring a trainer flag: `flag()` puts help, choices, nargs and the valid range in a config field's metadata,
`Range` says which numbers a flag accepts, `check_ranges` checks a config group against them, and `option` spells a
field as its command-line flag. Below config.py, which declares the flags, and params.py, which parses them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ANY_FINITE", "NON_NEGATIVE", "POSITIVE", "Range", "check_int", "check_ranges", "count", "flag", "option"]


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric flag: an interval, each end open or closed or absent (NaN and infinities are
    never valid). `params.py` checks every numeric flag against its range before anything is built."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and not isinstance(value, int):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        kind = "an int" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{kind} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {_num(self.high)}"
        return f"{kind} (finite)"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def count(minimum: int) -> Range:
    """An int of at least `minimum`."""
    return Range(low=minimum, integer=True)


POSITIVE = Range(low=0, low_open=True)
NON_NEGATIVE = Range(low=0)
ANY_FINITE = Range()


def flag(
    default: Any = None,
    help: str = "",
    *,
    factory=None,
    choices=None,
    nargs: str | None = None,
    valid: Range | None = None,
):
    """A config field that is also a command-line flag: `help`, `choices`, `nargs` and, for a numeric flag, its
    `valid` range travel in its metadata."""
    if not help:
        raise ValueError("every flag needs a help text")
    choices = tuple(choices) if choices is not None else None
    metadata = {"help": help, "choices": choices, "nargs": nargs, "valid": valid}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option(name: str) -> str:
    """The command-line spelling of config field `name`: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def check_ranges(group: object) -> None:
    """Every numeric field of a config group inside its flag's `valid` range (each item of a list flag; None, the
    "not given" of optional flags, passes); the error names the flag, the value and the range."""
    for f in dataclasses.fields(group):
        valid, value = f.metadata.get("valid"), getattr(group, f.name)
        if valid is None or value is None:
            continue
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if item not in valid:
                raise ValueError(f"{option(f.name)} {item!r} is invalid ({f.name}={value!r}): use {valid}")


def check_int(name: str, value: object, *, minimum: int) -> None:
    """`value` must be an int (not a bool) of at least `minimum`; the error names the setting."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid; use an int >= {minimum}")
