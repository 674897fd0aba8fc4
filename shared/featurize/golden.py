"""Golden vectors: raw records and the exact features they must produce, for every path
and for bidders written in other languages. Format: ``tests/golden/README.md``.

    python -m shared.featurize.golden            # rewrite tests/golden/featurize_v1.jsonl
    python -m shared.featurize.golden --check    # exit 1 if the committed file differs

Also home to :func:`random_records` (adversarial typed records for parity tests and
benchmarks) and :func:`typed_table` (the Arrow table a warehouse would hold for them).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, Mapping, Sequence


from shared.featurize.featurizer import Featurizer, categorical_key, raw_key
from shared.featurize.spec import FeatureSpec, load_spec

if TYPE_CHECKING:
    import pyarrow as pa

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "tests" / "golden"
GOLDEN_FILE = "featurize_v1.jsonl"
GOLDEN_SPECS = ("golden_a", "golden_b")

NFC_E, NFD_E = "\u00e9", "e\u0301"

# ---------------------------------------------------------------------------------------
# Tagged JSON values: {"str": s} {"int": "decimal"} {"float": repr} {"bool": b} {"list": [...]} null


def encode_value(v: Any) -> Any:
    """A raw value as JSON that keeps its Python type (``{"int": "12"}``, ``{"float": "0.5"}``, ...)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return {"bool": v}
    if isinstance(v, int):
        return {"int": str(v)}
    if isinstance(v, float):
        return {"float": repr(v)}
    if isinstance(v, str):
        return {"str": v}
    if isinstance(v, (list, tuple)):
        return {"list": [encode_value(x) for x in v]}
    raise TypeError(f"no golden encoding for {type(v).__name__}")


def decode_value(v: Any) -> Any:
    """Inverse of :func:`encode_value`."""
    if v is None:
        return None
    (tag, x), = v.items()
    if tag == "bool":
        return bool(x)
    if tag == "int":
        return int(x)
    if tag == "float":
        return float(x)
    if tag == "str":
        return x
    if tag == "list":
        return [decode_value(e) for e in x]
    raise ValueError(f"unknown golden value tag {tag!r}")


# ---------------------------------------------------------------------------------------
# Typed tables


def _arrow_type(values: Sequence[Any]) -> pa.DataType | Literal[False] | None:
    """The one Arrow type of ``values``; None: all None; False: mixed or unrepresentable."""
    import pyarrow as pa

    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return None
    if len(kinds) > 1:
        return False
    kind = kinds.pop()
    if kind is list:
        inner = _arrow_type([e for v in values if v is not None for e in v])
        return False if inner is False else pa.list_(inner or pa.string())
    if kind is int and any(v is not None and not -(2**63) <= v < 2**63 for v in values):
        return False  # beyond int64
    return {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}.get(kind, False)


def typed_table(spec: FeatureSpec, records: Sequence[Mapping[str, Any]],
                extra: Mapping[str, Sequence[Any]] | None = None) -> pa.Table | None:
    """The Arrow table holding ``records`` with one type per column (string, int64, float64,
    bool, list<...>), or None when some field mixes Python types across records.
    ``extra``: more columns to add as they are (e.g. ids)."""
    import pyarrow as pa

    default = {"categorical": pa.string(), "numeric": pa.float64(), "multivalued": pa.list_(pa.string())}
    arrays, names = [], []
    for f in spec.fields:
        values = [r.get(f.name) for r in records]
        t = _arrow_type(values)
        if t is False:
            return None
        arrays.append(pa.array(values, type=t or default[f.kind]))
        names.append(f.name)
    for name, column in (extra or {}).items():
        arrays.append(pa.array(column))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


# ---------------------------------------------------------------------------------------
# Random adversarial records

_WORDS = [f"v{i}" for i in range(40)]
_EDGE_STR = ["", " ", "  v1 ", "\tv2\n", NFC_E, NFD_E, "日本語", "😀", "a\tb", "<NA>", "__missing__", "1",
             "1.0", "-0", "01", "\u00a0x", "\ufb01", "\u212b", "\u00c5", "x" * 200, "\x00", "a\x1fb"]
_EDGE_INT = [0, -1, 1, 2**31, 2**53 + 1, -(2**63), 2**63 - 1, 10**18]
_EDGE_FLOAT = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-300, 1e300, 0.1, 2.0**53, 1.0, 0.5,
               0.49999999999999994, 0.9999999999999999, 3.0, 2.9999999999999996, -1.0, 1e-50, 1000.0, 1e6]
_EDGE_NUMSTR = ["3", " 2.5 ", "1e3", "-inf", "inf", "nan", "", "007", "-0", ".5", "1.", "+4"]
CATEGORICAL_TYPES = ("str", "int", "float", "bool")
NUMERIC_TYPES = ("int", "float", "bool", "numstr")
MULTI_TYPES = ("list<str>", "list<int>")


def _draw(rng: random.Random, kind: str, edge_rate: float) -> Any:
    edge = rng.random() < edge_rate
    if kind == "str":
        return rng.choice(_EDGE_STR) if edge else rng.choice(_WORDS)
    if kind == "int":
        return rng.choice(_EDGE_INT) if edge else rng.randint(-3, 40)
    if kind == "float":
        return rng.choice(_EDGE_FLOAT) if edge else round(rng.uniform(-5, 120), rng.randint(0, 2))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "numstr":
        return rng.choice(_EDGE_NUMSTR) if edge else str(rng.randint(0, 500))
    if kind.startswith("list<"):
        inner = kind[5:-1]
        return [None if rng.random() < edge_rate / 4 else _draw(rng, inner, edge_rate)
                for _ in range(rng.choice([0, 1, 2, 3, 3, 5]))]
    raise ValueError(kind)


def column_types(spec: FeatureSpec, seed: int) -> dict[str, str]:
    """A random value type per field (seeded)."""
    rng = random.Random(seed)
    pools = {"categorical": CATEGORICAL_TYPES, "numeric": NUMERIC_TYPES, "multivalued": MULTI_TYPES}
    return {f.name: rng.choice(pools[f.kind]) for f in spec.fields}


def random_records(spec: FeatureSpec, n: int, seed: int, edge_rate: float = 0.2, null_rate: float = 0.08,
                   types: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """``n`` records for ``spec``, one value type per field (``types`` or drawn from
    ``seed``), so they fit a typed table. ``edge_rate`` of the values come from the edge
    pools (empty and whitespace strings, NFD, NaN, inf, -0.0, int64 extremes, ...),
    ``null_rate`` are None and as many are absent."""
    rng = random.Random(seed)
    types = dict(types or column_types(spec, seed))
    out = []
    for _ in range(n):
        rec: dict[str, Any] = {}
        for f in spec.fields:
            u = rng.random()
            if u < null_rate:
                rec[f.name] = None
            elif u >= 2 * null_rate or not edge_rate:
                rec[f.name] = _draw(rng, types[f.name], edge_rate)
        out.append(rec)
    return out


# ---------------------------------------------------------------------------------------
# The golden cases


def _collide(fz: Featurizer, target: int, namespace: str, start: int = 0) -> str:
    """The first value ``k<i>`` (i >= start) whose categorical key hashes to ``target``."""
    i = start
    while fz.index(categorical_key(namespace, f"k{i}")) != target:
        i += 1
    return f"k{i}"


def _birthday(fz: Featurizer, ns1: str, ns2: str, pool: int = 20000) -> tuple[str, str]:
    """Values ``k<i>`` of namespace ``ns1`` and ``ns2`` whose keys share an index."""
    seen = {fz.index(categorical_key(ns1, f"k{i}")): f"k{i}" for i in range(pool)}
    j = 0
    while fz.index(categorical_key(ns2, f"k{j}")) not in seen:
        j += 1
    return seen[fz.index(categorical_key(ns2, f"k{j}"))], f"k{j}"


def _cases_a(fz: Featurizer) -> Iterator[tuple[str, str, dict[str, Any]]]:
    yield "str", "typical values", {"cat": "news", "cat2": "tech", "segs": ["s1", "s2"], "n_log": "17",
                                    "n_bkt": "0.75", "n_raw": "3.25"}
    yield "str", "empty strings are missing", {"cat": "", "cat2": "", "segs": [""], "n_log": "", "n_bkt": "",
                                               "n_raw": ""}
    yield "str", "surrounding ASCII whitespace is stripped",\
        {"cat": "  news\t", "cat2": "\ntech ", "segs": [" s1", "s2 "], "n_log": " 17 ", "n_bkt": "\t0.75",
         "n_raw": "3.25 "}
    yield "str", "NFC e-acute", {"cat": NFC_E, "cat2": NFC_E, "segs": [NFC_E]}
    yield "str", "NFD e-acute equals NFC", {"cat": NFD_E, "cat2": NFD_E, "segs": [NFD_E]}
    yield "str", "CJK", {"cat": "日本語", "cat2": "日本", "segs": ["日本語", "語"]}
    for k in range(1, 8):
        ascii_ = "abcdefg"[:k]
        wide = {1: "a", 2: NFC_E, 3: "日", 4: "😀", 5: "😀a", 6: "日本", 7: "😀日"}[k]
        yield "str", f"strings of {k} UTF-8 bytes", {"cat": ascii_, "cat2": wide, "segs": [ascii_, wide]}
    yield "str", "inner whitespace, control characters and non-ASCII spaces are kept",\
        {"cat": "a\tb", "cat2": "\u00a0x", "segs": ["a b", "a  b", "\x00"]}
    yield "str", "NFC maps the Angstrom sign to A-ring; compatibility ligatures stay",\
        {"cat": "\u212b", "cat2": "\u00c5", "segs": ["\ufb01", "fi"]}
    yield "str", "numeric strings in numeric fields", {"n_log": "1e3", "n_bkt": "-0", "n_raw": ".5"}
    yield "str", "special numeric strings", {"n_log": "-inf", "n_bkt": "inf", "n_raw": "nan"}
    yield "str", "multivalued repeats are deduplicated after canonicalisation",\
        {"segs": ["x", "x", "y", " y", NFC_E, NFD_E, "", None]}
    yield "str", "all-missing list is missing", {"segs": [None, "", "  "]}
    yield "str", "the missing token as a literal value equals missing", {"cat": "<NA>", "segs": ["<NA>", "z"]}
    yield "str", "cross with a missing side", {"cat": "news", "n_bkt": "5"}
    yield "str", "string digits equal integers (see the int table)", {"cat": "1", "cat2": "-7", "segs": ["1", "2"]}
    yield "str", "strings are not parsed: 1.0 and 01 are their own tokens", {"cat": "1.0", "cat2": "01"}
    yield "empty", "no fields at all", {}
    yield "null", "every field null", {f: None for f in ("cat", "cat2", "segs", "n_log", "n_bkt", "n_raw")}
    yield "int", "integers", {"cat": 1, "cat2": -7, "n_log": 0, "n_bkt": 0, "n_raw": 2}
    yield "int", "negative integers", {"cat": -1, "cat2": 0, "n_log": -1, "n_bkt": -11, "n_raw": -3}
    yield "int", "int64 extremes", {"cat": 2**63 - 1, "cat2": -(2**63), "n_log": 2**63 - 1, "n_bkt": -(2**63),
                                    "n_raw": 2**63 - 1}
    yield "int", "beyond 2**53: categorical exact, numeric rounded to float64",\
        {"cat": 2**53 + 1, "cat2": 2**53, "n_log": 2**53 + 1, "n_bkt": 101, "n_raw": 1000}
    yield "int", "log2 bucket edges 2**k - 1", {"cat": 3, "n_log": 3, "n_bkt": 1, "n_raw": 1}
    yield "int", "just below a log2 bucket edge", {"cat": 2, "n_log": 2, "n_bkt": 100}
    yield "int", "segments of integers", {"cat": 5, "segs": [1, 2, 2]}
    yield "float", "integral floats equal integers", {"cat": 1.0, "cat2": -7.0, "n_log": 0.0, "n_bkt": 0.0,
                                                       "n_raw": 2.0}
    yield "float", "non-integral floats use the shortest round-trip repr",\
        {"cat": 0.1, "cat2": 1.5, "n_log": 0.5, "n_bkt": 0.49999999999999994, "n_raw": 0.1}
    yield "float", "small and huge floats", {"cat": 1e-7, "cat2": 1e20, "n_log": 1e308, "n_bkt": -1e308,
                                             "n_raw": 1e-50}
    yield "float", "negative zero", {"cat": -0.0, "cat2": 0.0, "n_log": -0.0, "n_bkt": -0.0, "n_raw": -0.0}
    yield "float", "infinities", {"cat": math.inf, "cat2": -math.inf, "n_log": math.inf, "n_bkt": -math.inf,
                                  "n_raw": math.inf}
    yield "float", "more infinities", {"cat": -math.inf, "n_log": -math.inf, "n_bkt": math.inf,
                                       "n_raw": -math.inf}
    yield "float", "NaN is missing", {"cat": math.nan, "cat2": math.nan, "n_log": math.nan, "n_bkt": math.nan,
                                      "n_raw": math.nan}
    yield "float", "float log2 edges", {"n_log": 0.9999999999999999, "n_bkt": 0.5, "n_raw": 999.9999}
    yield "float", "float log2 edges (2)", {"n_log": 1.0, "n_bkt": 1.0, "n_raw": 1000.5}
    yield "float", "2**53 - 1 and 2**53", {"n_log": 2.0**53 - 1, "n_bkt": 2.0**53, "n_raw": -2.5}
    yield "bool", "booleans are 1 and 0", {"cat": True, "cat2": False, "n_log": True, "n_bkt": False, "n_raw": True}
    yield "bool", "booleans (2)", {"cat": False, "cat2": True, "n_log": False, "n_bkt": True, "n_raw": False}
    yield "mixed", "int, float, bool and string one are one token",\
        {"cat": 1, "cat2": 1.0, "segs": [True, "1", 1], "n_log": "1", "n_bkt": True, "n_raw": "1"}
    yield "mixed", "integers beyond int64 stay exact", {"cat": 10**30, "cat2": -(10**20), "n_log": 10**400}
    # Hash collisions, found by search: summed values, raw values adding up to zero.
    raw_slot = fz.index(raw_key("n_raw"))
    v1 = _collide(fz, raw_slot, "cat")
    v2 = _collide(fz, raw_slot, "c2")
    yield "str", "collision: categorical and raw slot sum (1 + 0.3)", {"cat": v1, "n_raw": "0.3"}
    yield "str", "collision: three-way with a raw value (0.1 + 1 + 1)", {"cat": v1, "cat2": v2, "n_raw": "0.1"}
    yield "str", "collision: raw -1 cancels a categorical 1: no entry", {"cat": v1, "n_raw": "-1"}
    w = _collide(fz, fz.index(categorical_key("cat", "news")), "segs")
    yield "str", "collision: a segment and a categorical value sum to 2", {"cat": "news", "segs": [w, w, "s1"]}
    u = _collide(fz, fz.index(categorical_key("segs", "s1")), "segs", start=1)
    yield "str", "collision: two distinct segments share an index (counted twice)", {"segs": ["s1", u, "s1"]}


def _cases_b(fz: Featurizer) -> Iterator[tuple[str, str, dict[str, Any]]]:
    yield "str", "typical", {"id": "u-123", "flag": "y", "count": "7"}
    yield "str", "unicode ids", {"id": "日本語", "flag": NFD_E, "count": "0"}
    for k in range(1, 8):
        yield "str", f"{k}-byte ASCII id", {"id": "0123456"[:k], "flag": "n"}
    yield "str", "missing flag: cross carries the missing token", {"id": "u-123", "count": "7"}
    yield "int", "integer ids", {"id": 123, "flag": 1, "count": 12345678901}
    yield "float", "float ids that are integers", {"id": 123.0, "flag": 1.0, "count": 12345678901.0}
    yield "null", "all null", {"id": None, "flag": None, "count": None}
    a, b = _birthday(fz, "id", "flag")
    yield "str", "collision without raw fields: two ones sum to 2", {"id": a, "flag": b, "count": "1"}


def golden_cases(golden_dir: Path = GOLDEN_DIR) -> list[dict[str, Any]]:
    """Every golden case with its expected output, computed by the record path and checked
    against :meth:`Featurizer.explain` (hashing the listed keys must give the output)."""
    lines = []
    for spec_name, cases in (("golden_a", _cases_a), ("golden_b", _cases_b)):
        spec = load_spec(golden_dir / f"{spec_name}.toml")
        fz = Featurizer(spec, cache_size=0)
        generated = list(cases(fz))
        types_1 = {"cat": "str", "cat2": "int", "segs": "list<str>", "n_log": "int", "n_bkt": "float",
                   "n_raw": "float"}
        types_2 = {"cat": "float", "cat2": "bool", "segs": "list<int>", "n_log": "numstr", "n_bkt": "int",
                   "n_raw": "bool"}
        if spec_name == "golden_a":
            generated += [("random1", "random", r) for r in random_records(spec, 30, seed=7, types=types_1)]
            generated += [("random2", "random", r) for r in random_records(spec, 30, seed=8, types=types_2)]
        for i, (table, note, record) in enumerate(generated):
            indices, values = fz.transform_record(record)
            explained = fz.explain(record)
            assert all(fz.index(k) == i for k, i, _ in explained)
            lines.append({
                "spec": spec_name, "case": i, "table": table, "note": note,
                "record": {k: encode_value(v) for k, v in record.items()},
                "keys": [[k, i, float(v)] for k, i, v in explained],
                "indices": indices.tolist(),
                "values": [float(v) for v in values],
            })
    return lines


def render(lines: list[dict[str, Any]]) -> str:
    """The golden file's text: one JSON object per line."""
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def read_golden(path: Path) -> list[dict[str, Any]]:
    """Golden lines with ``record`` decoded to Python values."""
    out = []
    for text in path.read_text(encoding="utf-8").splitlines():
        line = json.loads(text)
        line["record"] = {k: decode_value(v) for k, v in line["record"].items()}
        out.append(line)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Write the golden file, or with ``--check`` compare it with the committed one."""
    ap = argparse.ArgumentParser(prog="python -m shared.featurize.golden", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=GOLDEN_DIR, help="folder with the golden specs and file")
    ap.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    args = ap.parse_args(argv)
    text = render(golden_cases(args.dir))
    path = args.dir / GOLDEN_FILE
    if args.check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print(f"{path} differs from what the featurizer produces now", file=sys.stderr)
            return 1
        print(f"{path}: up to date")
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {text.count(chr(10))} golden vectors to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
