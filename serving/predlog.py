"""The prediction log: every scored impression, appended to hourly JSON-lines files.

Layout: ``<predictions_dir>/date=YYYY-MM-DD/hour=HH.jsonl`` (UTC hour of the request's
receipt time). Two kinds of line. ``/v1/openrtb`` writes one line per scored impression
(per impression x candidate ad with candidates)::

    {"ts": "2026-11-21T06:01:02.345Z",   receipt time, UTC, milliseconds
     "request_id": "...",                 the request's id (BidRequest.id, or given / generated)
     "impression_id": "...",              the record's id / imp.id (null when not given)
     "ad_index": 0,                       only for /v1/openrtb with candidate ads
     "endpoint": "score" | "openrtb",
     "model_version": "3",
     "ctr": 0.0123,                       the predicted click probability
     "fields": {...}}                     the raw feature fields that were scored

``/v1/score`` writes one line per request, with the request body exactly as it was
received (JSON whitespace newlines blanked) and the CTR of each of its records in order::

    {"ts": ..., "request_id": ..., "endpoint": "score", "model_version": "3",
     "ctrs": [0.0123, ...],               ctrs[i] is the prediction for request.records[i]
     "request": {"records": [{"id": ..., "fields": {...}}, ...], ...}}

so the bidder never re-serialises what the client already serialised (why: docs/serving.md).
:func:`expand_line` turns
either kind into per-impression rows; ``monitoring.predictions`` does the same in Spark.

The request handler only appends one tuple per request to a bounded in-memory queue
(capacity counted in records) and never waits: a request whose records do not fit is
not logged and its records are counted as dropped (``ctr_prediction_log_dropped_total``).
A background thread drains the queue every ``flush_interval`` seconds, or at once when
the queue passes its high-water mark, and appends each hour's lines with one write.
:meth:`PredictionLog.close` drains everything still queued before returning.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import orjson

from serving.metrics import ServingMetrics

log = logging.getLogger("ctr.serving.predlog")

DEFAULT_CAPACITY = 200_000
DEFAULT_FLUSH_INTERVAL = 0.5
YIELD_EVERY = 64  # records serialised between GIL hand-backs


def hour_path(root: Path, ts: float) -> Path:
    """The hourly file a line received at ``ts`` goes to: ``date=YYYY-MM-DD/hour=HH.jsonl``."""
    t = datetime.fromtimestamp(ts, timezone.utc)
    return root / f"date={t:%Y-%m-%d}" / f"hour={t:%H}.jsonl"


def _iso_ms(ts: float) -> str:
    t = datetime.fromtimestamp(ts, timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class PredictionLog:
    """Bounded, non-blocking prediction log with one writer thread."""

    def __init__(self, root: str | Path, *, capacity: int = DEFAULT_CAPACITY,
                 flush_interval: float = DEFAULT_FLUSH_INTERVAL, high_water: int | None = None,
                 metrics: ServingMetrics | None = None):
        if capacity < 1:
            raise ValueError("prediction log capacity must be >= 1")
        self.root = Path(root)
        self.capacity = int(capacity)
        self.high_water = int(high_water if high_water is not None else max(1, capacity // 2))
        self.flush_interval = float(flush_interval)
        self.metrics = metrics
        self.pending = 0  # records queued, not yet taken by the writer
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        self._queue: deque = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the writer thread (once)."""
        if self._thread is None:
            self._closing = False
            self._thread = threading.Thread(target=self._run, name="ctr-prediction-log", daemon=True)
            self._thread.start()

    def submit(self, ts: float, request_id: str, endpoint: str, model_version: str,
               ids: Sequence[Any], ctrs: Sequence[float], fields: Sequence[Any],
               ad_index: Sequence[int] | None = None) -> bool:
        """Queue one request's scored records, one line each; False (and counted) when they
        do not fit."""
        return self._put((ts, request_id, endpoint, model_version, ids, ctrs, fields, ad_index), len(ctrs))

    def submit_request(self, ts: float, request_id: str, endpoint: str, model_version: str,
                       ctrs: Sequence[float], body: bytes) -> bool:
        """Queue one request logged with its raw JSON ``body`` (whose ``records[i]`` got
        ``ctrs[i]``); False (and counted) when its records do not fit."""
        return self._put((ts, request_id, endpoint, model_version, None, ctrs, body, None), len(ctrs))

    def _put(self, item: tuple, n: int) -> bool:
        with self._cond:
            if self._closing or self.pending + n > self.capacity:
                self.dropped += n
                accepted = False
            else:
                self._queue.append(item)
                self.pending += n
                accepted = True
                if self.pending >= self.high_water:
                    self._cond.notify()
        if not accepted and self.metrics is not None:
            self.metrics.log_dropped.inc(n)
        return accepted

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    self._cond.wait(self.flush_interval)
                batch = list(self._queue)
                self._queue.clear()
                self.pending = 0
                closing = self._closing
            if batch:
                self._write(batch)
            if self.metrics is not None:
                self.metrics.log_queue.set(self.pending)
            if closing and not batch:
                with self._cond:
                    if not self._queue:
                        return

    def _write(self, batch: list) -> None:
        by_file: dict[Path, list[bytes]] = {}
        records_in: dict[Path, int] = {}  # records per file (a request line holds several)
        dumps = orjson.dumps
        done = 0
        for ts, request_id, endpoint, version, ids, ctrs, fields, ad_index in batch:
            iso = _iso_ms(ts)
            path = hour_path(self.root, ts)
            lines = by_file.setdefault(path, [])
            records_in[path] = records_in.get(path, 0) + len(ctrs)
            if ids is None:  # a request line: ``fields`` is the raw body (JSON: a literal
                # newline byte can only be whitespace there, so blanking it keeps the meaning)
                lines.append(b"".join((
                    b'{"ts":"', iso.encode(), b'","request_id":', dumps(request_id), b',"endpoint":',
                    dumps(endpoint), b',"model_version":', dumps(version), b',"ctrs":', dumps(ctrs),
                    b',"request":', fields.replace(b"\n", b" ").replace(b"\r", b" "), b"}")))
            else:
                for j, ctr in enumerate(ctrs):
                    rec = {"ts": iso, "request_id": request_id, "impression_id": ids[j]}
                    if ad_index is not None:
                        rec["ad_index"] = ad_index[j]
                    rec.update(endpoint=endpoint, model_version=version, ctr=ctr, fields=fields[j])
                    try:
                        lines.append(dumps(rec))
                    except TypeError as exc:  # a value orjson cannot encode: keep the line, lose the fields
                        rec["fields"] = None
                        rec["fields_error"] = str(exc)
                        lines.append(dumps(rec))
                done += len(ctrs)
            if done >= YIELD_EVERY:  # let the event loop have the GIL between chunks
                done = 0
                time.sleep(0)
        written = 0
        for path, lines in by_file.items():
            n_records = records_in[path]
            data = b"\n".join(lines) + b"\n"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
                written += n_records
            except OSError as exc:
                self.write_errors += n_records
                if self.metrics is not None:
                    self.metrics.log_errors.inc(n_records)
                log.error("prediction log: cannot append %d records to %s: %s", n_records, path, exc)
        self.written += written
        if self.metrics is not None:
            self.metrics.log_written.inc(written)

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting records, write everything queued, stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:  # never started: write what was queued
            with self._cond:
                batch = list(self._queue)
                self._queue.clear()
                self.pending = 0
            if batch:
                self._write(batch)


def expand_line(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-impression rows of one parsed log line (either kind), in the per-impression
    line's shape: ``ts, request_id, impression_id, [ad_index,] endpoint, model_version,
    ctr, fields``."""
    if "ctrs" not in row:
        return [row]
    head = {"ts": row["ts"], "request_id": row["request_id"]}
    tail = {"endpoint": row["endpoint"], "model_version": row["model_version"]}
    return [{**head, "impression_id": rec.get("id"), **tail, "ctr": ctr, "fields": rec.get("fields")}
            for rec, ctr in zip(row["request"]["records"], row["ctrs"])]
