"""Threshold alerts over the monitoring tables (rules in TOML, see ``alert_rules.toml``).

:func:`evaluate` is a pure function from rules and table rows to alert rows; the job
(:func:`run_alerts`) reads the rows for the days just computed (plus the trailing
history that ``relative_increase`` rules compare with), evaluates, logs one line per
firing, POSTs each alert as JSON to the webhook when one is configured, and writes the
``alerts`` table replacing those days' partitions (so re-running a day does not
duplicate its alerts). An alert's id is a hash of what it is about (rule, version,
window, slice, metric), stable across re-runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tomllib
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from monitoring import tables
from shared.config import Settings
from shared.errors import ConfigurationError, MissingInputError
from shared.limits import MiB, read_text_limited

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("ctr.monitoring.alerts")

DEFAULT_RULES = Path(__file__).with_name("alert_rules.toml")
#: Largest alert-rules TOML file read: :class:`ConfigurationError` above it.
MAX_RULES_BYTES = 1 * MiB
SOURCES = {"metrics": tables.METRICS, "feature_drift": tables.FEATURE_DRIFT, "param_drift": tables.PARAM_DRIFT}
KINDS = ("range", "above", "below", "relative_increase")


@dataclass(frozen=True)
class Rule:
    """One alert rule: which table and metric it watches, its kind and threshold, and its filters."""

    name: str
    source: str
    metric: str
    kind: str
    min: float | None = None
    max: float | None = None
    threshold: float | None = None
    window: str = "day"
    slices: tuple[str, ...] = ("overall",)
    min_impressions: int = 0
    require_mature: bool = True
    trailing_days: int = 7
    min_history: int = 3
    exclude_fields: tuple[str, ...] = ()  # feature_drift: fields this rule does not judge
    severity: str = "warning"

    def __post_init__(self):
        where = f"rule {self.name!r}"
        if self.source not in SOURCES:
            raise ConfigurationError(f"{where}: source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        schema = tables.SCHEMAS[SOURCES[self.source]]
        if self.metric not in schema.names or not _numeric(schema.field(self.metric).type):
            raise ConfigurationError(f"{where}: {self.source} has no numeric column {self.metric!r}")
        if self.kind not in KINDS:
            raise ConfigurationError(f"{where}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "range" and (self.min is None and self.max is None):
            raise ConfigurationError(f"{where}: a range rule needs min and/or max")
        if self.kind != "range" and self.threshold is None:
            raise ConfigurationError(f"{where}: a {self.kind} rule needs a threshold")
        if self.kind == "relative_increase" and (self.source != "metrics" or self.trailing_days < 1
                                                 or self.min_history < 1):
            raise ConfigurationError(f"{where}: relative_increase works on metrics, with trailing_days and "
                                     "min_history >= 1")
        if self.window not in ("day", "hour"):
            raise ConfigurationError(f"{where}: window must be 'day' or 'hour'")

    @property
    def limit(self) -> float:
        """The threshold of an above / below / relative_increase rule (``__post_init__``
        refuses such a rule without one)."""
        if self.threshold is None:
            raise ConfigurationError(f"rule {self.name!r}: a {self.kind} rule needs a threshold")
        return self.threshold

    def describe_threshold(self) -> str:
        """The threshold as text for an alert's message, e.g. ``[0.9, 1.1]`` or ``> 0.2``."""
        if self.kind == "range":
            lo = "-inf" if self.min is None else f"{self.min:g}"
            hi = "inf" if self.max is None else f"{self.max:g}"
            return f"[{lo}, {hi}]"
        if self.kind == "above":
            return f"> {self.threshold:g}"
        if self.kind == "below":
            return f"< {self.threshold:g}"
        return f"> +{self.threshold:.1%} over the trailing {self.trailing_days} days' mean"


def _numeric(t) -> bool:
    import pyarrow as pa

    return pa.types.is_floating(t) or pa.types.is_integer(t)


@dataclass(frozen=True)
class RuleSet:
    """The validated rules of a rules file and where firings are posted."""

    rules: tuple[Rule, ...]
    webhook_url: str = ""
    webhook_timeout: float = 5.0
    path: str = ""

    @property
    def history_days(self) -> int:
        """Trailing days of history the ``relative_increase`` rules need (0 without any)."""
        return max([r.trailing_days for r in self.rules if r.kind == "relative_increase"], default=0)


_RULE_KEYS = {f for f in Rule.__dataclass_fields__}


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Read and validate a rules file (default ``monitoring/alert_rules.toml``)."""
    path = Path(path) if path else DEFAULT_RULES
    try:
        doc = tomllib.loads(read_text_limited(path, MAX_RULES_BYTES, "alert rules file", ConfigurationError))
    except FileNotFoundError:
        raise MissingInputError(f"alert rules file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    rules = []
    for i, entry in enumerate(doc.get("rules", [])):
        unknown = set(entry) - _RULE_KEYS
        if unknown:
            raise ConfigurationError(f"{path}: rules[{i}] has unknown key(s) {', '.join(sorted(unknown))}")
        if "name" not in entry:
            raise ConfigurationError(f"{path}: rules[{i}] has no name")
        entry = dict(entry)
        for key in ("slices", "exclude_fields"):
            if key in entry:
                entry[key] = tuple(entry[key])
        try:
            rules.append(Rule(**entry))
        except TypeError as exc:
            raise ConfigurationError(f"{path}: rules[{i}]: {exc}") from None
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{path}: rule names must be unique")
    hook = doc.get("webhook", {})
    return RuleSet(tuple(rules), str(hook.get("url", "") or ""), float(hook.get("timeout_seconds", 5.0)), str(path))


# -- evaluation (pure) ----------------------------------------------------------------------

def _alert_id(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:20]


def _day(t) -> date:
    return t.date() if isinstance(t, datetime) else t


def _fires(rule: Rule, value: float) -> bool:
    if rule.kind == "range":
        return (rule.min is not None and value < rule.min) or (rule.max is not None and value > rule.max)
    if rule.kind == "above":
        return value > rule.limit
    return value < rule.limit


def _metrics_candidates(rule: Rule, rows: Sequence[dict]) -> list[dict]:
    out = []
    for r in rows:
        if r["window"] != rule.window:
            continue
        if "*" not in rule.slices and r["slice_field"] not in rule.slices:
            continue
        if (r["impressions"] or 0) < rule.min_impressions or (rule.require_mature and not r["mature"]):
            continue
        v = r.get(rule.metric)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out.append(r)
    return out


def evaluate(ruleset: RuleSet, *, days: Iterable[date], metrics: Sequence[dict] = (),
             feature_drift: Sequence[dict] = (), param_drift: Sequence[dict] = (),
             run_id: str = "", fired_at: datetime | None = None) -> list[dict]:
    """Alert rows (``alerts`` schema, ``webhook_status`` empty) for ``days``. ``metrics`` may
    hold earlier days too: ``relative_increase`` rules take their history from them."""
    days = set(days)
    fired_at = fired_at or datetime.now(timezone.utc)
    alerts: list[dict] = []

    def emit(rule: Rule, *, version, window, start, sfield, svalue, value, threshold, message, day):
        alerts.append({
            "alert_id": _alert_id(rule.name, version, window, start, sfield, svalue, rule.metric),
            "rule": rule.name, "severity": rule.severity, "source": SOURCES[rule.source],
            "model_version": version, "window": window, "window_start": start, "slice_field": sfield,
            "slice_value": svalue, "metric": rule.metric, "value": float(value), "threshold": threshold,
            "message": message, "webhook_status": "", "run_id": run_id, "fired_at": fired_at, "date": day,
        })

    for rule in ruleset.rules:
        if rule.source == "metrics":
            rows = _metrics_candidates(rule, metrics)
            series: dict[tuple, list[dict]] = {}
            for r in rows:
                series.setdefault((r["model_version"], r["slice_field"], r["slice_value"]), []).append(r)
            for r in rows:
                if _day(r["window_start"]) not in days:
                    continue
                value = float(r[rule.metric])
                where = (f"model v{r['model_version']} {r['window']} {r['window_start']:%Y-%m-%d %H:%M} "
                         f"{r['slice_field']}={r['slice_value']}")
                if rule.kind == "relative_increase":
                    lo = r["window_start"] - timedelta(days=rule.trailing_days)
                    hist = [float(h[rule.metric]) for h in series[(r["model_version"], r["slice_field"],
                                                                   r["slice_value"])]
                            if lo <= h["window_start"] < r["window_start"]]
                    if len(hist) < rule.min_history:
                        continue
                    base = sum(hist) / len(hist)
                    if not value > base * (1.0 + rule.limit):
                        continue
                    change = value / base - 1.0 if base else math.inf
                    msg = (f"{rule.name}: {where}: {rule.metric} {value:.5g} is {change:+.2%} over the mean "
                           f"{base:.5g} of the {len(hist)} preceding windows in {rule.trailing_days} days "
                           f"(threshold +{rule.threshold:.1%})")
                elif _fires(rule, value):
                    msg = f"{rule.name}: {where}: {rule.metric} {value:.5g} outside {rule.describe_threshold()}"
                else:
                    continue
                emit(rule, version=r["model_version"], window=r["window"], start=r["window_start"],
                     sfield=r["slice_field"], svalue=r["slice_value"], value=value,
                     threshold=rule.describe_threshold(), message=msg, day=_day(r["window_start"]))
        elif rule.source == "feature_drift":
            for r in feature_drift:
                v = r.get(rule.metric)
                if (r["window"] != rule.window or v is None or math.isnan(v) or r["field"] in rule.exclude_fields
                        or _day(r["window_start"]) not in days):
                    continue
                if _fires(rule, float(v)):
                    emit(rule, version=r["model_version"], window=r["window"], start=r["window_start"],
                         sfield="field", svalue=r["field"], value=v, threshold=rule.describe_threshold(),
                         message=(f"{rule.name}: model v{r['model_version']} {r['window_start']:%Y-%m-%d} field "
                                  f"{r['field']}: {rule.metric} {v:.4g} {rule.describe_threshold()} "
                                  f"(reference {r['reference']})"),
                         day=_day(r["window_start"]))
        else:
            for r in param_drift:
                v = r.get(rule.metric)
                day = _day(r["to_created_at"])
                if v is None or math.isnan(v) or day not in days:
                    continue
                if _fires(rule, float(v)):
                    emit(rule, version=r["to_version"], window="version", start=r["to_created_at"],
                         sfield="from_version", svalue=r["from_version"], value=v,
                         threshold=rule.describe_threshold(),
                         message=(f"{rule.name}: v{r['from_version']} -> v{r['to_version']}: {rule.metric} "
                                  f"{v:.4g} {rule.describe_threshold()}"), day=day)
    return alerts


# -- delivery and the job ---------------------------------------------------------------------

def post_webhook(url: str, alert: dict, timeout: float = 5.0) -> str:
    """POST one alert as JSON; returns the HTTP status as text, or ``error: ...``."""
    body = json.dumps({"type": "ctr-monitoring-alert", "alert": alert}, default=str).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return str(resp.status)
    except urllib.error.HTTPError as exc:
        return f"error: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"error: {getattr(exc, 'reason', exc)}"


@dataclass
class AlertResult:
    """The alerts one evaluation fired and the Delta version that recorded them."""

    alerts: list[dict] = field(default_factory=list)
    delta_version: int | None = None

    @property
    def fired(self) -> bool:
        """Whether any alert fired."""
        return bool(self.alerts)


def run_alerts(spark: "SparkSession", settings: Settings, days: Sequence[date], ruleset: RuleSet, *,
               webhook_url: str | None = None, run_id: str | None = None, metrics: list[dict] | None = None,
               feature_drift: list[dict] | None = None, param_drift: list[dict] | None = None) -> AlertResult:
    """Evaluate ``ruleset`` on the monitoring tables for ``days`` and record every firing.

    Rows the caller already holds for exactly these days (``metrics``, ``feature_drift``,
    ``param_drift``) are used as given; the rest, and the history before the days that
    ``relative_increase`` rules need, are read from the Delta tables."""
    days = sorted(set(days))
    run_id = run_id or uuid.uuid4().hex
    sources = {r.source for r in ruleset.rules}
    first = days[0].isoformat()
    if "metrics" in sources:
        if metrics is None:
            metrics = tables.read(spark, settings, tables.METRICS, _in_days(days)).to_pylist()
        if ruleset.history_days:
            lo = (days[0] - timedelta(days=ruleset.history_days)).isoformat()
            metrics = tables.read(spark, settings, tables.METRICS,
                                  f"date >= '{lo}' AND date < '{first}'").to_pylist() + metrics
    if "feature_drift" in sources and feature_drift is None:
        feature_drift = tables.read(spark, settings, tables.FEATURE_DRIFT, _in_days(days)).to_pylist()
    if "param_drift" in sources and param_drift is None:
        param_drift = tables.read(spark, settings, tables.PARAM_DRIFT).to_pylist()
    alerts = evaluate(ruleset, days=days, metrics=metrics or [], feature_drift=feature_drift or [],
                      param_drift=param_drift or [], run_id=run_id)
    url = ruleset.webhook_url if webhook_url is None else webhook_url
    for a in alerts:
        log.warning("ALERT [%s] %s", a["severity"], a["message"])
        if url:
            a["webhook_status"] = post_webhook(url, a, ruleset.webhook_timeout)
    version = tables.write(spark, settings, tables.ALERTS, tables.arrow_table(tables.ALERTS, alerts),
                           [d.isoformat() for d in days])
    return AlertResult(alerts, version)


def _in_days(days: Sequence[date]) -> str:
    return "date IN (" + ", ".join(f"'{d.isoformat()}'" for d in days) + ")"
