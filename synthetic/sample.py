"""Realistic traffic and a real registered model, built from the platform's own generator.

Used by the serving tests, ``benchmarks/bench_serving.py``, :mod:`synthetic.loadgen` and the
demo. Nothing here is a stand-in: impressions come from :func:`synthetic.logs.generate_logs`
and are mapped with the warehouse ingest's own line parser
(:func:`feature_store.parse.parse_impression`, which calls
:func:`shared.openrtb.impression_fields`); the model is a
:class:`training.model.SparseLogisticRegression` fitted on those records with the shipped
``generated`` spec, written with :func:`training.artifacts.save_model_dir` and registered
with :func:`training.tracking.log_training_run`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson

from feature_store.parse import parse_click, parse_impression
from shared.config import Settings
from shared.featurize import Featurizer, load_spec
from shared.featurize.spec import SPECS_DIR
from synthetic.config import GeneratorConfig
from synthetic.logs import generate_logs
from training.artifacts import save_model_dir
from training.metrics import evaluate
from training.model import SparseLogisticRegression
from training.tracking import log_training_run

DEFAULT_SPEC = "generated"
ATTRIBUTION = timedelta(hours=24)
# The model metadata's data source label (unchanged by the move to ``synthetic``).
SOURCE_LABEL = "feature_store.generator"


@dataclass(frozen=True)
class SampleImpression:
    """One generated impression as the bidder saw it, and whether it was clicked."""

    impression_id: str
    event_time: datetime
    bid_request: dict[str, Any]
    ad: dict[str, Any]
    fields: dict[str, Any]  # shared.openrtb.impression_fields of the request, imp and ad
    clicked: bool


def generate_impressions(n: int, seed: int = 1, workdir: str | Path | None = None,
                         start_date: str = "2026-11-01") -> list[SampleImpression]:
    """``n`` clean generated impressions (one UTC day, small world), with click labels."""
    cfg = GeneratorConfig(start_date=date.fromisoformat(start_date), days=1, impressions_per_day=n, seed=seed,
                          n_users=max(1000, n), n_sites=300, n_publishers=120, n_advertisers=40,
                          n_site_advertiser_pairs=200).without_faults()
    with tempfile.TemporaryDirectory(prefix="ctr-sample-", dir=workdir) as tmp:
        out = Path(tmp)
        generate_logs(cfg, out)
        clicks: dict[str, datetime] = {}
        for path in sorted((out / "clicks").rglob("*.jsonl")):
            for line in path.read_bytes().splitlines():
                if line.strip():
                    iid, t = parse_click(line)
                    clicks.setdefault(iid, t)
        rows: list[SampleImpression] = []
        for path in sorted((out / "impressions").rglob("*.jsonl")):
            for line in path.read_bytes().splitlines():
                if not line.strip():
                    continue
                iid, t, fields = parse_impression(line)
                obj = orjson.loads(line)
                click = clicks.get(iid)
                rows.append(SampleImpression(iid, t, obj["bid_request"], obj["ad"], fields,
                                             click is not None and t <= click <= t + ATTRIBUTION))
    return rows


def train_model_dir(impressions: Sequence[SampleImpression], out_dir: str | Path, *, spec: str = DEFAULT_SPEC,
                    C: float = 0.1, downsample_rate: float = 0.5, seed: int = 0,
                    holdout: float = 0.2, extra: dict[str, Any] | None = None) -> tuple[Path, dict[str, float]]:
    """Fit a sparse LR on the raw fields of ``impressions`` and write its model directory.

    The last ``holdout`` share is the test split; returns (model dir, test metrics)."""
    feature_spec = load_spec(spec)
    spec_path = Path(spec) if Path(spec).is_file() else SPECS_DIR / f"{spec}.toml"
    fz = Featurizer(feature_spec)
    X = fz.transform_records([imp.fields for imp in impressions])
    y = np.array([imp.clicked for imp in impressions], dtype=np.int8)
    cut = int(len(y) * (1 - holdout))
    model = SparseLogisticRegression(C=C, downsample_rate=downsample_rate, max_iter=100,
                                     random_state=seed).fit(X[:cut], y[:cut])
    test = evaluate(y[cut:], model.predict_proba(X[cut:])[:, 1])
    meta = {"metrics": {"test": test}, "data_reference": {"source": SOURCE_LABEL, "rows": len(y)}}
    meta.update(extra or {})
    d = save_model_dir(model, spec_path, feature_spec.fingerprint, out_dir, extra=meta)
    return d, test


def register_model_dir(settings: Settings, model_dir: str | Path, model_name: str, test_metrics: dict[str, float],
                       *, test_window: str, log_pyfunc: bool = False) -> str:
    """Log and register ``model_dir`` (:func:`training.tracking.log_training_run`); returns
    the new version. The promotion gate applies: a version on a new ``test_window`` is not
    promoted while a champion exists (promote it with :func:`training.tracking.promote`)."""
    run = log_training_run(settings, model_dir, model_name=model_name, metrics={"test": test_metrics},
                           data_reference={"source": SOURCE_LABEL,
                                           "windows": {"test": [test_window, test_window]}},
                           test_window=test_window, log_pyfunc=log_pyfunc, run_name=f"serving-sample-{test_window}")
    return run.version
