"""Hyperparameter constraints, declared once next to each estimator.

In scikit-learn's ``_parameter_constraints`` style: an estimator class maps each
constructor argument to a constraint; :func:`validate_params` checks an instance's
values, and the search reads the same objects to bound a search-space file, so the
limits cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Mapping

from shared.errors import ConfigurationError


class ParameterError(ConfigurationError):
    """A hyperparameter value outside its declared constraint."""


@dataclass(frozen=True)
class Interval:
    """A number in [low, high] (``open_low`` / ``open_high`` exclude an end); ``integer``
    asks for an int (bools are refused)."""

    low: float
    high: float
    integer: bool = False
    open_low: bool = False
    open_high: bool = False

    def check(self, name: str, value: Any) -> None:
        """Raise :class:`ParameterError` unless ``value`` is a finite number (integer if required) in the interval."""
        kind = Integral if self.integer else Real
        # a bool, not an isinstance narrowing: numbers.Real declares only < and <= (typeshed),
        # and the bounds below compare the value as given (an int beyond 2**53 is not rounded)
        is_number = not isinstance(value, bool) and isinstance(value, kind) and math.isfinite(float(value))
        if not is_number:
            raise ParameterError(f"{name} must be {'an integer' if self.integer else 'a finite number'}, "
                                 f"got {value!r}")
        lo_ok = value > self.low if self.open_low else value >= self.low
        hi_ok = value < self.high if self.open_high else value <= self.high
        if not (lo_ok and hi_ok):
            raise ParameterError(f"{name} must be in {self}, got {value!r}")

    def __str__(self) -> str:
        return f"{'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple

    def check(self, name: str, value: Any) -> None:
        """Raise :class:`ParameterError` unless ``value`` is one of the allowed values."""
        if value not in self.values:
            raise ParameterError(f"{name} must be one of {list(self.values)}, got {value!r}")

    def __str__(self) -> str:
        return str(list(self.values))


@dataclass(frozen=True)
class Seed:
    """An int, a numpy RandomState or None (scikit-learn's ``random_state``)."""

    def check(self, name: str, value: Any) -> None:
        """Raise :class:`ParameterError` unless ``value`` is an int, a RandomState, a Generator or None."""
        if value is None or (isinstance(value, Integral) and not isinstance(value, bool)):
            return
        if type(value).__name__ in ("RandomState", "Generator"):
            return
        raise ParameterError(f"{name} must be an int, a RandomState or None, got {value!r}")


Constraint = Interval | Options | Seed


def validate_params(params: Mapping[str, Any], constraints: Mapping[str, Constraint]) -> None:
    """Raise :class:`ParameterError` naming the first parameter that breaks its constraint
    (or is not declared at all)."""
    for name, value in params.items():
        if name not in constraints:
            raise ParameterError(f"unknown hyperparameter {name!r}; allowed: {sorted(constraints)}")
        constraints[name].check(name, value)
