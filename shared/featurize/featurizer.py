"""One featurizer, three paths: batch frames, single records, Spark (see :mod:`.spark`).

Every feature is a *key* string hashed with MurmurHash3 x86_32 (``mmh3``, the spec's
seed, UTF-8 bytes of the key): ``index = murmur3_32(key, seed) mod 2**bits``.
Keys, with ``ns`` the field's namespace (alias or name) and tokens in the canonical
form of :mod:`shared.featurize.canonical`:

* categorical:  ``ns=<token>``, value 1.0; a missing value hashes ``ns=<missing_token>``.
* multivalued:  ``ns=<token>`` once per *distinct* token of the list (repeats are
  deduplicated after canonicalisation, so ``["a", "a", " a"]`` gives one feature),
  value 1.0 each. Missing elements are dropped; a missing, empty or all-missing list
  hashes ``ns=<missing_token>``. A plain string is not a list and is an error.
* numeric ``log_bucket``: ``ns=<k>`` with ``k = floor(log2(1 + |x|))`` for ``x >= 0`` and
  ``ns=-<k>`` for ``x < 0`` (so ``-0.5`` is bucket ``-0``); ``ns=inf`` / ``ns=-inf``;
  missing hashes ``ns=<missing_token>``. Computed exactly (integer bit length in the
  record path, ``frexp`` in the batch path), never with ``log``.
* numeric ``buckets``: ``ns=<i>`` with ``i`` the number of boundaries ``<= x``
  (``bisect_right``), so ``0 .. len(boundaries)``; missing hashes ``ns=<missing_token>``.
* numeric ``raw``: key ``ns`` (no ``=``) with value ``min(max(x, lo), hi)``; ±inf clip to
  the bounds; missing hashes ``ns=<missing_token>`` with value 1.0.
* cross of fields a, b[, c]: ``name=<ta>\\x1f<tb>[\\x1f<tc>]`` with each field's token
  (bucket token for numeric fields), value 1.0. A missing side contributes the
  missing token, so a cross is always present. (Tokens containing U+001F could make
  two pairs share a key; real ids do not contain it.)

Output: indices ascending, duplicates (hash collisions) summed, no explicit zeros.
Entries are summed in float64 in the order (index, field position) - field position
being fields sorted by name, then crosses sorted by name - and rounded to float32
once, so batch and record paths agree bit for bit even when a raw value collides.
"""

from __future__ import annotations

import bisect
import math
from typing import (Any, Callable, Iterable, Mapping, NamedTuple, Protocol, Sequence, TypeAlias,
                    TypeGuard, TypeVar, cast)

import mmh3
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from shared.featurize.canonical import FeaturizeError, canonical, to_number
from shared.featurize.columns import Column, Frame, factorize, frame_columns, list_elements, numbers, slice_frame
from shared.featurize.spec import Cross, FeatureSpec, Field, SpecError, load_spec


SEP = "\x1f"
#: log_bucket codes: 0..1023 for x >= 0, 1024 + k for x < 0, then inf, -inf, missing.
_LOG_K = 1024
LOG_INF, LOG_NEG_INF, LOG_MISSING = 2 * _LOG_K, 2 * _LOG_K + 1, 2 * _LOG_K + 2
#: Rows featurized in one piece by :meth:`Featurizer.transform` (bounds temporary memory).
CHUNK_ROWS = 1 << 21

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


def key_prefix(namespace: str) -> str:
    """The ``ns=`` prefix of every keyed feature of a namespace."""
    return namespace + "="


def categorical_key(namespace: str, token: str) -> str:
    """Key of a categorical, multivalued or bucketed value (token already canonical)."""
    return key_prefix(namespace) + token


def cross_key(namespace: str, tokens: Sequence[str]) -> str:
    """Key of a cross: ``name=`` then the fields' tokens joined by U+001F."""
    return key_prefix(namespace) + SEP.join(tokens)


def raw_key(namespace: str) -> str:
    """Key of a raw numeric feature: the bare namespace."""
    return namespace


def log_bucket_code(x: float | None) -> int:
    """The ``log_bucket`` code of a number: ``floor(log2(1 + |x|))``, offset for negatives; inf and missing."""
    if x is None:
        return LOG_MISSING
    if x == math.inf:
        return LOG_INF
    if x == -math.inf:
        return LOG_NEG_INF
    k = (int(abs(x)) + 1).bit_length() - 1  # floor(log2(1 + |x|)), exactly
    return k + _LOG_K if x < 0 else k


def log_bucket_codes(x: npt.NDArray[np.float64]) -> npt.NDArray[np.int32]:
    """Vectorised :func:`log_bucket_code` of float64 ``x`` (NaN = missing), exactly.

    Below 2**53, ``floor(|x|) + 1`` is exact and ``frexp`` gives its bit length; from 2**53
    on every float is an even integer, so ``1 + |x|`` is never a power of two and
    ``floor(log2(1 + |x|)) = floor(log2(|x|))``."""
    ax = np.abs(x)
    small = ax < 2.0**53
    codes = np.where(small, np.frexp(np.floor(ax) + 1)[1], np.frexp(ax)[1]).astype(np.int32) - 1
    codes[x < 0] += _LOG_K
    codes[x == np.inf] = LOG_INF
    codes[x == -np.inf] = LOG_NEG_INF
    codes[np.isnan(x)] = LOG_MISSING
    return codes


class _Gather(NamedTuple):
    """One feature index per row: ``table[codes]``, code -1 meaning the table's last entry."""

    table: np.ndarray
    codes: np.ndarray

    def into(self, out: np.ndarray) -> None:
        np.take(self.table, self.codes, out=out, mode="wrap")  # codes lie in [-1, len(table))


class _TokenColumn(NamedTuple):
    """A categorical or bucketed column in the batch path: ``codes`` per row (-1 null),
    ``remap`` code -> token id (None: codes are token ids), the ``tokens`` and their indices."""

    codes: np.ndarray
    remap: np.ndarray | None
    tokens: list[str]
    token_index: np.ndarray  # (not "index": that would shadow tuple.index)

    def entries(self) -> "_Gather":
        """Feature index per row, as one gather from a per-code table."""
        return _Gather(self.token_index if self.remap is None else self.token_index[self.remap], self.codes)

    def token_ids(self) -> np.ndarray:
        return self.codes if self.remap is None else self.remap[self.codes]


class _Plan:
    def __init__(self, fz: "Featurizer", field: Field, pos: int):
        self.field, self.pos, self.name, self.ns = field, pos, field.name, field.namespace
        self.missing_token = fz.spec.missing_token
        self.index = fz.index
        self.missing_index = fz.index(categorical_key(self.ns, self.missing_token))


class _Categorical(_Plan):
    def token(self, value: Any) -> str:
        t = canonical(value)
        return self.missing_token if t is None else t

    def index_of(self, value: Any) -> int:
        return self.index(categorical_key(self.ns, self.token(value)))

    def batch(self, fz: "Featurizer", col: Column) -> _TokenColumn:
        codes, uniques, known = factorize(col)
        remap, tokens = fz._tokenize(uniques, missing_tid=0, known=known)
        return _TokenColumn(codes, remap, tokens, fz._hash_tokens(self.ns, tokens))


class _Bucketed(_Plan):
    def __init__(self, fz: "Featurizer", field: Field, pos: int):
        super().__init__(fz, field, pos)
        if field.transform == "log_bucket":
            self.tokens = ([str(k) for k in range(_LOG_K)] + [f"-{k}" for k in range(_LOG_K)]
                           + ["inf", "-inf", self.missing_token])
        else:
            if field.boundaries is None:
                raise SpecError(f"field {field.name!r}: transform 'buckets' needs boundaries")
            self.boundaries = list(field.boundaries)
            self._np_boundaries = np.array(self.boundaries, dtype=np.float64)
            self.tokens = [str(i) for i in range(len(self.boundaries) + 1)] + [self.missing_token]
        self.token_index = fz._hash_tokens(self.ns, self.tokens)
        self._index_list: list[int] = self.token_index.tolist()

    def code(self, x: float | None) -> int:
        if self.field.transform == "log_bucket":
            return log_bucket_code(x)
        return len(self.boundaries) + 1 if x is None else bisect.bisect_right(self.boundaries, x)

    def token(self, value: Any) -> str:
        return self.tokens[self.code(to_number(value))]

    def index_of(self, value: Any) -> int:
        return self._index_list[self.code(to_number(value))]

    def batch(self, fz: "Featurizer", col: Column) -> _TokenColumn:
        x = numbers(col)
        if self.field.transform == "log_bucket":
            codes = log_bucket_codes(x)
        else:
            codes = np.searchsorted(self._np_boundaries, x, side="right").astype(np.int32)
            codes[np.isnan(x)] = len(self.boundaries) + 1
        return _TokenColumn(codes, None, self.tokens, self.token_index)


class _Raw(_Plan):
    def __init__(self, fz: "Featurizer", field: Field, pos: int):
        super().__init__(fz, field, pos)
        if field.clip is None:
            raise SpecError(f"field {field.name!r}: transform 'raw' needs clip bounds")
        self.lo, self.hi = field.clip
        self.slot_index = fz.index(raw_key(self.ns))

    def entry(self, value: Any) -> tuple[str, int, float]:
        """(key, index, value) of ``value``."""
        x = to_number(value)
        if x is None:
            return categorical_key(self.ns, self.missing_token), self.missing_index, 1.0
        return raw_key(self.ns), self.slot_index, min(max(x, self.lo), self.hi)

    def index_of(self, value: Any) -> tuple[int, float]:
        return self.entry(value)[1:]

    def batch(self, col: Column) -> tuple[_Gather, npt.NDArray[np.float64]]:
        x = numbers(col)
        missing = np.isnan(x)
        table = np.array([self.slot_index, self.missing_index], dtype=np.int32)
        return _Gather(table, missing.view(np.int8)), np.where(missing, 1.0, np.clip(x, self.lo, self.hi))


class _Multi(_Plan):
    def tokens(self, value: Any) -> list[str]:
        """Distinct canonical tokens of a list value, or [missing token]."""
        if isinstance(value, (list, tuple, np.ndarray)):
            seen = dict.fromkeys(t for t in map(canonical, value) if t is not None)
            if seen:
                return list(seen)
        elif not (value is None or canonical(value) is None):  # NaN / NA cells are missing lists
            raise FeaturizeError(f"expected a list of values, got {type(value).__name__}: {value!r}")
        return [self.missing_token]

    def index_of(self, element: Any) -> tuple[str | None, int]:
        """(token, index) of one list element; (None, -1) when it is missing."""
        t = canonical(element)
        return t, (-1 if t is None else self.index(categorical_key(self.ns, t)))

    def batch(self, fz: "Featurizer", col: Column, n: int) -> tuple[np.ndarray, np.ndarray]:
        rows, codes, uniques, known = list_elements(col)
        remap, tokens = fz._tokenize(uniques, missing_tid=-1, known=known)
        tids = remap[codes]
        keep = tids >= 0
        rows, tids = rows[keep], tids[keep].astype(np.int64)
        pairs = np.unique(rows * len(tokens) + tids)  # distinct (row, token), row-major
        rows, tids = pairs // len(tokens), pairs % len(tokens)
        present = np.zeros(n, dtype=bool)
        present[rows] = True
        absent = np.flatnonzero(~present)
        index = fz._hash_tokens(self.ns, tokens)
        return (np.concatenate([rows, absent]),
                np.concatenate([index[tids], np.full(len(absent), self.missing_index, np.int32)]))


#: The plan of a field yielding one token per record: the fields a cross may combine.
_TokenPlan: TypeAlias = "_Categorical | _Bucketed"
#: The plan of any field.
_FieldPlan: TypeAlias = "_Categorical | _Bucketed | _Raw | _Multi"


class _CrossPlan:
    def __init__(self, fz: "Featurizer", cross: Cross, pos: int, plans: Mapping[str, _FieldPlan]):
        self.cross, self.pos, self.ns = cross, pos, cross.name
        parts: list[_TokenPlan] = []
        for f in cross.fields:
            p = plans[f]
            if not isinstance(p, (_Categorical, _Bucketed)):  # load_spec refuses such specs
                raise SpecError(f"cross {cross.name!r}: field {f!r} ({p.field.kind}) cannot be crossed")
            parts.append(p)
        self.parts = tuple(parts)
        self.index = fz.index

    def index_of(self, values: Sequence[Any]) -> int:
        """Index of the cross of raw ``values`` (one per crossed field)."""
        return self.index(cross_key(self.ns, [p.token(v) for p, v in zip(self.parts, values)]))

    def batch(self, fz: "Featurizer", columns: list[_TokenColumn]) -> _Gather:
        """Feature index per row: distinct token combinations are hashed once each."""
        import pandas as pd

        parts = [(col.token_ids(), col.tokens) for col in columns]
        codes, tokens0 = parts[0]
        comps = [np.arange(len(tokens0))]
        for c, toks in parts[1:]:
            key = codes.astype(np.int64) * len(toks) + c
            codes, uniq = pd.factorize(key)
            prev, last = uniq // len(toks), uniq % len(toks)
            comps = [comp[prev] for comp in comps] + [last]
        token_lists = [[toks[i] for i in comp.tolist()] for comp, (_, toks) in zip(comps, parts)]
        keys = [cross_key(self.ns, ts) for ts in zip(*token_lists)]
        return _Gather(fz._hash_keys(keys), codes)


class _Indexer(Protocol[_T_co]):
    """A plan of the record path: what one raw value (or tuple of values) hashes to."""

    def index_of(self, value: Any, /) -> _T_co: ...


def _none_missing(tokens: list[str | None]) -> TypeGuard[list[str]]:
    return None not in tokens


class Featurizer:
    """Hashes raw fields into sparse feature vectors, identically on every path.

    ``spec`` is a :class:`FeatureSpec`, a shipped spec name or a TOML path.
    ``cache_size`` bounds the record path's per-field value->index caches (0 disables them;
    a full cache is emptied and refilled). The object is stateless apart from those caches,
    which only ever hold what the uncached computation gives, so one instance may serve
    several threads. :meth:`fit` exists for scikit-learn pipelines and does nothing.
    """

    def __init__(self, spec: FeatureSpec | str, cache_size: int = 4096):
        self.spec = load_spec(spec)
        self.cache_size = cache_size
        self._seed = self.spec.seed
        self._mask = self.spec.num_features - 1
        ordered = sorted(self.spec.fields, key=lambda f: f.name)
        self._plans: list[_FieldPlan] = []
        for pos, f in enumerate(ordered):
            cls: type[_FieldPlan] = (_Categorical if f.kind == "categorical" else _Multi if f.kind == "multivalued"
                                     else _Raw if f.transform == "raw" else _Bucketed)
            self._plans.append(cls(self, f, pos))
        self._token_plans = [p for p in self._plans if isinstance(p, (_Categorical, _Bucketed))]
        by_name = {p.name: p for p in self._plans}
        self._crosses = [_CrossPlan(self, c, len(ordered) + i, by_name)
                         for i, c in enumerate(sorted(self.spec.crosses, key=lambda c: c.name))]
        self._raws = [p for p in self._plans if isinstance(p, _Raw)]
        self._multis = [p for p in self._plans if isinstance(p, _Multi)]
        n_pos = len(self._plans) + len(self._crosses)
        self._fp_bits = max(1, (n_pos - 1).bit_length())
        # Record path: one cache per field / cross, keyed by raw value(s). Values equal under
        # == (1, 1.0, True) share an entry: they share a canonical form too.
        self._scalar: list[tuple[str, dict[Any, int], _TokenPlan]] = [(p.name, {}, p) for p in self._token_plans]
        self._scalar_gets: list[tuple[str, Callable[[Any], int | None]]] = [
            (name, cache.get) for name, cache, _ in self._scalar]
        self._raw: list[tuple[str, dict[Any, tuple[int, float]], _Raw]] = [(p.name, {}, p) for p in self._raws]
        self._raw_gets: list[tuple[str, Callable[[Any], tuple[int, float] | None]]] = [
            (name, cache.get) for name, cache, _ in self._raw]
        self._multi: list[tuple[str, dict[Any, tuple[str | None, int]], _Multi]] = [
            (p.name, {}, p) for p in self._multis]
        self._cross: list[tuple[tuple[str, ...], dict[Any, int], _CrossPlan]] = [
            (tuple(f.name for f in cp.parts), {}, cp) for cp in self._crosses]

    # --- hashing ----------------------------------------------------------------------

    def index(self, key: str) -> int:
        """Column index of a feature key: murmur3_32(utf8(key), seed) mod 2**bits."""
        return mmh3.hash(key, self._seed, False) & self._mask

    def _hash_keys(self, keys: Sequence[str]) -> np.ndarray:
        h, seed, mask = mmh3.hash, self._seed, self._mask
        return np.fromiter((h(k, seed, False) & mask for k in keys), dtype=np.int32, count=len(keys))

    def _hash_tokens(self, ns: str, tokens: Sequence[str]) -> np.ndarray:
        prefix = key_prefix(ns)
        h, seed, mask = mmh3.hash, self._seed, self._mask
        return np.fromiter((h(prefix + t, seed, False) & mask for t in tokens), dtype=np.int32,
                           count=len(tokens))

    def _tokenize(self, uniques: list[Any], missing_tid: int,
                  known: bool = False) -> tuple[npt.NDArray[np.int32], list[str]]:
        """Canonical tokens of distinct raw values: (remap: value code -> token id, tokens).

        Token 0 is the missing token. ``remap[-1]`` (null code -1) and values whose
        canonical form is missing map to ``missing_tid``. ``known``: the caller has shown
        that every value is a string :func:`canonical` leaves unchanged."""
        canon: list[str | None] = uniques if known else [canonical(u) for u in uniques]
        missing = self.spec.missing_token
        tokens = [missing]
        remap: npt.NDArray[np.int32]
        if _none_missing(canon) and len(set(canon)) == len(canon):  # (a literal missing token
            # may then have a second id: it hashes to the same index, so nothing changes)
            tokens += canon
            remap = np.arange(1, len(canon) + 2, dtype=np.int32)
        else:
            tid = {missing: 0}
            ids: list[int] = []
            for t in canon:
                if t is None:
                    ids.append(missing_tid)
                    continue
                i = tid.get(t)
                if i is None:
                    i = tid[t] = len(tokens)
                    tokens.append(t)
                ids.append(i)
            remap = np.array(ids + [0], dtype=np.int32)
        remap[-1] = missing_tid
        return remap, tokens

    # --- sklearn-style API ------------------------------------------------------------

    def fit(self, X: Any = None, y: Any = None) -> "Featurizer":
        """No-op (the hashing has no state to learn), for scikit-learn pipelines."""
        return self

    def transform(self, frame: Frame) -> sp.csr_matrix:
        """Featurize a pandas DataFrame or pyarrow Table/RecordBatch: csr_matrix (n, 2**bits) float32."""
        cols, n = frame_columns(frame)
        self.spec.validate_columns(cols)
        if n > CHUNK_ROWS:
            return sp.vstack([self.transform(slice_frame(frame, s, min(s + CHUNK_ROWS, n)))
                              for s in range(0, n, CHUNK_ROWS)], format="csr")
        fixed: list[tuple[int, _Gather]] = []
        raw_vals: dict[int, np.ndarray] = {}
        multi: list[tuple[int, np.ndarray, np.ndarray]] = []
        token_cols: dict[str, _TokenColumn] = {}
        for plan in self._plans:
            try:
                col = cols[plan.name]
                if isinstance(plan, _Raw):
                    idx, vals = plan.batch(col)
                    fixed.append((plan.pos, idx))
                    raw_vals[plan.pos] = vals
                elif isinstance(plan, _Multi):
                    multi.append((plan.pos, *plan.batch(self, col, n)))
                else:
                    tc = token_cols[plan.name] = plan.batch(self, col)
                    fixed.append((plan.pos, tc.entries()))
            except FeaturizeError as e:
                raise FeaturizeError(f"field {plan.name!r}: {e}") from None
        for cp in self._crosses:
            fixed.append((cp.pos, cp.batch(self, [token_cols[f] for f in cp.cross.fields])))
        return self._assemble(n, fixed, raw_vals, multi)

    def fit_transform(self, frame: Frame, y: Any = None) -> sp.csr_matrix:
        """Same as :meth:`transform`."""
        return self.transform(frame)

    def _assemble(self, n: int, fixed: list[tuple[int, _Gather]], raw_vals: dict[int, np.ndarray],
                  multi: list[tuple[int, np.ndarray, np.ndarray]]) -> sp.csr_matrix:
        """CSR from per-field entries: ``fixed`` (position, index per row), ``raw_vals``
        (position -> value per row) and ``multi`` (position, rows, indices)."""
        bits, fpb = self.spec.bits, self._fp_bits
        fp_mask = (1 << fpb) - 1
        row_of: Callable[[np.ndarray], np.ndarray]  # entry positions -> their rows
        if not multi:  # every row has exactly one entry per field: sort within rows
            width = len(fixed)
            row_ptr = np.arange(0, n * width + 1, width, dtype=np.int64)
            by_field = np.empty((width, n), np.int32 if not raw_vals else np.int64)
            for j, (pos, gather) in enumerate(fixed):
                if raw_vals:  # (index, position) keys: the position orders equal indices
                    idx = np.empty(n, np.int32)
                    gather.into(idx)
                    np.left_shift(idx, fpb, out=by_field[j], dtype=np.int64)
                    by_field[j] |= pos
                else:  # every value is 1.0: the order of equal indices does not matter
                    gather.into(by_field[j])
            mat = by_field.T.copy()  # (rows, fields), C order
            del by_field
            mat.sort(axis=1)
            if not raw_vals:
                return _merge(n, self.spec.num_features, mat.ravel(), None, row_ptr)
            flat = mat.ravel()
            idx, fps = (flat >> fpb).astype(np.int32), flat & fp_mask
            row_of = lambda at: at // width  # noqa: E731
        else:  # variable-length rows: one sort of (row, index, position) keys
            row_shift = bits + fpb
            rows_key = np.arange(n, dtype=np.int64) << row_shift
            parts = []
            for pos, gather in fixed:
                idx = np.empty(n, np.int32)
                gather.into(idx)
                parts.append(rows_key | (idx.astype(np.int64) << fpb) | pos)
            parts += [(r << row_shift) | (idx.astype(np.int64) << fpb) | pos for pos, r, idx in multi]
            keys = np.concatenate(parts)
            keys.sort()
            rows = keys >> row_shift
            idx = ((keys >> fpb) & ((1 << bits) - 1)).astype(np.int32)
            fps = keys & fp_mask
            row_ptr = np.zeros(n + 1, np.int64)
            np.cumsum(np.bincount(rows, minlength=n), out=row_ptr[1:])
            row_of = rows.__getitem__
        vals = None
        if raw_vals:
            vals = np.ones(len(idx), np.float64)
            for pos, v in raw_vals.items():
                at = np.flatnonzero(fps == pos)
                vals[at] = v[row_of(at)]
        return _merge(n, self.spec.num_features, idx, vals, row_ptr)

    # --- record path ------------------------------------------------------------------

    def _fill(self, cache: dict[Any, _T], value: Any, compute: Callable[[Any], _T]) -> _T:
        """compute(value), remembered in ``cache`` when ``value`` can be a key."""
        hit = compute(value)
        if self.cache_size:
            try:
                if value == value:  # NaN never equals itself: a cached NaN would never hit
                    if len(cache) >= self.cache_size:
                        cache.clear()
                    cache[value] = hit
            except (TypeError, ValueError):  # unhashable, or an array's ambiguous ==
                pass
        return hit

    def _complete(self, hits: list[_T | None], fields: Sequence[tuple[str, dict[Any, _T], _Indexer[_T]]],
                  get: Callable[[str], Any]) -> None:
        """Fill the cache misses (None) of ``hits``, computed from ``record.get``."""
        for j, hit in enumerate(hits):
            if hit is None:
                name, cache, plan = fields[j]
                try:
                    hits[j] = self._fill(cache, get(name), plan.index_of)
                except FeaturizeError as e:
                    raise FeaturizeError(f"field {name!r}: {e}") from None

    def record_entries(self, record: Mapping[str, Any]) -> tuple[list[int], list[float] | None]:
        """The (index, value) entries of one record, unsorted and unsummed: ``(indices,
        values)``, ``values`` None when every value is 1.0 (no raw-valued field).

        This is what :meth:`transform_record` sorts and sums. A linear model can score
        the entries directly (``sum(w[i] * v)``, the same as ``w @ transform_record``
        except for float rounding when two raw values collide), which saves the bidder
        the per-record sorting and array building. Fields absent from ``record`` are
        missing; keys not in the spec are ignored."""
        get = record.get
        found: list[int | None]
        try:
            found = [cached(get(name)) for name, cached in self._scalar_gets]
        except TypeError:  # an unhashable value: compute every field
            found = [None] * len(self._scalar)
        if None in found:
            self._complete(found, self._scalar, get)
        idx = cast("list[int]", found)  # _complete filled every None in place
        for name, multi_cache, plan in self._multi:
            idx.extend(self._multi_indices(name, multi_cache, plan, get(name)))
        for names, cache, cp in self._cross:
            key = tuple([get(n) for n in names])
            try:
                hit = cache.get(key)
            except TypeError:
                hit = None
            idx.append(self._fill(cache, key, cp.index_of) if hit is None else hit)
        if not self._raw:
            return idx, None
        hits: list[tuple[int, float] | None]
        try:
            hits = [cached(get(name)) for name, cached in self._raw_gets]
        except TypeError:
            hits = [None] * len(self._raw)
        if None in hits:
            self._complete(hits, self._raw, get)
        vals = [1.0] * len(idx)
        for i, x in cast("list[tuple[int, float]]", hits):  # _complete filled every None in place
            idx.append(i)
            vals.append(x)
        return idx, vals

    def transform_record(self, record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(indices int32, values float32) of one record: a mapping of raw field -> value.

        Fields absent from ``record`` are missing; keys not in the spec are ignored."""
        idx, vals = self.record_entries(record)
        if len(set(idx)) != len(idx):  # a hash collision inside this record: exact slow path
            return _sum_entries([(i, v) for _, i, v in self.explain(record)])
        ia = np.array(idx, dtype=np.int32)
        if vals is None:
            ia.sort()
            return ia, np.ones(len(ia), np.float32)
        order = ia.argsort()
        va = np.array(vals, dtype=np.float64)[order].astype(np.float32)
        ia = ia[order]
        nz = va != 0
        return (ia, va) if nz.all() else (ia[nz], va[nz])

    def _multi_indices(self, name: str, cache: dict[Any, tuple[str | None, int]], plan: _Multi,
                       value: Any) -> list[int]:
        if not isinstance(value, (list, tuple, np.ndarray)):
            try:
                plan.tokens(value)  # raises unless value is a missing value
            except FeaturizeError as e:
                raise FeaturizeError(f"field {name!r}: {e}") from None
            return [plan.missing_index]
        seen: dict[str, int] = {}
        for element in value:
            try:
                hit = cache.get(element)
            except TypeError:
                hit = None
            if hit is None:
                try:
                    hit = self._fill(cache, element, plan.index_of)
                except FeaturizeError as e:
                    raise FeaturizeError(f"field {name!r}: {e}") from None
            if hit[0] is not None:
                seen[hit[0]] = hit[1]
        return list(seen.values()) if seen else [plan.missing_index]

    def explain(self, record: Mapping[str, Any]) -> list[tuple[str, int, float]]:
        """Every (key, index, value) ``record`` produces, before collisions are summed, in
        field-position order. Uncached; for debugging and for the golden vectors."""
        out: list[tuple[str, int, float]] = []
        tokens: dict[str, str] = {}
        for plan in self._plans:
            v = record.get(plan.name)
            try:
                if isinstance(plan, _Raw):
                    out.append(plan.entry(v))
                elif isinstance(plan, _Multi):
                    out += [(k, self.index(k), 1.0) for k in
                            (categorical_key(plan.ns, t) for t in plan.tokens(v))]
                else:
                    t = plan.token(v)
                    tokens[plan.name] = t
                    key = categorical_key(plan.ns, t)
                    out.append((key, self.index(key), 1.0))
            except FeaturizeError as e:
                raise FeaturizeError(f"field {plan.name!r}: {e}") from None
        for cp in self._crosses:
            key = cross_key(cp.ns, [tokens[f] for f in cp.cross.fields])
            out.append((key, self.index(key), 1.0))
        return out

    def transform_records(self, records: Iterable[Mapping[str, Any]]) -> sp.csr_matrix:
        """Stack :meth:`transform_record` outputs (e.g. all candidates of one bid request)."""
        pairs = [self.transform_record(r) for r in records]
        indptr = np.zeros(len(pairs) + 1, np.int64)
        np.cumsum([len(i) for i, _ in pairs], out=indptr[1:])
        indices = np.concatenate([i for i, _ in pairs]) if pairs else np.empty(0, np.int32)
        data = np.concatenate([v for _, v in pairs]) if pairs else np.empty(0, np.float32)
        return _csr(data, indices, indptr, (len(pairs), self.spec.num_features))


def _sum_entries(entries: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum (index, value) entries given in field-position order: float64, then float32, no zeros."""
    order = sorted(range(len(entries)), key=lambda j: entries[j][0])  # stable: (index, position)
    idx: list[int] = []
    tot: list[float] = []
    for j in order:
        i, v = entries[j]
        if idx and idx[-1] == i:
            tot[-1] += v
        else:
            idx.append(i)
            tot.append(0.0 + v)
    ia, va = np.array(idx, dtype=np.int32), np.array(tot, dtype=np.float64).astype(np.float32)
    nz = va != 0
    return ia[nz], va[nz]


def _csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)
    m.has_sorted_indices = True
    m.has_canonical_format = True
    return m


def _merge(n: int, width: int, idx: np.ndarray, vals: np.ndarray | None,
           row_ptr: np.ndarray) -> sp.csr_matrix:
    """CSR from entries sorted by (row, index, position), rows delimited by ``row_ptr``:
    equal indices within a row are summed (float64, in order), then float32, zeros dropped.
    ``vals`` None means every value is 1.0. ``idx`` and ``vals`` are consumed (modified in
    place). Collisions are rare, so only their positions are touched."""
    nnz = len(idx)
    dup = np.empty(0, np.int64)
    if nnz > 1:
        dup = np.flatnonzero(idx[1:] == idx[:-1]) + 1
        if len(dup):
            row = np.searchsorted(row_ptr, dup, side="right") - 1
            dup = dup[row_ptr[row] != dup]  # a row's first entry repeats nothing
    leader = None
    if len(dup):
        run = np.ones(len(dup), dtype=bool)
        run[1:] = dup[1:] != dup[:-1] + 1
        leader = (dup[run] - 1)[np.cumsum(run) - 1]  # the run's first entry collects the sum
    if vals is None:  # all ones: sums are small integers, exact in float32, never zero
        drop = dup
        idx = _compact(idx, drop)
        data = np.ones(len(idx), np.float32)
        if leader is not None:
            np.add.at(data, leader - np.searchsorted(drop, leader), 1.0)
    else:
        if leader is not None:
            np.add.at(vals, leader, vals[dup])  # in position order: the record path's order
        data = vals.astype(np.float32)
        zero = np.flatnonzero(data == 0)
        drop = np.union1d(dup, zero) if len(zero) else dup
        idx, data = _compact(idx, drop), _compact(data, drop)
    if len(drop):
        counts = np.diff(row_ptr)
        np.subtract.at(counts, np.searchsorted(row_ptr, drop, side="right") - 1, 1)
        row_ptr = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=row_ptr[1:])
    return _csr(data, idx, row_ptr, (n, width))


def _compact(a: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """``a`` without the (sorted, distinct) positions ``drop``; in place when they are few."""
    if not len(drop):
        return a
    if len(drop) > 4096:
        keep = np.ones(len(a), dtype=bool)
        keep[drop] = False
        return a[keep]
    write = int(drop[0])
    ends = np.append(drop[1:], len(a)).tolist()
    for start, end in zip((drop + 1).tolist(), ends):
        a[write:write + end - start] = a[start:end]  # numpy handles the overlap
        write += end - start
    return a[:write]
