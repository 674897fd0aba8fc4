"""Batch (pandas / Arrow) and single-record paths agree: property tests over thousands of
generated records, the real public Criteo and Avazu samples, and the error contract."""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.featurize import FeatureSpec, Featurizer, FeaturizeError, SpecError, load_spec
from shared.featurize.golden import CATEGORICAL_TYPES, MULTI_TYPES, NUMERIC_TYPES, random_records, typed_table

GOLDEN = Path(__file__).parent / "golden"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPEC = load_spec(GOLDEN / "golden_a.toml")
ABSENT = object()

# --- strategies -------------------------------------------------------------------------

EDGE_TEXT = ["", " ", " a", "a ", "\u00e9", "e\u0301", "\u212b", "\u00c5", "日本語", "<NA>", "1", "1.0", "\x1f",
             "\x00", "\u00a0", "a\tb"]
texts = st.one_of(st.text(max_size=6), st.sampled_from(EDGE_TEXT), st.sampled_from(["a", "b", "c"]))
ints = st.one_of(st.integers(-3, 40), st.integers(-(2**63), 2**63 - 1), st.sampled_from([2**53, 2**53 + 1]))
floats = st.one_of(st.floats(), st.floats(-1e3, 1e3).map(lambda x: float(round(x))),
                   st.sampled_from([0.5, -0.0, 1.0, 0.9999999999999999, 2.0**53, 1e-50, 3.0, 2.9999999999999996]))
numstrs = st.one_of(
    st.from_regex(r"[ \t]?[+-]?([0-9]{1,4}(\.[0-9]{0,3})?|\.[0-9]{1,3})([eE][+-]?[0-9]{1,3})?[ \t]?", fullmatch=True),
    st.sampled_from(["", " ", "inf", "-Infinity", "nan", "NaN"]))
VALUES = {"str": texts, "int": ints, "float": floats, "bool": st.booleans(), "numstr": numstrs,
          "list<str>": st.lists(st.one_of(texts, st.none()), max_size=5),
          "list<int>": st.lists(st.one_of(st.integers(-3, 9), st.none()), max_size=5)}


def with_missing(values: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(values, values, values, st.none(), st.just(ABSENT))


def record_of(field_values: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    return st.fixed_dictionaries({k: with_missing(v) for k, v in field_values.items()}).map(
        lambda r: {k: v for k, v in r.items() if v is not ABSENT})


KIND_TYPES = {"categorical": CATEGORICAL_TYPES, "numeric": NUMERIC_TYPES, "multivalued": MULTI_TYPES}
# Mixed: every record may use any type for a field (pandas object columns hold that).
mixed_records = st.lists(record_of({f.name: st.one_of(*[VALUES[t] for t in KIND_TYPES[f.kind]])
                                    for f in SPEC.fields}), min_size=1, max_size=40)


@st.composite
def typed_records(draw):
    """Records whose fields each keep one type, as a warehouse table would."""
    types = {f.name: draw(st.sampled_from(KIND_TYPES[f.kind])) for f in SPEC.fields}
    return draw(st.lists(record_of({name: VALUES[t] for name, t in types.items()}), min_size=1, max_size=40))


# --- helpers ----------------------------------------------------------------------------

def record_rows(fz: Featurizer, records) -> list[tuple[list[int], list[float]]]:
    out = []
    for r in records:
        i, v = fz.transform_record(r)
        assert i.dtype == np.int32 and v.dtype == np.float32
        assert (np.diff(i) > 0).all() and (v != 0).all()
        out.append((i.tolist(), v.tolist()))
    return out


def matrix_rows(m) -> list[tuple[list[int], list[float]]]:
    assert m.dtype == np.float32 and m.has_sorted_indices
    return [(m.indices[a:b].tolist(), m.data[a:b].tolist()) for a, b in zip(m.indptr[:-1], m.indptr[1:])]


def object_frame(spec, records) -> pd.DataFrame:
    return pd.DataFrame({f.name: pd.Series([r.get(f.name) for r in records], dtype=object) for f in spec.fields})


UNCACHED = Featurizer(SPEC, cache_size=0)
TINY_CACHE = Featurizer(SPEC, cache_size=3)  # evicts constantly
CACHED = Featurizer(SPEC)


# --- property tests ---------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixed_records)
def test_record_and_object_frame_paths_agree(records):
    expected = record_rows(UNCACHED, records)
    assert record_rows(TINY_CACHE, records) == expected
    assert record_rows(CACHED, records) == expected
    assert matrix_rows(CACHED.transform(object_frame(SPEC, records))) == expected
    assert matrix_rows(CACHED.transform_records(records)) == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_records())
def test_record_and_typed_table_paths_agree(records):
    expected = record_rows(CACHED, records)
    table = typed_table(SPEC, records)
    assert table is not None
    assert matrix_rows(CACHED.transform(table)) == expected
    assert matrix_rows(CACHED.transform(table.to_batches(max_chunksize=7)[0])) == expected[:7]
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=5), schema=table.schema)
    assert matrix_rows(CACHED.transform(chunked)) == expected
    assert matrix_rows(CACHED.transform(table.to_pandas(types_mapper=pd.ArrowDtype))) == expected
    exact_in_float64 = all(abs(v) <= 2**53 for r in records for v in r.values()
                           if isinstance(v, int) and not isinstance(v, bool))
    if exact_in_float64:  # nullable ints become float64 + NaN here
        assert matrix_rows(CACHED.transform(table.to_pandas())) == expected


def test_thousands_of_random_records_on_the_generated_spec():
    spec = load_spec("generated")
    fz = Featurizer(spec)
    for seed in range(3):
        records = random_records(spec, 1500, seed=seed)
        expected = record_rows(fz, records)
        assert matrix_rows(fz.transform(typed_table(spec, records))) == expected
        assert matrix_rows(fz.transform(object_frame(spec, records))) == expected


def test_cached_answers_survive_equal_but_different_values():
    """1, 1.0 and True share a cache slot; they also share a canonical token."""
    fz = Featurizer(SPEC)
    for a, b in [(1, 1.0), (True, 1), (0, -0.0), (False, 0.0)]:
        assert [x.tolist() for x in fz.transform_record({"cat": a, "n_raw": a})] == \
               [x.tolist() for x in UNCACHED.transform_record({"cat": b, "n_raw": b})]


# --- public samples ---------------------------------------------------------------------

def sample(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"public sample not present: {path}")
    return path


def test_criteo_sample_all_paths_agree():
    """The real Criteo rows as text (csv module), as pandas.read_csv types them (float64 +
    object) and as pyarrow.csv types them (int64 + string): one set of features."""
    import pyarrow.csv as pacsv

    path = sample("criteo-kaggle-random461", "tr.r100000.csv")
    spec = load_spec("criteo")
    fz = Featurizer(spec)
    with path.open(newline="") as fh:
        raw = [{k.lower(): v for k, v in row.items()} for row in csv.DictReader(fh)]
    assert len(raw) == 403
    expected = record_rows(fz, raw)
    frame = pd.read_csv(path).rename(columns=str.lower)
    assert frame["i1"].dtype == np.float64
    assert matrix_rows(fz.transform(frame)) == expected
    table = pacsv.read_csv(path).rename_columns([c.lower() for c in pacsv.read_csv(path).column_names])
    assert table.schema.field("i2").type == pa.int64()
    assert matrix_rows(fz.transform(table)) == expected
    # one entry per field, missing values included: 39 unless two keys collide
    totals = [sum(v) for _, v in expected]
    assert all(t == 39 for t in totals)
    empty_i1 = next(r for r in raw if r["i1"] == "")
    assert fz.explain(empty_i1)[next(j for j, p in enumerate(fz.explain(empty_i1)) if p[0].startswith("i1="))][0] \
        == "i1=__missing__"


def test_avazu_sample_all_paths_agree():
    path = sample("avazu-sample100", "avazu_sample.txt")
    spec = load_spec("avazu")
    fz = Featurizer(spec)

    def derive(row: dict) -> dict:
        out = {k.lower(): v for k, v in row.items()}
        t = datetime.strptime(str(out.pop("hour")), "%y%m%d%H")
        out["hour_of_day"], out["day_of_week"] = t.hour, t.weekday()
        return out

    with path.open(newline="") as fh:
        raw = [derive(row) for row in csv.DictReader(fh)]
    expected = record_rows(fz, raw)
    frame = pd.read_csv(path, dtype={"id": str})
    frame = pd.DataFrame([derive(r) for r in frame.to_dict("records")])  # ints typed by pandas
    assert frame["c1"].dtype == np.int64
    assert matrix_rows(fz.transform(frame)) == expected
    assert all(sum(v) == len(spec.fields) + len(spec.crosses) for _, v in expected)


# --- contract ---------------------------------------------------------------------------

def test_errors_name_the_field_on_both_paths():
    fz = Featurizer(SPEC)
    with pytest.raises(FeaturizeError, match="field 'cat'"):
        fz.transform_record({"cat": [1, 2]})
    with pytest.raises(FeaturizeError, match="field 'cat'"):
        fz.transform(pd.DataFrame({f.name: [None] for f in SPEC.fields} | {"cat": [[1, 2]]}))
    with pytest.raises(FeaturizeError, match="field 'segs'.*expected a list"):
        fz.transform_record({"segs": "abc"})
    with pytest.raises(FeaturizeError, match="field 'segs'.*expected a list"):
        fz.transform(object_frame(SPEC, [{"segs": "abc"}]))
    with pytest.raises(FeaturizeError, match="field 'segs'.*expected a list column"):
        fz.transform(typed_table(SPEC, [{"segs": None}]).set_column(2, "segs", pa.array(["abc"])))
    with pytest.raises(FeaturizeError, match="field 'n_log': not a number: 'abc'"):
        fz.transform_record({"n_log": "abc"})
    with pytest.raises(FeaturizeError, match="field 'n_log': not a number: 'abc'"):
        fz.transform(object_frame(SPEC, [{"n_log": "abc"}]))
    with pytest.raises(FeaturizeError, match="field 'cat': cannot featurize a value of type"):
        fz.transform(object_frame(SPEC, [{"cat": pd.Timestamp("2024-01-01")}]))


def test_transform_checks_its_input():
    fz = Featurizer(SPEC)
    with pytest.raises(SpecError, match="unknown field.*n_raw"):
        fz.transform(pd.DataFrame({"cat": ["a"]}).assign(cat2=1, segs=None, n_log=1, n_bkt=1))
    with pytest.raises(TypeError, match="pandas DataFrame or a pyarrow Table"):
        fz.transform([{"cat": "a"}])
    empty = fz.transform(object_frame(SPEC, []))
    assert empty.shape == (0, SPEC.num_features) and empty.nnz == 0
    assert fz.fit(None) is fz
    assert (fz.fit_transform(object_frame(SPEC, [{"cat": "a"}])) != fz.transform_records([{"cat": "a"}])).nnz == 0


def test_record_path_ignores_unknown_keys_and_takes_numpy_values():
    fz = Featurizer(load_spec("generated"))
    base = {"site_id": "s", "user_segments": ["a", "b"], "bidfloor": 0.5, "hour_of_day": 3}
    a = fz.transform_record(base)
    b = fz.transform_record(base | {"not_a_field": object()})
    c = fz.transform_record(base | {"user_segments": np.array(["b", "a", "a"], dtype=object),
                                    "bidfloor": np.float64(0.5), "hour_of_day": np.int64(3)})
    for x in (b, c):
        assert x[0].tolist() == a[0].tolist() and x[1].tolist() == a[1].tolist()
    assert math.isclose(a[1].sum(), len(a[1]))


def test_many_collisions_without_raw_values():
    """Long segment lists in a 2**18 space collide often (pairs and triples): the all-ones
    batch assembly must count them exactly as the record path does."""
    import random

    spec = FeatureSpec.from_toml(
        'version = 1\nname = "dense"\nbits = 18\nseed = 5\nmissing_token = "-"\n'
        '[[fields]]\nname = "id"\nkind = "categorical"\n'
        '[[fields]]\nname = "segs"\nkind = "multivalued"\n'
        '[[fields]]\nname = "count"\nkind = "numeric"\ntransform = "log_bucket"\n'
        '[[crosses]]\nfields = ["id", "count"]\n')
    rng = random.Random(3)
    records = [{"id": f"u{rng.randint(0, 50)}", "count": rng.randint(-5, 10**6),
                "segs": [f"s{rng.randint(0, 10**7)}" for _ in range(rng.choice([0, 1500, 2500]))]}
               for _ in range(60)]
    fz = Featurizer(spec)
    expected = record_rows(fz, records)
    counts = [v for _, vals in expected for v in vals]
    assert max(counts) >= 3 and counts.count(2.0) > 50  # the data really collides
    assert matrix_rows(fz.transform(typed_table(spec, records))) == expected
    assert matrix_rows(fz.transform(object_frame(spec, records))) == expected


@pytest.mark.parametrize("dtype", [object, "string", pd.ArrowDtype(pa.string())])
def test_strings_with_nul_characters_stay_distinct(dtype):
    """pandas' factorize compares all-string object arrays as C strings ("a\\x00b" == "a"):
    the batch path must not inherit that."""
    values = ["", "\x00", "a", "a\x00b", "a\x00", "\x00\x00"]
    spec = load_spec(GOLDEN / "golden_b.toml")
    frame = pd.DataFrame({"id": pd.Series(values, dtype=dtype), "flag": pd.Series(["y"] * 6, dtype=dtype),
                          "count": 1})
    fz = Featurizer(spec)
    expected = record_rows(fz, frame.to_dict("records"))
    assert len({tuple(i) for i, _ in expected[1:]}) == 5
    assert matrix_rows(fz.transform(frame)) == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixed_records)
def test_record_entries_sum_to_the_record_vector(records):
    """The bidder scores the unsorted entries: summed per index they are transform_record's
    output (exactly for the value-1.0 features; float rounding only for colliding raws)."""
    fz = Featurizer(SPEC)
    for record in records:
        idx, vals = fz.record_entries(record)
        vals = [1.0] * len(idx) if vals is None else vals
        summed: dict[int, float] = {}
        for i, v in zip(idx, vals):
            summed[i] = summed.get(i, 0.0) + v
        want_i, want_v = fz.transform_record(record)
        got = {i: v for i, v in summed.items() if np.float32(v) != 0}
        assert sorted(got) == want_i.tolist()
        # compared as float32, the vector's precision (a float32 subnormal such as 1e-40 has
        # no 1e-6 relative precision to compare in float64)
        assert np.allclose(np.array([got[i] for i in want_i.tolist()], dtype=np.float32), want_v, rtol=1e-6, atol=0)
