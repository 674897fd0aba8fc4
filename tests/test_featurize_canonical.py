"""The canonical forms every path hashes: strings, numbers, missing values."""

from __future__ import annotations

import math
import sys
import unicodedata
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.featurize import FeaturizeError, canonical, to_number
from shared.featurize.columns import already_canonical
from shared.featurize.featurizer import _LOG_K, LOG_INF, LOG_MISSING, LOG_NEG_INF, log_bucket_code, log_bucket_codes


@pytest.mark.parametrize("value, token", [
    ("abc", "abc"),
    ("  abc \t\n", "abc"),
    ("a b", "a b"),
    ("ABC", "ABC"),                      # case is kept
    ("e\u0301", "\u00e9"),               # NFD -> NFC
    ("\u00e9", "\u00e9"),
    ("\u212b", "\u00c5"),                # Angstrom sign -> A with ring (canonical equivalence)
    ("\ufb01", "\ufb01"),                # compatibility ligature is not folded (NFC, not NFKC)
    ("\u00a0x\u00a0", "\u00a0x\u00a0"),  # only ASCII whitespace is stripped
    ("日本語", "日本語"),
    ("", None), ("   ", None), ("\t\n\r\x0b\x0c", None),
    (None, None), (math.nan, None), (np.nan, None), (np.float32("nan"), None), (pd.NA, None), (pd.NaT, None),
    ("1", "1"), ("1.0", "1.0"), ("01", "01"), ("nan", "nan"),  # strings are never parsed
    (1, "1"), (-12, "-12"), (0, "0"), (2**63 - 1, "9223372036854775807"), (10**30, "1" + "0" * 30),
    (np.int64(-5), "-5"), (np.uint8(7), "7"),
    (True, "1"), (False, "0"), (np.bool_(True), "1"),
    (1.0, "1"), (-0.0, "0"), (0.0, "0"), (-7.0, "-7"), (1e20, "100000000000000000000"),
    (2.0**53, "9007199254740992"), (1e300, str(int(1e300))),
    (0.5, "0.5"), (0.1, "0.1"), (-2.25, "-2.25"), (1e-05, "1e-05"), (0.0001, "0.0001"), (1.5e-300, "1.5e-300"),
    (123456.789, "123456.789"), (np.float32(0.1), "0.10000000149011612"), (np.float64(2.0), "2"),
    (math.inf, "inf"), (-math.inf, "-inf"),
])
def test_canonical_forms(value, token):
    assert canonical(value) == token


def test_int_float_bool_and_string_one_are_one_token():
    assert canonical(1) == canonical(1.0) == canonical(True) == canonical("1") == canonical(np.int32(1)) == "1"
    assert canonical(0) == canonical(-0.0) == canonical(False) == canonical("0") == "0"


@pytest.mark.parametrize("value", [b"abc", [1, 2], {"a": 1}, object(), pd.Timestamp("2024-01-01"), 1j])
def test_canonical_rejects_other_types(value):
    with pytest.raises(FeaturizeError, match="cannot featurize a value of type"):
        canonical(value)


@pytest.mark.parametrize("value, number", [
    (None, None), (math.nan, None), ("", None), ("  ", None), ("nan", None), ("-NaN", None), (pd.NA, None),
    (0, 0.0), (-3, -3.0), (True, 1.0), (False, 0.0), (2.5, 2.5), (np.float32(0.5), 0.5), (np.int64(7), 7.0),
    (2**53 + 1, 9007199254740992.0), (10**400, math.inf), (-(10**400), -math.inf),
    ("3", 3.0), (" 2.5 ", 2.5), ("1e3", 1000.0), ("-0", -0.0), (".5", 0.5), ("1.", 1.0), ("+4", 4.0),
    ("007", 7.0), ("1E-2", 0.01), ("inf", math.inf), ("-Infinity", -math.inf), ("+INF", math.inf),
    ("1e999", math.inf),
])
def test_to_number(value, number):
    got = to_number(value)
    assert got == number if number is not None else got is None
    if number is not None:
        assert math.copysign(1, got) == math.copysign(1, number)


@pytest.mark.parametrize("value", ["abc", "1_000", "0x10", "1,5", "--1", "1e", "e3", "１２"])
def test_to_number_rejects_non_decimal_strings(value):
    with pytest.raises(FeaturizeError, match="not a number"):
        to_number(value)


@pytest.mark.parametrize("value", [b"1", [1], pd.Timestamp("2024-01-01")])
def test_to_number_rejects_other_types(value):
    with pytest.raises(FeaturizeError, match="cannot read a number"):
        to_number(value)


def test_record_path_does_not_import_pandas():
    """canonical() must not pull pandas into a bidder process that never imported it."""
    import subprocess

    code = ("import sys; from shared.featurize import Featurizer;"
            "f = Featurizer('generated'); f.transform_record({'site_id': 'x', 'user_segments': ['a']});"
            "print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_canonical_strings_are_idempotent_and_nfc(s):
    t = canonical(s)
    if t is not None:
        assert canonical(t) == t
        assert unicodedata.is_normalized("NFC", t)
        assert t == t.strip(" \t\n\r\x0b\x0c")
    assert canonical(unicodedata.normalize("NFD", s)) == canonical(unicodedata.normalize("NFC", s))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab \t\u00e9e\u0301\u00a0\n日"), max_size=4), max_size=12))
def test_arrow_fast_path_predicate_matches_canonical(strings):
    """The batch path skips canonical() only when it provably changes nothing."""
    distinct = list(dict.fromkeys(strings))
    if already_canonical(pa.array(distinct, type=pa.string())):
        assert all(canonical(s) == s for s in distinct)
    if distinct and all(canonical(s) == s and s.isascii() for s in distinct):
        assert already_canonical(pa.array(distinct, type=pa.string()))


def test_log_buckets_exact_at_every_power_of_two():
    """floor(log2(1 + |x|)) computed two ways agrees on 2**k - 1 and its float neighbours."""
    xs = []
    for k in range(0, 1024):
        edge = 2.0**k - 1
        xs += [edge, np.nextafter(edge, 0), np.nextafter(edge, math.inf)]
    xs += [0.0, -0.0, 0.5, 1.0, 2.0**53 - 1, 2.0**53, 2.0**53 + 2, np.finfo(float).max, 5e-324]
    xs = np.array(xs + [-x for x in xs])
    vec = log_bucket_codes(xs)
    assert vec.tolist() == [log_bucket_code(float(x)) for x in xs]
    for x, code in zip(xs.tolist(), vec.tolist()):  # exact oracle in rationals
        k = code % _LOG_K
        assert 2**k <= Fraction(abs(x)) + 1 < 2 ** (k + 1)
    assert log_bucket_code(3.0) == 2 and log_bucket_code(2.9999999999999996) == 1
    assert log_bucket_code(-3.0) == _LOG_K + 2 and log_bucket_code(-0.5) == _LOG_K
    assert log_bucket_code(np.finfo(float).max) == 1023
    special = log_bucket_codes(np.array([math.inf, -math.inf, math.nan]))
    assert special.tolist() == [LOG_INF, LOG_NEG_INF, LOG_MISSING]
    assert log_bucket_code(None) == LOG_MISSING


@settings(max_examples=500, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_log_buckets_scalar_and_vectorised_agree(x):
    expected = log_bucket_code(None if math.isnan(x) else x)
    assert log_bucket_codes(np.array([x]))[0] == expected
    if math.isfinite(x):  # exact oracle: 2**k <= 1 + |x| < 2**(k+1) in rationals
        k = expected % _LOG_K
        assert 2**k <= Fraction(abs(x)) + 1 < 2 ** (k + 1)
        assert (expected >= _LOG_K) == (x < 0)
