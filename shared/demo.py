"""The platform's main job, end to end on the embedded defaults (``make demo``).

Each stage prints its own summary; the demo ends with one screen saying what ran,
how long each step took and where the results are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shared.config import Settings


@dataclass
class Report:
    steps: list[tuple[str, float, str]] = field(default_factory=list)

    def step(self, name: str, seconds: float, detail: str) -> None:
        self.steps.append((name, seconds, detail))
        print(f"[demo] {name}: {detail} ({seconds:.1f}s)", flush=True)

    def render(self, settings: Settings) -> str:
        lines = ["", "=" * 72, "ctr-platform demo: summary", "=" * 72]
        for name, seconds, detail in self.steps:
            lines.append(f"{name:<14} {seconds:7.1f}s  {detail}")
        lines.append(f"{'total':<14} {sum(s for _, s, _ in self.steps):7.1f}s")
        lines += [
            "",
            f"data root       {settings.home}",
            f"warehouse       {settings.warehouse_dir}",
            f"MLflow store    {settings.mlflow_tracking_uri}",
            f"  browse it:    .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}",
            "=" * 72,
        ]
        return "\n".join(lines)


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def smoke_delta_and_mlflow(settings: Settings, spark, report: Report) -> None:
    """Write a Delta table, read it back and log the round trip to MLflow."""
    from shared.mlflow_utils import configure_mlflow, get_or_create_experiment

    path = settings.table_path("smoke")

    def roundtrip():
        spark.range(1000).selectExpr("id", "id % 7 AS bucket").write.format("delta").mode("overwrite").save(path)
        df = spark.read.format("delta").load(path)
        return df.count(), df.agg({"bucket": "sum"}).first()[0]

    (rows, total), secs = _timed(roundtrip)
    report.step("delta", secs, f"wrote and read back {rows} rows (sum of bucket = {total}) at {path}")

    def log_run():
        mlflow = configure_mlflow(settings)
        exp = get_or_create_experiment(settings)
        with mlflow.start_run(experiment_id=exp, run_name="demo-smoke") as run:
            mlflow.log_params({"table": path, "rows": rows})
            mlflow.log_metric("bucket_sum", total)
        return run.info.run_id

    run_id, secs = _timed(log_run)
    report.step("mlflow", secs, f"logged run {run_id} to {settings.mlflow_tracking_uri}")


def run(settings: Settings, days: int, per_day: int, seed: int) -> int:
    from shared import spark as spark_mod

    report = Report()
    settings.home.mkdir(parents=True, exist_ok=True)
    spark, secs = _timed(spark_mod.get_spark, settings, "ctr-demo")
    report.step("spark", secs, f"Spark {spark.version} with Delta Lake on {settings.spark_master}")
    smoke_delta_and_mlflow(settings, spark, report)
    print(report.render(settings))
    return 0
