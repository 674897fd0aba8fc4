"""Golden vectors: the committed file is current, and every path reproduces it exactly.

A change to hashing, key layout or canonical forms fails here loudly. If the change is
intended, regenerate with ``python -m shared.featurize.golden``, bump the scheme version
(``HASHING_SCHEME``) and retrain: served models would otherwise see other features.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import mmh3
import numpy as np
import pandas as pd
import pytest

from shared.featurize import Featurizer, load_spec
from shared.featurize.golden import GOLDEN_FILE, golden_cases, read_golden, render, typed_table

GOLDEN = Path(__file__).parent / "golden"
LINES = read_golden(GOLDEN / GOLDEN_FILE)
SPECS = {name: load_spec(GOLDEN / f"{name}.toml") for name in ("golden_a", "golden_b")}


def groups() -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in LINES:
        out[line["spec"], line["table"]].append(line)
    return out


def assert_row(matrix, row: int, line: dict) -> None:
    got = matrix.getrow(row)
    assert got.indices.tolist() == line["indices"], line["note"]
    assert got.data.dtype == np.float32
    assert got.data.tolist() == line["values"], line["note"]


def test_committed_golden_file_is_current():
    assert (GOLDEN / GOLDEN_FILE).read_text(encoding="utf-8") == render(golden_cases(GOLDEN)), \
        "featurization output changed: see this module's docstring"


def test_golden_file_covers_the_required_cases():
    notes = " | ".join(line["note"] for line in LINES)
    for needle in ("empty strings", "NFD", "CJK", "1 UTF-8 bytes", "7 UTF-8 bytes", "no fields at all",
                   "every field null", "NaN is missing", "infinities", "booleans", "int64 extremes",
                   "repeats", "cross with a missing side", "string digits equal integers", "collision",
                   "negative zero", "huge"):
        assert needle in notes, needle
    assert len(LINES) > 100


@pytest.mark.parametrize("cache_size", [0, 4096])
def test_record_path_reproduces_golden(cache_size):
    featurizers = {name: Featurizer(spec, cache_size=cache_size) for name, spec in SPECS.items()}
    for _ in range(2):  # second pass: answers come from the per-field caches
        for line in LINES:
            indices, values = featurizers[line["spec"]].transform_record(line["record"])
            assert indices.dtype == np.int32 and values.dtype == np.float32
            assert indices.tolist() == line["indices"], line["note"]
            assert values.tolist() == line["values"], line["note"]


def test_golden_keys_reproduce_with_plain_mmh3():
    """What a bidder in another language does: hash the listed keys, sum, round to float32."""
    for line in LINES:
        spec = SPECS[line["spec"]]
        entries = []
        for position, (key, index, value) in enumerate(line["keys"]):
            assert mmh3.hash(key.encode("utf-8"), spec.seed, signed=False) % 2**spec.bits == index
            entries.append((index, position, value))
        sums: dict[int, float] = {}
        for index, _, value in sorted(entries):
            sums[index] = sums.get(index, 0.0) + value
        expected = [(i, float(np.float32(v))) for i, v in sorted(sums.items()) if np.float32(v) != 0]
        assert [i for i, _ in expected] == line["indices"], line["note"]
        assert [v for _, v in expected] == line["values"], line["note"]


def test_batch_path_on_typed_arrow_tables_reproduces_golden():
    checked = 0
    for (spec_name, _), lines in groups().items():
        table = typed_table(SPECS[spec_name], [line["record"] for line in lines])
        if table is None:  # a field mixes Python types: no typed table can hold it
            continue
        fz = Featurizer(SPECS[spec_name])
        m = fz.transform(table)
        assert m.shape == (len(lines), SPECS[spec_name].num_features) and m.dtype == np.float32
        for row, line in enumerate(lines):
            assert_row(m, row, line)
        # the same values as pandas columns backed by Arrow (nullable int64, bool, string)
        m2 = fz.transform(table.to_pandas(types_mapper=pd.ArrowDtype))
        assert (m2 != m).nnz == 0
        checked += len(lines)
    assert checked > 100


def test_batch_path_on_object_columns_reproduces_golden():
    """pandas object columns keep every Python value as is, mixed types included."""
    for spec_name, spec in SPECS.items():
        lines = [line for line in LINES if line["spec"] == spec_name]
        frame = pd.DataFrame({f.name: pd.Series([line["record"].get(f.name) for line in lines], dtype=object)
                              for f in spec.fields})
        m = Featurizer(spec).transform(frame)
        for row, line in enumerate(lines):
            assert_row(m, row, line)


def test_batch_path_on_default_pandas_conversion():
    """Arrow -> pandas turns nullable int columns into float64 with NaN: still the same
    features, as long as the integers are exact in float64 (|x| <= 2**53)."""
    for (spec_name, _), lines in groups().items():
        records = [line["record"] for line in lines]
        table = typed_table(SPECS[spec_name], records)
        big = any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53
                  for r in records for v in r.values())
        if table is None or big:
            continue
        frame = table.to_pandas()
        m = Featurizer(SPECS[spec_name]).transform(frame)
        for row, line in enumerate(lines):
            assert_row(m, row, line)


def test_batch_path_in_chunks_and_slices_matches(monkeypatch):
    import shared.featurize.featurizer as featurizer_module

    lines = [line for line in LINES if line["spec"] == "golden_a" and line["table"] == "random1"]
    table = typed_table(SPECS["golden_a"], [line["record"] for line in lines])
    monkeypatch.setattr(featurizer_module, "CHUNK_ROWS", 7)
    m = Featurizer(SPECS["golden_a"]).transform(table)
    for row, line in enumerate(lines):
        assert_row(m, row, line)
    sliced = Featurizer(SPECS["golden_a"]).transform(table.slice(5, 10))
    for row, line in enumerate(lines[5:15]):
        assert_row(sliced, row, line)
