"""``ctr dashboard``: the business and model views (FastAPI + uvicorn, fully offline).

Data: the monitoring tables' Parquet export (:mod:`monitoring.export`), read with
pyarrow into memory at start-up and re-read when a file under the export changes
(checked at most every ``RELOAD_SECONDS``), so a page never waits for a JVM. Each page
is served with its initial data inlined as JSON, so it draws on first paint; the
controls (window, slice, version, date) fetch the JSON endpoints below. Charts are
small vanilla-JS SVG functions in ``static/charts.js``: no CDN, no build step.

Endpoints: ``/`` (business view), ``/model`` (model view), ``/api/overview``,
``/api/business``, ``/api/model``, ``/api/reliability``, ``/api/drift``,
``/api/params``, ``/api/alerts``, ``/api/compare``, ``/api/decisions``,
``POST /api/refresh`` (re-read the export now), ``/healthz``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

from monitoring import export, tables
from shared.config import Settings

STATIC = Path(__file__).with_name("static")
RELOAD_SECONDS = 2.0
MAX_SERIES = 8


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, datetimes -> epoch milliseconds, dates -> ISO strings."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, datetime):
        return int(x.timestamp() * 1000)
    if isinstance(x, date):
        return x.isoformat()
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class DashboardData:
    """The export in memory as lists of row dicts, reloaded when its files change."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._checked = 0.0
        self.rows: dict[str, list[dict]] = {}
        self.loaded_at: datetime | None = None
        self.reload(force=True)

    def reload(self, force: bool = False) -> None:
        """Re-read the export when it changed (checked at most every ``RELOAD_SECONDS``, or now with ``force``)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._checked < RELOAD_SECONDS:
                return
            self._checked = now
            sig = export.signature(self.settings)
            if not force and sig == self._signature:
                return
            self.rows = {name: export.load(self.settings, name).to_pylist() for name in tables.SCHEMAS}
            self._signature = sig
            self.loaded_at = datetime.now().astimezone()

    def table(self, name: str) -> list[dict]:
        """The rows of one monitoring table, reloaded first if the export changed."""
        self.reload()
        return self.rows.get(name, [])

    # -- views ---------------------------------------------------------------------------

    def metrics(self, window: str, slice_field: str | None = None) -> list[dict]:
        """Metric rows of one window kind, optionally of one slice field only."""
        return [r for r in self.table(tables.METRICS)
                if r["window"] == window and (slice_field is None or r["slice_field"] == slice_field)]

    def overview(self) -> dict:
        """Dates, versions, slice fields and the latest day's figures (``/api/overview``)."""
        rows = self.metrics("day", tables.OVERALL)
        dates = sorted({r["date"] for r in rows})
        versions = sorted({r["model_version"] for r in rows}, key=_version_key)
        fields = sorted({r["slice_field"] for r in self.table(tables.METRICS)} - {tables.OVERALL})
        latest = None
        if dates:
            day = [r for r in rows if r["date"] == dates[-1]]
            latest = {"date": dates[-1], **_combine(day)}
        return _clean({
            "dates": dates, "versions": versions, "slice_fields": fields, "latest": latest,
            "alerts": len(self.table(tables.ALERTS)),
            "loaded_at": self.loaded_at.isoformat(timespec="seconds") if self.loaded_at else None,
            "rows": {name: len(v) for name, v in self.rows.items()},
        })

    def business(self, window: str = "day", slice_field: str = tables.OVERALL) -> dict:
        """Impressions, clicks and CTR over time per slice value (all versions together)."""
        acc: dict[tuple, dict] = defaultdict(lambda: {"impressions": 0, "clicks": 0, "predictions": 0})
        for r in self.metrics(window, slice_field):
            a = acc[(r["slice_value"], r["window_start"])]
            a["impressions"] += r["impressions"]
            a["clicks"] += r["clicks"]
            a["predictions"] += r["predictions"]
        totals: dict[str, int] = defaultdict(int)
        for (value, _), a in acc.items():
            totals[value] += a["impressions"] or a["predictions"]
        order = sorted(totals, key=lambda v: (-totals[v], v))
        series = []
        for value in order[:MAX_SERIES]:
            pts = sorted(((t, a) for (v, t), a in acc.items() if v == value), key=lambda x: x[0])
            series.append({"name": value, "points": [
                {"t": t, "impressions": a["impressions"], "clicks": a["clicks"], "predictions": a["predictions"],
                 "ctr": a["clicks"] / a["impressions"] if a["impressions"] else None} for t, a in pts]})
        table = [{"slice_value": v, "impressions": sum(a["impressions"] for (vv, _), a in acc.items() if vv == v),
                  "clicks": sum(a["clicks"] for (vv, _), a in acc.items() if vv == v)} for v in order]
        for row in table:
            row["ctr"] = row["clicks"] / row["impressions"] if row["impressions"] else None
        return _clean({"window": window, "slice_field": slice_field, "series": series, "table": table})

    def model(self, window: str = "day", slice_field: str = tables.OVERALL, slice_value: str = tables.ALL) -> dict:
        """Calibration, log-loss, NE and AUC over time per model version."""
        by_version: dict[str, list] = defaultdict(list)
        for r in self.metrics(window, slice_field):
            if r["slice_value"] == slice_value:
                by_version[r["model_version"]].append(r)
        series = []
        for v in sorted(by_version, key=_version_key):
            pts = sorted(by_version[v], key=lambda r: r["window_start"])
            series.append({"name": f"v{v}", "version": v, "points": [
                {k: r[k] for k in ("calibration", "log_loss", "normalized_entropy", "auc", "impressions",
                                   "predictions", "unlabelled", "mature", "ctr", "mean_predicted")}
                | {"t": r["window_start"]} for r in pts]})
        return _clean({"window": window, "slice_field": slice_field, "slice_value": slice_value, "series": series})

    def reliability(self, version: str | None = None, day: str | None = None) -> dict:
        """The reliability curve of a version's day (default: the latest, largest day)."""
        rows = [r for r in self.metrics("day", tables.OVERALL) if r["impressions"]]
        if version:
            rows = [r for r in rows if r["model_version"] == version]
        if day:
            rows = [r for r in rows if r["date"].isoformat() == day]
        if not rows:
            return {"version": version, "date": day, "bins": []}
        r = max(rows, key=lambda r: (r["date"], r["impressions"]))
        bins = [{"lower": lo, "upper": hi, "count": c, "mean_predicted": mp, "observed_rate": o}
                for lo, hi, c, mp, o in zip(r["rel_bin_lower"], r["rel_bin_upper"], r["rel_count"],
                                            r["rel_mean_predicted"], r["rel_observed_rate"])]
        return _clean({"version": r["model_version"], "date": r["date"], "auc": r["auc"],
                       "calibration": r["calibration"], "mature": r["mature"], "bins": bins})

    def drift(self, day: str | None = None, version: str | None = None) -> dict:
        """Feature drift rows of a day (default: the latest), largest PSI first."""
        rows = self.table(tables.FEATURE_DRIFT)
        dates = sorted({r["date"].isoformat() for r in rows})
        day = day or (dates[-1] if dates else None)
        rows = [r for r in rows if r["date"].isoformat() == day and (version is None or r["model_version"] == version)]
        rows = sorted(rows, key=lambda r: (-(r["psi"] if r["psi"] is not None else -1), r["field"]))
        out = [{k: r[k] for k in ("model_version", "field", "kind", "psi", "reference", "reference_rows",
                                  "live_rows", "bins", "reference_share", "live_share")} for r in rows]
        return _clean({"date": day, "dates": dates, "rows": out})

    def params(self) -> dict:
        """Parameter drift between consecutive versions, per model in version order."""
        rows = sorted(self.table(tables.PARAM_DRIFT), key=lambda r: (r["model_name"], _version_key(r["to_version"])))
        return _clean({"rows": [{k: v for k, v in r.items() if k not in ("run_id",)} for r in rows]})

    def alerts(self, limit: int = 200) -> dict:
        """The newest ``limit`` alerts and the total count."""
        rows = sorted(self.table(tables.ALERTS), key=lambda r: (r["window_start"], r["fired_at"]), reverse=True)
        return _clean({"rows": rows[:limit], "total": len(rows)})

    def decisions(self, limit: int = 50) -> dict:
        """The newest ``limit`` scheduler decisions (without their inputs)."""
        rows = sorted(self.table(tables.SCHEDULE_DECISIONS), key=lambda r: r["decided_at"], reverse=True)
        return _clean({"rows": [{k: v for k, v in r.items() if k != "inputs_json"} for r in rows[:limit]]})

    def compare(self, a: str | None = None, b: str | None = None) -> dict:
        """Two versions side by side (default: the last two) on their common days, and their parameter drift."""
        rows = [r for r in self.metrics("day", tables.OVERALL) if r["impressions"]]
        versions = sorted({r["model_version"] for r in rows}, key=_version_key)
        if not (a and b):
            a, b = (versions[-2], versions[-1]) if len(versions) > 1 else (versions[0], versions[0]) \
                if versions else (None, None)
        da = {r["date"]: r for r in rows if r["model_version"] == a}
        db = {r["date"]: r for r in rows if r["model_version"] == b}
        common = sorted(set(da) & set(db))
        same_days = bool(common)
        days_a, days_b = (common, common) if same_days else (sorted(da), sorted(db))
        params = [r for r in self.table(tables.PARAM_DRIFT) if {r["from_version"], r["to_version"]} == {a, b}]
        return _clean({
            "a": a, "b": b, "versions": versions, "same_days": same_days, "days": common,
            "stats": {a: _combine([da[d] for d in days_a]) if a else None,
                      b: _combine([db[d] for d in days_b]) if b else None},
            "params": [{k: v for k, v in p.items() if k != "run_id"} for p in params],
        })


def _version_key(v: str):
    return (0, int(v), "") if str(v).isdigit() else (1, 0, str(v))


def _combine(rows: list[dict]) -> dict:
    """Figures of several windows taken together (log-loss is a mean over rows, so the
    union's is the impression-weighted mean; AUC is not decomposable: the mean is shown)."""
    from training.metrics import binary_entropy

    n = sum(r["impressions"] for r in rows)
    clicks = sum(r["clicks"] for r in rows)
    out: dict[str, Any] = {"impressions": n, "clicks": clicks, "predictions": sum(r["predictions"] for r in rows),
                           "unlabelled": sum(r["unlabelled"] for r in rows), "windows": len(rows),
                           "ctr": None, "calibration": None, "log_loss": None, "normalized_entropy": None,
                           "auc_mean": None, "mature": all(r["mature"] for r in rows)}
    labelled = [r for r in rows if r["impressions"]]
    if n:
        ctr = clicks / n
        out["ctr"] = ctr
        mean_p = sum(r["mean_predicted"] * r["impressions"] for r in labelled) / n
        out["mean_predicted"] = mean_p
        out["calibration"] = mean_p / ctr if clicks else None
        ll = sum(r["log_loss"] * r["impressions"] for r in labelled) / n
        out["log_loss"] = ll
        out["normalized_entropy"] = ll / binary_entropy(ctr) if 0 < clicks < n else None
        aucs = [r["auc"] for r in labelled if r["auc"] is not None]
        out["auc_mean"] = sum(aucs) / len(aucs) if aucs else None
    return out


def _page(page: str, initial: dict) -> str:
    """``static/page.html`` around the page's ``<main>`` (``static/<page>.html``), with the
    initial data inlined as JSON (``</`` escaped so it cannot close the script element)."""
    payload = json.dumps(_clean(initial), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    main = (STATIC / f"{page}.html").read_text(encoding="utf-8")
    html = (STATIC / "page.html").read_text(encoding="utf-8")
    for key, value in (("__TITLE__", f"{page} view"), ("__PAGE__", page),
                       ("__ACTIVE_BUSINESS__", 'class="active"' if page == "business" else ""),
                       ("__ACTIVE_MODEL__", 'class="active"' if page == "model" else ""),
                       ("__MAIN__", main), ("__INITIAL_DATA__", payload)):
        html = html.replace(key, value)
    return html


def create_app(settings: Settings):
    """The dashboard's FastAPI app: the two pages, the JSON endpoints and the static files."""
    from fastapi import FastAPI, Query
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    data = DashboardData(settings)
    app = FastAPI(title="ctr-platform monitoring", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.data = data
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse)
    def business_page():
        return _page("business", {"overview": data.overview(), "day": data.business("day"),
                                       "hour": data.business("hour")})

    @app.get("/model", response_class=HTMLResponse)
    def model_page():
        return _page("model", {
            "overview": data.overview(), "model": data.model("day"), "hourly": data.model("hour"),
            "reliability": data.reliability(), "drift": data.drift(), "params": data.params(),
            "alerts": data.alerts(), "compare": data.compare(), "decisions": data.decisions(),
        })

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "loaded_at": data.loaded_at.isoformat() if data.loaded_at else None}

    @app.get("/api/overview")
    def overview():
        return data.overview()

    @app.get("/api/business")
    def business(window: str = Query("day", pattern="^(day|hour)$"), slice_field: str = tables.OVERALL):
        return data.business(window, slice_field)

    @app.get("/api/model")
    def model(window: str = Query("day", pattern="^(day|hour)$"), slice_field: str = tables.OVERALL,
              slice_value: str = tables.ALL):
        return data.model(window, slice_field, slice_value)

    @app.get("/api/reliability")
    def reliability(version: str | None = None, date: str | None = None):
        return data.reliability(version, date)

    @app.get("/api/drift")
    def drift(date: str | None = None, version: str | None = None):
        return data.drift(date, version)

    @app.get("/api/params")
    def params():
        return data.params()

    @app.get("/api/alerts")
    def alerts(limit: int = Query(200, ge=1, le=5000)):
        return data.alerts(limit)

    @app.get("/api/compare")
    def compare(a: str | None = None, b: str | None = None):
        return data.compare(a, b)

    @app.get("/api/decisions")
    def decisions(limit: int = Query(50, ge=1, le=1000)):
        return data.decisions(limit)

    @app.post("/api/refresh")
    def refresh():
        data.reload(force=True)
        return JSONResponse({"reloaded": True, "rows": {k: len(v) for k, v in data.rows.items()}})

    return app


def serve(settings: Settings, host: str, port: int) -> int:
    """Serve the dashboard with uvicorn on ``host:port`` until interrupted."""
    import uvicorn

    app = create_app(settings)
    print(f"dashboard: http://{host}:{port}/ (business) and http://{host}:{port}/model (model); "
          f"data from {export.export_dir(settings)}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
