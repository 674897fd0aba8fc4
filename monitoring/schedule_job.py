"""``ctr schedule``: gather the scheduler's inputs, decide, record, and update or retrain when told to.

Inputs come from the registry (the champion's age, the newest training), the monitoring
tables (the champion's latest mature day: normalized entropy against its trailing mean,
calibration; the day's largest feature PSI; the last retrain's parameter change), MLflow
(past training pipelines' wall time, for the cost estimate and last week's spend) and the
``schedule_decisions`` table itself (the scheduler's own attempts, for backoff).

Every decision is appended to ``schedule_decisions`` with its reasons and inputs. A
retrain runs :func:`training.pipeline.train_from_warehouse` on the newest windows whose
labels are final; an update runs :func:`training.pipeline.update_from_champion` over the
final days after the champion's data, tested on the newest final day. Either is bracketed
by two ``attempt`` rows (``running``, then ``succeeded`` or ``failed`` with the wall time,
the version and the error; the ``command`` says which). A ``running`` attempt whose process
is gone (its row names host, pid and the process's start time) was killed: it counts as
``interrupted``, retried at once up to the retry cap; one whose process cannot be checked (another
host) is taken as failed after ``STALE_ATTEMPT_HOURS``. ``--dry-run`` records the
decision and prints the ``ctr train`` command instead. :func:`run_forever` repeats the
whole on an interval (``ctr schedule --every SECONDS``).
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable

from feature_store import tables as warehouse
from monitoring import registry, tables
from monitoring.scheduler import RETRAIN, UPDATE, Attempt, Decision, Inputs, Policy, decide, inputs_as_dict
from shared import processes
from shared.config import Settings
from shared.oracle import Oracle
from shared.errors import InputError, MissingInputError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

STALE_ATTEMPT_HOURS = 12.0


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else None


def process_owner() -> str:
    """This process, as a running attempt's row records it: ``"<host> <pid> <start ticks>"``."""
    return " ".join(str(part) for part in processes.this_process())


def owner_state(owner: str | None) -> str:
    """Whether the process that wrote a running attempt is ``gone``, ``alive`` or ``unknown``
    (see :func:`shared.processes.state`)."""
    parts = (owner or "").split()
    return processes.state(*parts) if len(parts) == 3 else processes.UNKNOWN


def own_attempts(rows: list[dict], now: datetime) -> tuple[Attempt, ...]:
    """The scheduler's attempts (oldest first) from its ``attempt`` rows: the last row per
    attempt wins; a ``running`` one whose process is gone is ``interrupted``, one that cannot
    be checked counts as failed once older than STALE_ATTEMPT_HOURS."""
    latest: dict[str, dict] = {}
    for r in sorted((r for r in rows if r["action"] == "attempt"), key=lambda r: r["decided_at"]):
        first = latest.get(r["decision_id"], r)
        latest[r["decision_id"]] = {**r, "_started": first.get("_started", first["decided_at"])}
    out = []
    for r in sorted(latest.values(), key=lambda r: r["_started"]):
        status = r["attempt_status"]
        if status == "running":
            owner = owner_state(r.get("attempt_owner"))
            if owner == processes.GONE:
                status = "interrupted"
            elif owner == processes.UNKNOWN and now - r["_started"] > timedelta(hours=STALE_ATTEMPT_HOURS):
                status = "failed"
        kind = UPDATE if " --update" in (r.get("command") or "") else RETRAIN
        out.append(Attempt(r["_started"], status, r["attempt_seconds"], kind))
    return tuple(out)


def gather_inputs(spark: "SparkSession", settings: Settings, model_name: str, policy: Policy,
                  now: datetime | None = None) -> tuple[Inputs, dict[str, Any]]:
    """(scheduler inputs, context: champion version, windows used) from the stores."""
    now = now or datetime.now(timezone.utc)
    infos = registry.versions(settings, model_name)
    champ = registry.champion(infos)
    context: dict[str, Any] = {"champion": champ.version if champ else None, "versions": len(infos)}
    decisions = tables.read(spark, settings, tables.SCHEDULE_DECISIONS, f"model_name = '{model_name}'").to_pylist()
    attempts = own_attempts(decisions, now)
    successes = [a.started_at for a in attempts if a.status == "succeeded"]
    last_training = max([v.created_at for v in infos] + successes, default=None)

    ne_recent = ne_baseline = calibration = max_psi = psi_field = param_change = None
    if champ is not None:
        since = (now - timedelta(days=30)).date().isoformat()
        rows = tables.read(spark, settings, tables.METRICS,
                           f"date >= '{since}' AND model_version = '{champ.version}' AND window = 'day' "
                           f"AND slice_field = 'overall' AND mature").to_pylist()
        rows = sorted((r for r in rows if r["normalized_entropy"] is not None), key=lambda r: r["window_start"])
        if rows:
            last = rows[-1]
            ne_recent, calibration = last["normalized_entropy"], last["calibration"]
            lo = last["window_start"] - timedelta(days=7)
            ne_baseline = _mean([r["normalized_entropy"] for r in rows[:-1] if r["window_start"] >= lo])
            context["metrics_day"] = last["date"].isoformat()
        if ne_baseline is None and champ.run_id:
            from shared.mlflow_utils import configure_mlflow

            metrics = configure_mlflow(settings).MlflowClient().get_run(champ.run_id).data.metrics
            ne_baseline = metrics.get("test_normalized_entropy")
            context["ne_baseline_source"] = "test_normalized_entropy" if ne_baseline is not None else None
        drift = tables.read(spark, settings, tables.FEATURE_DRIFT,
                            f"date >= '{since}' AND model_version = '{champ.version}'").to_pylist()
        drift = [r for r in drift if r["psi"] is not None]
        if drift:
            newest = max(r["date"] for r in drift)
            top = max((r for r in drift if r["date"] == newest), key=lambda r: r["psi"])
            max_psi, psi_field = top["psi"], top["field"]
        params = tables.read(spark, settings, tables.PARAM_DRIFT, f"model_name = '{model_name}'").to_pylist()
        mine = [r for r in params if r["to_version"] == champ.version]
        if mine and mine[-1]["relative_l2_change"] is not None:
            param_change = mine[-1]["relative_l2_change"]

    runs = registry.training_runs(settings, since=now - timedelta(days=90))
    past = tuple(r.seconds for r in runs if r.status == "FINISHED" and r.seconds and r.kind == RETRAIN)
    past_updates = tuple(r.seconds for r in runs if r.status == "FINISHED" and r.seconds and r.kind == UPDATE)
    week = [r.seconds for r in runs if r.seconds and r.started_at >= now - timedelta(days=7)]
    week += [a.seconds for a in attempts if a.seconds and a.status == "failed"
             and a.started_at >= now - timedelta(days=7)]
    spent = sum(week) / 3600 * policy.cost_per_hour

    full = [v for v in infos if not v.is_update]
    last_retrain = max([v.created_at for v in full]
                       + [a.started_at for a in attempts if a.status == "succeeded" and a.kind == RETRAIN],
                       default=None)
    updates_since = sum(1 for v in infos if v.is_update and (last_retrain is None or v.created_at > last_retrain))
    new_days = 0
    if champ is not None and champ.can_continue and champ.data_end is not None:
        try:
            final = latest_final_day(spark, settings)
        except InputError:
            final = None
        if final is not None:
            new_days = max(0, (final - champ.data_end).days)  # days [data_end, final) to learn; final to test
            context["update_window"] = [champ.data_end.isoformat(), final.isoformat()]
            context["update_table"] = champ.table
    inputs = Inputs(
        now=now, has_model=champ is not None, model_created_at=champ.created_at if champ else None,
        last_training_at=last_training, ne_recent=ne_recent, ne_baseline=ne_baseline,
        calibration_recent=calibration, max_feature_psi=max_psi, psi_field=psi_field,
        param_relative_change=param_change, past_run_seconds=past, spent_last_week=spent, attempts=attempts,
        last_retrain_at=last_retrain, update_available=bool(champ and champ.can_continue),
        new_days=new_days, past_update_seconds=past_updates, updates_since_retrain=updates_since,
    )
    return inputs, context


def latest_final_day(spark: "SparkSession", settings: Settings, attribution_hours: float = 24.0) -> date:
    """The newest observation day whose labels are final (its clicks ingested past the
    attribution window); the newest day minus one when ingest runs are not recorded."""
    from monitoring.live_metrics import label_horizons

    path = settings.table_path(warehouse.OBSERVATIONS)
    if not warehouse.table_exists(spark, path):
        raise MissingInputError(f"no observations table at {path} (run `ctr ingest` first)")
    days = sorted(r[0] for r in spark.read.format("delta").load(path).select("date").distinct().collect())
    if not days:
        raise InputError("the observations table is empty")
    horizons, _ = label_horizons(spark, settings)
    if not horizons:
        return days[-2] if len(days) > 1 else days[-1]
    for d in reversed(days):
        h = horizons.get(d.isoformat())
        end = datetime(d.year, d.month, d.day, tzinfo=timezone.utc) + timedelta(days=1, hours=attribution_hours)
        if h is not None and h >= end:
            return d
    return days[0]


def train_command(start: date, train_days: int, model_name: str, trials: int | None,
                  wall_seconds: float | None) -> str:
    """The ``ctr train`` command equivalent to a retrain (what ``--dry-run`` prints)."""
    cmd = (f"ctr train --start {start.isoformat()} --train-days {train_days} --validation-days 1 "
           f"--test-days 1 --model-name {model_name}")
    if trials:
        cmd += f" --trials {trials}"
    if wall_seconds:
        cmd += f" --wall-seconds {wall_seconds:g}"
    return cmd


def update_command(new_start: date, final: date, model_name: str) -> str:
    """The ``ctr train --update`` command equivalent to an update (learn [new_start, final), test final)."""
    return (f"ctr train --update champion --start {new_start.isoformat()} "
            f"--train-days {(final - new_start).days} --test-days 1 --model-name {model_name}")


def _record(spark, settings, model_name: str, *, decision_id: str, action: str, decision: Decision | None,
            inputs: Inputs | None, dry_run: bool, command: str = "", status: str = "",
            seconds: float | None = None, version: str = "", error: str = "") -> None:
    now = datetime.now(timezone.utc)
    row = {
        "decision_id": decision_id, "model_name": model_name, "decided_at": now, "action": action,
        "retrain": bool(decision and decision.acts),
        "reasons": list(decision.reasons) if decision else [],
        "triggers": list(decision.triggers) if decision else [],
        "blockers": list(decision.blockers) if decision else [],
        "inputs_json": json.dumps(inputs_as_dict(inputs), default=str, sort_keys=True) if inputs else "",
        "estimated_cost": decision.estimated_cost if decision else None,
        "expected_value": (decision.expected_value if decision and math.isfinite(decision.expected_value)
                           else None),
        "retry_at": decision.retry_at if decision else None,
        "dry_run": dry_run, "attempt_status": status, "attempt_seconds": seconds,
        "attempt_version": version, "attempt_error": error[-2000:], "command": command,
        "attempt_owner": process_owner() if status == "running" else "", "date": now.date(),
    }
    tables.write(spark, settings, tables.SCHEDULE_DECISIONS,
                 tables.arrow_table(tables.SCHEDULE_DECISIONS, [row]), [now.date().isoformat()], mode="append")


@dataclass
class ScheduleOutcome:
    """One ``ctr schedule`` run: the decision, its inputs and context, and the retrain's result if any."""

    decision: Decision
    inputs: Inputs
    context: dict[str, Any]
    command: str = ""
    trained_version: str | None = None
    error: str | None = None


def run_schedule(spark: "SparkSession", settings: Settings, *, model_name: str, policy: Policy = Policy(),
                 dry_run: bool = False, train_days: int = 5, trials: int | None = None,
                 wall_seconds: float | None = None, spec: str = "generated",
                 now: datetime | None = None, oracle: Oracle | None = None) -> ScheduleOutcome:
    """Decide, record, and (unless ``dry_run``) retrain when the decision says so."""
    inputs, context = gather_inputs(spark, settings, model_name, policy, now)
    decision = decide(inputs, policy)
    decision_id = uuid.uuid4().hex
    command = ""
    if decision.retrain:
        last = latest_final_day(spark, settings)
        start = last - timedelta(days=train_days + 1)
        command = train_command(start, train_days, model_name, trials, wall_seconds)
        context["windows_start"] = start.isoformat()
    elif decision.action == UPDATE:
        new_start, final = (date.fromisoformat(d) for d in context["update_window"])
        command = update_command(new_start, final, model_name)
    _record(spark, settings, model_name, decision_id=decision_id, action=decision.action, decision=decision,
            inputs=inputs, dry_run=dry_run, command=command)
    outcome = ScheduleOutcome(decision, inputs, context, command)
    if not decision.acts or dry_run:
        return outcome

    from feature_store.reader import Window
    from training.pipeline import Windows, train_from_warehouse, update_from_champion

    attempt_id = uuid.uuid4().hex
    _record(spark, settings, model_name, decision_id=attempt_id, action="attempt", decision=decision,
            inputs=None, dry_run=False, command=command, status="running")
    t0 = time.perf_counter()
    try:
        if decision.retrain:
            result = train_from_warehouse(spark, settings, Windows.consecutive(start, train_days), spec,
                                          trials=trials, wall_seconds=wall_seconds, model_name=model_name,
                                          oracle=oracle)
        else:
            result = update_from_champion(settings, Window(new_start, final),
                                          Window(final, final + timedelta(days=1)), model_name=model_name,
                                          table=context["update_table"], spark=spark, oracle=oracle)
    except Exception as exc:  # recorded for the backoff, then reported by the command
        outcome.error = f"{type(exc).__name__}: {exc}"
        _record(spark, settings, model_name, decision_id=attempt_id, action="attempt", decision=decision,
                inputs=None, dry_run=False, command=command, status="failed",
                seconds=time.perf_counter() - t0, error=traceback.format_exc())
        return outcome
    outcome.trained_version = result.version
    _record(spark, settings, model_name, decision_id=attempt_id, action="attempt", decision=decision,
            inputs=None, dry_run=False, command=command, status="succeeded",
            seconds=time.perf_counter() - t0, version=result.version)
    context["train_summary"] = result.summary()
    return outcome


def run_forever(spark: "SparkSession", settings: Settings, *, every_seconds: float, max_runs: int | None = None,
                report: Callable[[ScheduleOutcome], None] | None = None, **kwargs: Any) -> int:
    """:func:`run_schedule` every ``every_seconds`` (measured from one start to the next) until
    SIGTERM / SIGINT (finishing the run in progress) or ``max_runs``; returns the runs made."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    runs = 0
    try:
        while not stop.is_set() and (max_runs is None or runs < max_runs):
            started = time.monotonic()
            outcome = run_schedule(spark, settings, **kwargs)
            runs += 1
            if report is not None:
                report(outcome)
            if max_runs is not None and runs >= max_runs:
                break
            stop.wait(max(0.0, every_seconds - (time.monotonic() - started)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return runs
