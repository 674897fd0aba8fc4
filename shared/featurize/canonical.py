"""The canonical string form of a raw value: the one definition every path hashes.

Batch (pandas / Arrow), single-record (bidder) and Spark featurization all reduce a
raw value to a token with :func:`canonical` (categorical and multi-valued fields)
or to a number with :func:`to_number` (numeric fields). The batch path calls these
functions once per *distinct* value of a column, the record path once per value
(behind a small cache), so both paths agree by construction.

Canonical string form (``canonical(value) -> str | None``; ``None`` means *missing*)
-------------------------------------------------------------------------------
* ``None``, float NaN, ``pandas.NA`` / ``NaT``           -> missing
* ``str``: Unicode NFC normalisation, then leading and trailing ASCII whitespace
  (space, ``\\t``, ``\\n``, ``\\r``, ``\\v``, ``\\f``) is stripped; inner whitespace and
  case are kept. An empty result is *missing*. Strings are never parsed: ``"1.0"``
  stays ``"1.0"`` and ``"01"`` stays ``"01"``. So ``"é"`` written NFC (U+00E9) and
  NFD (U+0065 U+0301) are the same token, ``" a "`` equals ``"a"``.
* ``bool``: ``True`` -> ``"1"``, ``False`` -> ``"0"`` (a flag stored as a 0/1 integer
  column in the warehouse and sent as a JSON boolean to the bidder hashes the same).
* ``int``: its decimal form, ``-12`` -> ``"-12"`` (exact, any size).
* ``float``: NaN -> missing; ``inf`` -> ``"inf"``, ``-inf`` -> ``"-inf"``; an integral
  value is written as the exact integer it equals (``1.0`` -> ``"1"``, ``-0.0`` -> ``"0"``,
  ``1e20`` -> ``"100000000000000000000"``), so int 1, float 1.0, ``True`` and string
  ``"1"`` are one token — an integer column that reaches the batch path as float64
  with NaN for nulls hashes like the integers the bidder sees. A non-integral float
  is Python's ``repr``: the shortest digits that round-trip, fixed-point unless the
  decimal exponent is below -4 (``0.5`` -> ``"0.5"``, ``1e-05`` -> ``"1e-05"``). Every
  non-integral float has magnitude below 2**52, so repr never uses a positive exponent.
  Caveat: an integer column converted to float64 (pandas' default for nullable ints) is
  exact only up to 2**53 in magnitude; keep larger ids as int64 (Arrow, pandas ``Int64``)
  or strings, as the Spark path (Arrow) does.
* numpy scalars behave as the Python type they hold (``np.float32(0.1)`` is the float
  0.10000000149011612).
* anything else (bytes, dates, lists for a scalar field, ...) raises :class:`FeaturizeError`.

Numbers for numeric fields (``to_number(value) -> float | None``)
-----------------------------------------------------------------
* missing as above (``None``, NaN, NA, and a string that is empty after stripping) -> ``None``
* ``bool`` -> 1.0 / 0.0; ``int`` -> nearest float64 (beyond float range -> ±inf);
  ``float`` -> itself.
* ``str``: stripped of ASCII whitespace, then it must be a decimal literal
  ``[+-]?(digits[.digits]|.digits)([eE][+-]?digits)?`` or (any case) ``inf``,
  ``infinity``, ``nan`` with an optional sign; it is converted with correct rounding.
  Anything else raises :class:`FeaturizeError`.
"""

from __future__ import annotations

import math
import re
import sys
import unicodedata
from typing import Any

import numpy as np

from shared.errors import InputError

#: The ASCII whitespace characters stripped from both ends of a string.
ASCII_WHITESPACE = " \t\n\r\x0b\x0c"

_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf,
            "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf,
            "nan": None, "+nan": None, "-nan": None}


class FeaturizeError(InputError):
    """A raw value that cannot be featurized (wrong type, unparsable number)."""


def _is_pandas_missing(value: Any) -> bool:
    pd = sys.modules.get("pandas")  # never import pandas on the record path
    return pd is not None and (value is pd.NA or value is pd.NaT)


def _float_token(x: float) -> str | None:
    if x != x:
        return None
    if x == math.inf:
        return "inf"
    if x == -math.inf:
        return "-inf"
    if x.is_integer():
        return str(int(x))
    return repr(x)


def canonical(value: Any) -> str | None:
    """The canonical token of ``value``, or ``None`` when it is missing (see module doc)."""
    if isinstance(value, str):
        if not value.isascii():
            value = unicodedata.normalize("NFC", value)
        return value.strip(ASCII_WHITESPACE) or None
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _float_token(float(value))
    if _is_pandas_missing(value):
        return None
    raise FeaturizeError(f"cannot featurize a value of type {type(value).__name__}: {value!r}")


def to_number(value: Any) -> float | None:
    """The float64 a numeric field sees for ``value``, or ``None`` when missing (see module doc)."""
    if isinstance(value, (float, np.floating)):
        x = float(value)
        return None if x != x else x
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return 1.0 if value else 0.0
    if isinstance(value, (int, np.integer)):
        try:
            return float(int(value))
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        s = value.strip(ASCII_WHITESPACE)
        if not s:
            return None
        if _DECIMAL.fullmatch(s):
            return float(s)
        special = s.lower()
        if special in _SPECIAL:
            return _SPECIAL[special]
        raise FeaturizeError(f"not a number: {value!r}")
    if _is_pandas_missing(value):
        return None
    raise FeaturizeError(f"cannot read a number from a value of type {type(value).__name__}: {value!r}")
