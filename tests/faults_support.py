"""The kill harness of the fault-injection tests: run a ``ctr`` command as its own process,
SIGKILL it at a named phase (``shared/faults.py``) or after a seeded delay, and report each
kill. The full matrix runs with ``CTR_FAULTS_FULL=1`` (``benchmarks/bench_faults.py`` runs it
and prints the report); ``make test`` kills at the phase of each job that leaves the most
half-done.

With ``CTR_FAULTS_REPORT`` set, each kill appends one JSON line to that file: the job, the
phase asked for, the last phase reached, the exit status and whether the re-run recovered.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.faults import KILL_AT, PHASE_LOG

FULL = "CTR_FAULTS_FULL"
REPORT = "CTR_FAULTS_REPORT"
SEED = 20261203
_MLFLOW_URIS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CTR_MLFLOW_ARTIFACT_ROOT")


@dataclass
class Run:
    returncode: int
    phases: list[str]
    output: str
    seconds: float

    @property
    def killed(self) -> bool:
        return self.returncode == -9


def ctr(home: Path, *args: str, kill_at: str | None = None, kill_after: float | None = None,
        timeout: float = 900) -> Run:
    """``python -m ctr.cli --home HOME ARGS`` in its own process; returns once it and its JVM
    (which exits when its Python driver's pipe closes) are gone."""
    home.mkdir(parents=True, exist_ok=True)
    log = home.parent / f"{home.name}-{time.monotonic_ns()}.phases"
    # the data root decides the MLflow store, whatever the environment says
    env = {k: v for k, v in os.environ.items() if k not in (KILL_AT, PHASE_LOG, *_MLFLOW_URIS)}
    env[PHASE_LOG] = str(log)
    if kill_at:
        env[KILL_AT] = kill_at
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ctr.cli", "--home", str(home), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.kill()
    out, _ = proc.communicate(timeout=timeout)
    seconds = time.perf_counter() - started
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and subprocess.run(["pgrep", "-f", f"{home}/derby"],
                                                          capture_output=True).returncode == 0:
        time.sleep(0.3)
    phases = log.read_text().split() if log.exists() else []
    return Run(proc.returncode, phases, out, seconds)


def ctr_in_process(home: Path, *args: str) -> int:
    """``ctr --home HOME ARGS`` in this process (the re-run after a kill: the same command on the
    test session's Spark, saving a JVM start); as in :func:`ctr`, the data root decides the MLflow
    store, whatever the environment says."""
    from ctr.cli import main

    saved = {k: os.environ.pop(k) for k in _MLFLOW_URIS if k in os.environ}
    try:
        return main(["--home", str(home), *args])
    finally:
        os.environ.update(saved)


def skip_unless_in_default(phase: str, default: tuple[str, ...]) -> None:
    """Skip a kill point ``make test`` does not run (all run with CTR_FAULTS_FULL=1)."""
    if phase not in default and not os.environ.get(FULL):
        pytest.skip(f"the full kill matrix runs with {FULL}=1 (make test kills at {', '.join(default) or 'none'})")


def random_delay(seconds: float, salt: str) -> float:
    """A seeded kill time between 30 % and 100 % of an uninterrupted run's ``seconds``."""
    return random.Random(f"{SEED}:{salt}").uniform(0.3, 1.0) * seconds


def report(job: str, asked: str, killed: Run, recovered: bool, note: str = "") -> None:
    """One line of the kill report (when ``CTR_FAULTS_REPORT`` names a file)."""
    line = {"job": job, "kill_at": asked, "last_phase": killed.phases[-1] if killed.phases else "",
            "exit": killed.returncode, "killed": killed.killed, "recovered": recovered, "note": note}
    print(json.dumps(line))
    path = os.environ.get(REPORT)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")


def rows(spark, path: Path | str, drop: tuple[str, ...] = ()) -> list[tuple]:
    """The rows of the Delta table at ``path`` (columns in ``drop`` left out), sorted: two runs
    that wrote the same data compare equal whatever their commit history."""
    df = spark.read.format("delta").load(str(path))
    cols = [c for c in df.columns if c not in drop]
    nan = "NaN"  # NaN != NaN: compared as a marker
    return sorted((tuple(nan if isinstance(v, float) and math.isnan(v) else v for v in r)
                   for r in df.select(*cols).collect()), key=repr)
