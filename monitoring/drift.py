"""Feature drift (population stability index) and parameter drift between model versions.

**Feature drift.** For every raw field, the live distribution of a day's predictions
(the fields the bidder scored, from the prediction log) is compared with the
distribution in the model's training window (the observations table at the Delta
version the model was trained on, from the run's data reference; or a window given
by hand). Bins come from the reference only:

* categorical fields: the reference's top-K values, then ``__other__`` and ``__missing__``;
* numeric fields (``double``): the reference's deciles as edges (duplicates merged), then
  ``__missing__``;
* multivalued fields (``user_segments``): each element is one occurrence, binned as a
  categorical; a missing or empty list is one ``__missing__`` occurrence.

``PSI = sum_i (live_i - ref_i) * ln(live_i / ref_i)`` over the bins' shares, each share
floored at :data:`PSI_FLOOR` so an empty bin costs a large but finite amount. Rules of
thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 a real shift.

**Calendar fields** (:data:`CALENDAR_FIELDS`: ``day_of_week`` and ``hour_of_day``, the UTC
weekday and hour of the event time) are compared with a comparable calendar window, not
with the whole training window: a live day is one weekday, so its ``day_of_week`` is a
single value by construction (against a Sunday-to-Wednesday reference a Saturday would
score a PSI of ~17 however normal the traffic). The live day (the traffic's own date, see
:mod:`monitoring.predictions`) is compared with the reference's rows of the *same weekday*:

* ``day_of_week``: PSI is then 0 when the traffic's field agrees with its event time, and
  measures a real defect otherwise (say, a client sending local instead of UTC weekdays).
  When the reference has no row of that weekday there is nothing comparable: PSI is null,
  ``reference_rows`` 0, and the reference label says so (the model never saw that weekday);
* ``hour_of_day``: the day's hourly profile against the same weekday's, or, when the
  reference has no such weekday, against every reference day's (the hourly profile of
  traffic is a time-of-day pattern; the label says which).

Their bins are every value the comparable reference holds (24 hours at most), then
``__other__`` and ``__missing__``; the ``reference`` column names the window compared.

**Parameter drift.** Between consecutive registered versions (their plain model
directories): L2 size of the weight change (absolute and relative to the older
weights), the intercept change, the share of non-zero weights that appeared or
vanished, and the features that moved most, named by inverting the hashing on a
sample of real records (``Featurizer.explain``). When the two versions hash with the
same spec the comparison is exact, index by index (``basis="index"``); when their specs
differ (e.g. the search picked another ``bits``) indices mean different things, so the
weights are compared feature name by feature name over the names the sample produces
(``basis="keys"``).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from feature_store import tables as warehouse
from feature_store.reader import Window, resolve_version
from monitoring.tables import MISSING, OTHER
from shared.config import Settings
from shared.openrtb import RAW_FIELDS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from training.artifacts import LoadedModel

PSI_FLOOR = 1e-4
DEFAULT_TOP_K = 20
DEFAULT_NUMERIC_BINS = 10


def field_kind(dtype: str) -> str:
    """Drift kind of a raw field by its Spark type: ``numeric``, ``multivalued`` or ``categorical``."""
    return {"double": "numeric", "array<string>": "multivalued"}.get(dtype, "categorical")


FIELD_KINDS = {f.name: field_kind(f.dtype) for f in RAW_FIELDS}

#: Raw fields computed from the event time (``shared.openrtb.impression_fields``), each with
#: whether the event's date alone fixes it (the weekday does; the hour varies within a day).
CALENDAR_FIELDS: dict[str, bool] = {"day_of_week": True, "hour_of_day": False}
assert set(CALENDAR_FIELDS) <= set(FIELD_KINDS)


def psi(reference_counts: Sequence[float], live_counts: Sequence[float], floor: float = PSI_FLOOR) -> float:
    """Population stability index of two histograms over the same bins (counts or shares).

    Each histogram is normalised to shares, each share floored at ``floor``. ``nan`` when
    either histogram is empty.
    """
    e = np.asarray(reference_counts, dtype=np.float64)
    a = np.asarray(live_counts, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"histograms differ in bins: {e.size} vs {a.size}")
    if (e < 0).any() or (a < 0).any():
        raise ValueError("counts must be non-negative")
    if e.sum() <= 0 or a.sum() <= 0:
        return math.nan
    e = np.maximum(e / e.sum(), floor)
    a = np.maximum(a / a.sum(), floor)
    return float(np.sum((a - e) * np.log(a / e)))


# -- reference profiles -----------------------------------------------------------------

@dataclass
class FieldProfile:
    """One field's reference bins and counts (with the decile edges for a numeric field)."""

    kind: str
    bins: list[str]
    counts: list[int]
    edges: list[float] = field(default_factory=list)  # numeric only

    @property
    def categories(self) -> list[str]:
        """The reference's top values (the bins without ``__other__`` and ``__missing__``)."""
        return [b for b in self.bins if b not in (OTHER, MISSING)]


@dataclass
class ReferenceProfile:
    """The binned distribution of every field over a reference window, and the calendar
    fields' value counts per weekday (``calendar[field][weekday][value]``, weekday "0" =
    Monday, of each row's date) for comparing like with like."""

    label: str  # "observations@v3 [2026-11-01, 2026-11-05)"
    rows: int
    fields: dict[str, FieldProfile]
    calendar: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def to_json(self) -> str:
        """The profile as JSON, keys sorted."""
        return json.dumps({"label": self.label, "rows": self.rows, "calendar": self.calendar,
                           "fields": {k: asdict(v) for k, v in self.fields.items()}}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ReferenceProfile":
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        return cls(d["label"], int(d["rows"]), {k: FieldProfile(**v) for k, v in d["fields"].items()},
                   d.get("calendar", {}))


def numeric_labels(edges: Sequence[float]) -> list[str]:
    """Bin labels for edges e1 < ... < em: ``<= e1``, ``(e1, e2]``, ..., ``> em``."""
    if not edges:
        return ["all"]
    fmt = lambda x: f"{x:.6g}"  # noqa: E731
    return ([f"<= {fmt(edges[0])}"] + [f"({fmt(a)}, {fmt(b)}]" for a, b in zip(edges, edges[1:])]
            + [f"> {fmt(edges[-1])}"])


def _numeric_bin(col, edges: Sequence[float]):
    """Spark column: the numeric bin label of ``col`` (``__missing__`` for null/NaN)."""
    from pyspark.sql import functions as F

    labels = numeric_labels(edges)
    idx = sum((F.when(col > F.lit(float(e)), 1).otherwise(0) for e in edges), F.lit(0))
    return F.when(col.isNull() | F.isnan(col), F.lit(MISSING)).otherwise(
        F.element_at(F.array(*[F.lit(x) for x in labels]), idx + 1))


def _long_format(df: "DataFrame", fields: Sequence[str], value_of, keep: Sequence[str] = ()) -> "DataFrame":
    """(keep..., field, value) with one row per scalar field value and per list element."""
    from pyspark.sql import functions as F

    scalar = [f for f in fields if FIELD_KINDS[f] != "multivalued"]
    multi = [f for f in fields if FIELD_KINDS[f] == "multivalued"]
    parts = []
    if scalar:
        parts.append(df.select(*keep, F.explode(F.array(*[
            F.struct(F.lit(f).alias("field"), F.coalesce(value_of(f), F.lit(MISSING)).alias("value"))
            for f in scalar])).alias("s")).select(*keep, "s.field", "s.value"))
    for f in multi:
        parts.append(df.select(*keep, F.lit(f).alias("field"), F.explode_outer(value_of(f)).alias("value"))
                     .withColumn("value", F.coalesce("value", F.lit(MISSING))))
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def reference_label(table: str, version: int, window: Window) -> str:
    """A reference's label: ``<table>@v<version> [start, end)``."""
    return f"{table}@v{version} {window}"


def build_reference_profile(spark: "SparkSession", settings: Settings, window: Window, *,
                            table: str = warehouse.OBSERVATIONS, delta_version: int | None = None,
                            fields: Sequence[str] | None = None, top_k: int = DEFAULT_TOP_K,
                            numeric_bins: int = DEFAULT_NUMERIC_BINS) -> ReferenceProfile:
    """The binned distribution of every field over ``window`` of ``table`` (at ``delta_version``,
    or the latest when that version is gone or not given); cached on disk by its inputs."""
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F

    fields = list(fields or FIELD_KINDS)
    path = settings.table_path(table)
    try:
        version = resolve_version(spark, path, delta_version)
    except ValueError:  # that version was vacuumed or never existed: the latest is the best we have
        version = resolve_version(spark, path, None)
    key = hashlib.sha256(json.dumps([path, version, str(window), fields, top_k, numeric_bins, "calendar-1"]
                                    ).encode()).hexdigest()
    cache = settings.home / "monitoring" / "reference_profiles" / f"{key[:24]}.json"
    if cache.is_file():
        return ReferenceProfile.from_json(cache.read_text())

    df = spark.read.format("delta").option("versionAsOf", version).load(path).filter(window.predicate)
    numeric = [f for f in fields if FIELD_KINDS[f] == "numeric"]
    probs = [i / numeric_bins for i in range(1, numeric_bins)]
    edges: dict[str, list[float]] = {}
    rows = 0
    aggs = [F.count(F.lit(1)).alias("_rows")] + [
        F.percentile_approx(F.col(f).cast("double"), probs, 10000).alias(f) for f in numeric]
    first = warehouse.first_row(df.agg(*aggs))
    rows = int(first["_rows"])
    for f in numeric:
        edges[f] = sorted({float(x) for x in (first[f] or []) if x is not None and math.isfinite(x)})

    def value_of(f):
        kind = FIELD_KINDS[f]
        if kind == "numeric":
            return _numeric_bin(F.col(f).cast("double"), edges[f])
        return F.col(f) if kind == "multivalued" else F.col(f).cast("string")

    counts = _long_format(df, fields, value_of).groupBy("field", "value").count()
    ranked = (counts.withColumn("_rank", F.row_number().over(
        W.partitionBy("field").orderBy(F.desc("count"), F.asc("value"))))
        .withColumn("_total", F.sum("count").over(W.partitionBy("field")))
        .filter((F.col("_rank") <= top_k) | (F.col("value") == MISSING) | F.col("field").isin(numeric)))
    got: dict[str, dict[str, int]] = {f: {} for f in fields}
    totals: dict[str, int] = {f: 0 for f in fields}
    for r in ranked.collect():
        got[r.field][r.value] = int(r["count"])
        totals[r.field] = int(r._total)
    profiles = {}
    for f in fields:
        values = got[f]
        if FIELD_KINDS[f] == "numeric":
            bins = numeric_labels(edges[f]) + [MISSING]
            profiles[f] = FieldProfile("numeric", bins, [values.get(b, 0) for b in bins], edges[f])
        else:
            top = sorted((v for v in values if v != MISSING), key=lambda v: (-values[v], v))[:top_k]
            missing = values.get(MISSING, 0)
            other = totals[f] - sum(values[v] for v in top) - missing
            profiles[f] = FieldProfile(FIELD_KINDS[f], top + [OTHER, MISSING],
                                       [values[v] for v in top] + [other, missing])
    by_weekday: dict[str, dict[str, dict[str, int]]] = {}
    cal = [f for f in fields if f in CALENDAR_FIELDS]
    if cal:
        dated = df.withColumn("_weekday", F.weekday(F.col("date")).cast("string"))
        long = _long_format(dated, cal, lambda f: F.col(f).cast("string"), keep=("_weekday",))
        by_weekday = {f: {} for f in cal}
        for r in long.groupBy("_weekday", "field", "value").count().collect():
            by_weekday[r.field].setdefault(r._weekday, {})[r.value] = int(r["count"])
    profile = ReferenceProfile(reference_label(table, version, window), rows, profiles, by_weekday)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(profile.to_json())
    return profile


def live_counts(preds: "DataFrame", profile: ReferenceProfile, versions: Sequence[str] | None = None
                ) -> dict[tuple[str, str], dict[str, dict[str, int]]]:
    """{(model_version, log_date): {field: {bin: count}}} of the valid predictions in ``preds``
    (:func:`monitoring.predictions.read_predictions`), binned with ``profile``'s bins; the
    calendar fields' raw values are kept (:func:`drift_rows` bins them per day)."""
    from pyspark.sql import functions as F

    df = preds.filter(F.col("reason").isNull())
    if versions is not None:
        df = df.filter(F.col("model_version").isin(list(versions)))
    fields = list(profile.fields)

    def value_of(f):
        prof = profile.fields[f]
        raw = F.col(f"fields.{f}")
        if prof.kind == "numeric":
            return _numeric_bin(raw.cast("double"), prof.edges)
        if prof.kind == "multivalued":
            return F.from_json(raw, "array<string>")
        return raw

    long = _long_format(df, fields, value_of, keep=("model_version", "log_date"))
    cats = {f: p.categories for f, p in profile.fields.items()
            if p.kind != "numeric" and not (f in CALENDAR_FIELDS and f in profile.calendar)}
    binned = F.col("value")
    for f, values in cats.items():
        binned = F.when((F.col("field") == f) & (F.col("value") != MISSING) & ~F.col("value").isin(values),
                        F.lit(OTHER)).otherwise(binned)
    out: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
    for r in long.withColumn("bin", binned).groupBy("model_version", "log_date", "field", "bin").count().collect():
        out.setdefault((r.model_version, r.log_date), {}).setdefault(r.field, {})[r.bin] = int(r["count"])
    return out


def _value_order(v: str) -> tuple:
    return (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v)


def calendar_reference(profile: ReferenceProfile, name: str, day: date) -> tuple[list[str], list[int], str]:
    """(bins, reference counts, reference label) of calendar field ``name`` for the live day
    ``day``: the reference's rows of the same weekday; for a field the date does not fix
    (the hour), every reference row when the reference has no such weekday. Empty counts:
    nothing comparable."""
    by_weekday = profile.calendar[name]
    weekday = calendar.day_name[day.weekday()]
    same = by_weekday.get(str(day.weekday()), {})
    if same:
        counts, note = same, f"same weekday ({weekday})"
    elif not CALENDAR_FIELDS[name]:
        counts = {}
        for per_value in by_weekday.values():
            for v, c in per_value.items():
                counts[v] = counts.get(v, 0) + c
        note = f"all weekdays (no {weekday} in the reference)"
    else:
        counts, note = {}, f"no {weekday} in the reference: not compared"
    bins = sorted((v for v in counts if v not in (MISSING, OTHER)), key=_value_order) + [OTHER, MISSING]
    return bins, [counts.get(b, 0) for b in bins], f"{profile.label} {note}"


def drift_rows(profile: ReferenceProfile, counts: Mapping[tuple[str, str], Mapping[str, Mapping[str, int]]],
               run_id: str, computed_at: datetime) -> list[dict[str, Any]]:
    """feature_drift rows (one per version x day x field) from :func:`live_counts`; calendar
    fields against the day's comparable calendar window (:func:`calendar_reference`)."""
    rows = []
    for (version, day), by_field in sorted(counts.items()):
        start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
        for f, prof in profile.fields.items():
            live = by_field.get(f, {})
            bins, ref_counts, label, ref_rows = prof.bins, prof.counts, profile.label, profile.rows
            if f in CALENDAR_FIELDS and f in profile.calendar:
                bins, ref_counts, label = calendar_reference(profile, f, start.date())
                ref_rows = sum(ref_counts)  # one value per row: the comparable window's rows
                known = set(bins)
                binned: dict[str, int] = {}
                for v, c in live.items():
                    b = v if v in known else OTHER
                    binned[b] = binned.get(b, 0) + c
                live = binned
            live_vec = [live.get(b, 0) for b in bins]
            ref_total, live_total = sum(ref_counts), sum(live_vec)
            rows.append({
                "model_version": version, "window": "day", "window_start": start,
                "window_end": start + timedelta(days=1), "field": f, "kind": prof.kind,
                "psi": None if ref_total == 0 or live_total == 0 else psi(ref_counts, live_vec),
                "reference": label, "reference_rows": ref_rows,
                "live_rows": live_total, "bins": bins,
                "reference_share": [c / ref_total if ref_total else 0.0 for c in ref_counts],
                "live_share": [c / live_total if live_total else 0.0 for c in live_vec],
                "run_id": run_id, "computed_at": computed_at, "date": date.fromisoformat(day),
            })
    return rows


@dataclass
class FeatureDriftResult:
    """Feature drift rows, the reference of each version, and the versions skipped with why."""

    rows: list[dict[str, Any]]
    references: dict[str, str]  # model version -> reference label
    skipped: dict[str, str]  # model version -> why no drift was computed


def feature_drift(spark: "SparkSession", settings: Settings, preds: "DataFrame", versions: Iterable[str], *,
                  model_name: str, reference_window: Window | None = None, top_k: int = DEFAULT_TOP_K,
                  numeric_bins: int = DEFAULT_NUMERIC_BINS, run_id: str | None = None,
                  registry_versions: list | None = None) -> FeatureDriftResult:
    """Feature-drift rows for the live ``versions`` in ``preds``: each against its own training
    window from the registry, or all against ``reference_window`` when given."""
    from monitoring import registry

    run_id = run_id or uuid.uuid4().hex
    now = datetime.now(timezone.utc)
    infos = {v.version: v for v in (registry_versions if registry_versions is not None
                                    else registry.versions(settings, model_name))}
    groups: dict[tuple, list[str]] = {}
    skipped: dict[str, str] = {}
    for v in sorted(set(versions)):
        if reference_window is not None:
            groups.setdefault((warehouse.OBSERVATIONS, None, reference_window), []).append(v)
            continue
        info = infos.get(v)
        if info is None:
            skipped[v] = f"version {v} is not registered under {model_name!r}: no training window to compare with"
        elif info.train_window is None:
            skipped[v] = f"version {v} records no training window (data.train_window)"
        else:
            groups.setdefault((info.table, info.delta_version, info.train_window), []).append(v)
    rows, refs = [], {}
    for (table, delta_version, window), vs in groups.items():
        profile = build_reference_profile(spark, settings, window, table=table, delta_version=delta_version,
                                          top_k=top_k, numeric_bins=numeric_bins)
        if profile.rows == 0:
            for v in vs:
                skipped[v] = f"the reference window {profile.label} has no rows"
            continue
        rows += drift_rows(profile, live_counts(preds, profile, vs), run_id, now)
        refs.update({v: profile.label for v in vs})
    return FeatureDriftResult(rows, refs, skipped)


# -- parameter drift ---------------------------------------------------------------------

def index_names(featurizer, records: Iterable[Mapping[str, Any]]) -> dict[int, set[str]]:
    """Hashed index -> the feature keys that produce it, over ``records``."""
    names: dict[int, set[str]] = {}
    for rec in records:
        for key, index, _ in featurizer.explain(rec):
            names.setdefault(int(index), set()).add(key)
    return names


def _label(keys: Iterable[str] | None, limit: int = 3) -> str:
    keys = sorted(keys or [])
    if not keys:
        return ""
    return " | ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def compare_models(old: "LoadedModel", new: "LoadedModel", records: Sequence[Mapping[str, Any]] = (),
                   top: int = 20) -> dict[str, Any]:
    """Parameter drift from ``old`` to ``new`` (see the module docstring); a param_drift row
    without the version/run columns."""
    from shared.featurize import Featurizer, FeatureSpec

    fz_new = Featurizer(FeatureSpec.from_toml(new.spec_text, source="new model")) if records else None
    base = {"n_nonzero_from": int(old.indices.size), "n_nonzero_to": int(new.indices.size),
            "intercept_change": float(new.intercept - old.intercept)}
    if old.fingerprint == new.fingerprint and old.n_features == new.n_features:
        union = np.union1d(old.indices, new.indices)
        w_old = old.dense_weights[union].astype(np.float64) if union.size else np.zeros(0)
        w_new = new.dense_weights[union].astype(np.float64) if union.size else np.zeros(0)
        # the dense copies are float32: use the exact float64 weights where they are non-zero
        w_old[np.searchsorted(union, old.indices)] = old.weights
        w_new[np.searchsorted(union, new.indices)] = new.weights
        names = index_names(fz_new, records) if fz_new else {}
        keys = [(int(i), _label(names.get(int(i)))) for i in union]
        basis, note = "index", "same feature spec: exact comparison over all weights"
    elif fz_new is not None:  # records were given
        fz_old = Featurizer(FeatureSpec.from_toml(old.spec_text, source="old model"))
        idx_old: dict[str, int] = {}
        idx_new: dict[str, int] = {}
        for rec in records:
            idx_old.update((k, int(i)) for k, i, _ in fz_old.explain(rec))
            idx_new.update((k, int(i)) for k, i, _ in fz_new.explain(rec))
        all_keys = sorted(set(idx_old) | set(idx_new))
        w_old = np.array([old.dense_weights[idx_old[k]] if k in idx_old else 0.0 for k in all_keys], np.float64)
        w_new = np.array([new.dense_weights[idx_new[k]] if k in idx_new else 0.0 for k in all_keys], np.float64)
        keys = [(idx_new.get(k, -1), k) for k in all_keys]
        basis = "keys"
        note = (f"feature specs differ ({old.fingerprint[:12]} -> {new.fingerprint[:12]}): compared by name over "
                f"the {len(all_keys):,} features seen in {len(records):,} sample records")
    else:
        return {**base, "basis": "none", "l2_from": None, "l2_change": None, "relative_l2_change": None,
                "appeared_share": None, "vanished_share": None, "top_features": [],
                "note": "feature specs differ and no sample records were given to align them by name"}
    delta = w_new - w_old
    l2_from = float(np.linalg.norm(w_old))
    nz_old, nz_new = w_old != 0, w_new != 0
    order = np.argsort(-np.abs(delta), kind="stable")[:top]
    return {
        **base, "basis": basis, "l2_from": l2_from, "l2_change": float(np.linalg.norm(delta)),
        "relative_l2_change": float(np.linalg.norm(delta) / l2_from) if l2_from > 0 else None,
        "appeared_share": float((nz_new & ~nz_old).sum() / nz_new.sum()) if nz_new.any() else None,
        "vanished_share": float((nz_old & ~nz_new).sum() / nz_old.sum()) if nz_old.any() else None,
        "top_features": [{"index": keys[i][0], "name": keys[i][1], "weight_from": float(w_old[i]),
                          "weight_to": float(w_new[i]), "delta": float(delta[i])}
                         for i in order if delta[i] != 0],
        "note": note,
    }


def sample_records(spark: "SparkSession", settings: Settings, window: Window | None, n: int = 2000,
                   table: str = warehouse.OBSERVATIONS) -> list[dict[str, Any]]:
    """Up to ``n`` raw records (the raw fields only) from ``window`` of ``table`` (the latest
    day present when no window is given); [] when the table does not exist."""
    from pyspark.sql import functions as F

    from shared.openrtb import RAW_FIELD_NAMES

    path = settings.table_path(table)
    if not warehouse.table_exists(spark, path):
        return []
    df = spark.read.format("delta").load(path)
    if window is not None:
        df = df.filter(window.predicate)
    else:
        last = warehouse.first_row(df.agg(F.max("date")))[0]
        if last is None:
            return []
        df = df.filter(F.col("date") == F.lit(last))
    return df.select(*RAW_FIELD_NAMES).limit(n).toArrow().to_pylist()


def param_drift(spark: "SparkSession", settings: Settings, model_name: str, *, records: list | None = None,
                registry_versions: list | None = None, max_pairs: int = 10, run_id: str | None = None,
                ) -> tuple[list[dict[str, Any]], int | None]:
    """Compute the param_drift rows missing for the last ``max_pairs`` consecutive version pairs
    and rewrite the model's partition; returns (all rows of the model, Delta version or None
    when nothing was new)."""
    from monitoring import registry, tables
    from training.artifacts import load_model_dir

    infos = registry_versions if registry_versions is not None else registry.versions(settings, model_name)
    pairs = list(zip(infos, infos[1:]))[-max_pairs:]
    existing = tables.read(spark, settings, tables.PARAM_DRIFT, f"model_name = '{model_name}'").to_pylist() \
        if pairs else []
    have = {(r["from_version"], r["to_version"]) for r in existing}
    todo = [(a, b) for a, b in pairs if (a.version, b.version) not in have]
    if not todo:
        return existing, None
    if records is None:
        records = sample_records(spark, settings, todo[-1][1].train_window)
    run_id = run_id or uuid.uuid4().hex
    now = datetime.now(timezone.utc)
    loaded: dict[str, Any] = {}

    def load(v):
        if v not in loaded:
            loaded[v] = load_model_dir(registry.model_dir(settings, model_name, v))
        return loaded[v]

    new_rows = []
    for a, b in todo:
        row = compare_models(load(a.version), load(b.version), records)
        row.update(from_version=a.version, to_version=b.version, from_created_at=a.created_at,
                   to_created_at=b.created_at, run_id=run_id, computed_at=now, model_name=model_name)
        new_rows.append(row)
    rows = existing + new_rows
    version = tables.write(spark, settings, tables.PARAM_DRIFT, tables.arrow_table(tables.PARAM_DRIFT, rows),
                           [model_name])
    return rows, version

