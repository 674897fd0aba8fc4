"""The prediction log: every scored impression, appended to hourly JSON-lines files.

Layout: ``<predictions_dir>/date=YYYY-MM-DD/hour=HH.jsonl``, the UTC hour of the
prediction's *event time*: the impression's own time when the request gives one
(``event_time``, see :mod:`serving.schemas`), else the receipt time. So a day's folder
holds that day's traffic, whenever it was scored (a replay of last week's impressions
lands in last week's folders). Two kinds of line. ``/v1/openrtb`` writes one line per
scored impression (per impression x candidate ad with candidates)::

    {"received_at": "2026-11-21T06:01:02.345Z",  receipt time, UTC, milliseconds
     "event_time": "2026-11-21T06:01:02.345Z",   the envelope's event_time, else the receipt time
     "request_id": "...",                 the request's id (BidRequest.id, or given / generated)
     "impression_id": "...",              the record's id / imp.id (null when not given)
     "ad_index": 0,                       only for /v1/openrtb with candidate ads
     "endpoint": "score" | "openrtb",
     "model_version": "3",
     "ctr": 0.0123,                       the predicted click probability
     "fields": {...}}                     the raw feature fields that were scored

``/v1/score`` writes one line per request, with the request body exactly as it was
received (JSON whitespace newlines blanked) and the CTR of each of its records in order::

    {"received_at": ..., "event_time": ...,   the request's event_time, else the receipt time
     "request_id": ..., "endpoint": "score", "model_version": "3",
     "ctrs": [0.0123, ...],               ctrs[i] is the prediction for request.records[i]
     "event_times": [...],                only when a record gives its own event_time: each
                                          record's event time (its own, else the request's)
     "request": {"records": [{"id": ..., "fields": {...}}, ...], ...}}

so the bidder never re-serialises what the client already serialised (why: docs/serving.md).
Event times are written normalised (UTC, milliseconds, ``Z``) whatever form the request
used. A request whose records' event times fall on several UTC dates is written, the same
line, to each of those dates' folders; a reader keeps from a request line only the records
of the folder's date (:func:`expand_line` with ``day``; ``monitoring.predictions``).
Lines written before event times were logged carry one ``ts`` (the receipt time) instead
of ``received_at`` and ``event_time``; readers take it for both.

:func:`expand_line` turns either kind into per-impression rows; ``monitoring.predictions``
does the same in Spark.

The request handler only appends one tuple per request to a bounded in-memory queue
(capacity counted in records) and never waits: a request whose records do not fit is
not logged and its records are counted as dropped (``ctr_prediction_log_dropped_total``).
A background thread drains the queue every ``flush_interval`` seconds, or at once when
the queue passes its high-water mark, and appends each hour's lines with one write.
:meth:`PredictionLog.close` drains everything still queued before returning.

A write that fails (disk full ``ENOSPC``, file-size limit ``EFBIG``, read-only or
unwritable directory) never reaches the request: its records are counted as lost
(``ctr_prediction_log_write_errors_total``), the bytes it did append are cut off again so
every line in the file stays whole JSON, the error is logged once when it starts (then at
most every :data:`ERROR_LOG_EVERY` seconds) and once when writing works again; each
batch tries afresh, so logging resumes by itself when the disk has room.
"""

from __future__ import annotations

import logging
import math
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
ERROR_LOG_EVERY = 60.0  # seconds between log lines while writes keep failing


def hour_path(root: Path, ts: float) -> Path:
    """The hourly file of a line whose event time is ``ts``: ``date=YYYY-MM-DD/hour=HH.jsonl``."""
    t = datetime.fromtimestamp(ts, timezone.utc)
    return root / f"date={t:%Y-%m-%d}" / f"hour={t:%H}.jsonl"


def _iso_ms(ts: float) -> str:
    t = datetime.fromtimestamp(ts, timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _whole_us(ts: float) -> tuple[int, int]:
    """(whole seconds, microseconds) of an epoch time, rounded as ``datetime.fromtimestamp``
    rounds it (half to even, carrying into the seconds), so cached texts equal its own."""
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        whole, us = whole + 1.0, us - 1_000_000
    elif us < 0:
        whole, us = whole - 1.0, us + 1_000_000
    return int(whole), us


class _TimeTexts:
    """The writer's :func:`_iso_ms` and :func:`hour_path`, with the part that changes once a
    second (once an hour) formatted once: per line, a dict lookup instead of a datetime and a
    strftime (measured: most of the writer thread's CPU per request). Bounded caches."""

    LIMIT = 4096

    def __init__(self, root: Path):
        self.root = root
        self._seconds: dict[int, bytes] = {}
        self._hours: dict[int, Path] = {}

    def iso_ms(self, ts: float) -> bytes:
        """``_iso_ms(ts)``, UTF-8."""
        whole, us = _whole_us(ts)
        prefix = self._seconds.get(whole)
        if prefix is None:
            if len(self._seconds) >= self.LIMIT:
                self._seconds.clear()
            prefix = self._seconds[whole] = \
                datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.").encode()
        return prefix + b"%03dZ" % (us // 1000)

    def hour_path(self, ts: float) -> Path:
        """``hour_path(root, ts)``."""
        hour = _whole_us(ts)[0] // 3600
        path = self._hours.get(hour)
        if path is None:
            if len(self._hours) >= self.LIMIT:
                self._hours.clear()
            path = self._hours[hour] = hour_path(self.root, hour * 3600)
        return path


def _date_targets(root: Path, event_times: Sequence[float]) -> list[tuple[Path, int]]:
    """(hourly file, records) per UTC date of ``event_times``: each date's file is the hour
    of its first record."""
    first: dict[str, float] = {}
    count: dict[str, int] = {}
    for t in event_times:
        day = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d")
        first.setdefault(day, t)
        count[day] = count.get(day, 0) + 1
    return [(hour_path(root, first[d]), count[d]) for d in first]


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` whole or not at all: after a failed or short write
    (``ENOSPC``, ``EFBIG``) the file is cut back to its size before, so no half line is
    left for the next append to continue. Only this writer thread appends (one server per
    data root), so the size read before writing is the file's end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            try:
                os.ftruncate(fd, size)
            except OSError as exc:  # not a regular file, or the file system refuses even that
                log.error("prediction log: cannot cut the partial write off %s: %s", path, exc)
            raise
    finally:
        os.close(fd)


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
        #: Epoch seconds of the first failed write of the current failure (None: writing fine).
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self._logged_at = 0.0  # monotonic time of the last failure log line
        self._lost_since_log = 0
        self._texts = _TimeTexts(self.root)
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

    def submit(self, received: float, request_id: str, endpoint: str, model_version: str,
               ids: Sequence[Any], ctrs: Sequence[float], fields: Sequence[Any],
               ad_index: Sequence[int] | None = None, *, event_time: float | None = None) -> bool:
        """Queue one request's scored records, one line each, received at ``received`` (epoch
        seconds) with the event time ``event_time`` (default: ``received``); False (and
        counted) when they do not fit."""
        et = received if event_time is None else event_time
        return self._put((received, et, None, request_id, endpoint, model_version, ids, ctrs, fields, ad_index),
                         len(ctrs))

    def submit_request(self, received: float, request_id: str, endpoint: str, model_version: str,
                       ctrs: Sequence[float], body: bytes, *, event_time: float | None = None,
                       event_times: Sequence[float] | None = None) -> bool:
        """Queue one request logged with its raw JSON ``body`` (whose ``records[i]`` got
        ``ctrs[i]``), received at ``received``, with the request's event time (default:
        ``received``) and, when records carry their own, every record's (``event_times[i]``);
        False (and counted) when its records do not fit."""
        if event_times is not None and len(event_times) != len(ctrs):
            raise ValueError(f"{len(event_times)} event times for {len(ctrs)} records")
        et = received if event_time is None else event_time
        return self._put((received, et, event_times, request_id, endpoint, model_version, None, ctrs, body, None),
                         len(ctrs))

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
        iso_ms, hour_file = self._texts.iso_ms, self._texts.hour_path
        done = 0
        for received, event_time, event_times, request_id, endpoint, version, ids, ctrs, fields, ad_index in batch:
            head = b'{"received_at":"' + iso_ms(received) + b'","event_time":"' + iso_ms(event_time) + b'"'
            if ids is None:  # a request line: ``fields`` is the raw body (JSON: a literal
                # newline byte can only be whitespace there, so blanking it keeps the meaning)
                times = b""
                if event_times is None:
                    targets = [(hour_file(event_time), len(ctrs))]
                else:
                    times = b',"event_times":' + dumps([_iso_ms(t) for t in event_times])
                    targets = _date_targets(self.root, event_times)
                line = b"".join((
                    head, b',"request_id":', dumps(request_id), b',"endpoint":',
                    dumps(endpoint), b',"model_version":', dumps(version), b',"ctrs":', dumps(ctrs), times,
                    b',"request":', fields.replace(b"\n", b" ").replace(b"\r", b" "), b"}"))
                for path, n in targets:
                    by_file.setdefault(path, []).append(line)
                    records_in[path] = records_in.get(path, 0) + n
            else:
                path = hour_file(event_time)
                lines = by_file.setdefault(path, [])
                records_in[path] = records_in.get(path, 0) + len(ctrs)
                prefix = head + b',"request_id":' + dumps(request_id) + b',"impression_id":'
                for j, ctr in enumerate(ctrs):
                    rec: dict[str, Any] = {}
                    if ad_index is not None:
                        rec["ad_index"] = ad_index[j]
                    rec.update(endpoint=endpoint, model_version=version, ctr=ctr, fields=fields[j])
                    try:
                        tail = dumps(rec)
                    except TypeError as exc:  # a value orjson cannot encode: keep the line, lose the fields
                        rec["fields"] = None
                        rec["fields_error"] = str(exc)
                        tail = dumps(rec)
                    lines.append(prefix + dumps(ids[j]) + b"," + tail[1:])
            done += len(ctrs)
            if done >= YIELD_EVERY:  # let the event loop have the GIL between chunks
                done = 0
                time.sleep(0)
        written, lost, error = 0, 0, None
        for path, lines in by_file.items():
            try:
                _append(path, b"\n".join(lines) + b"\n")
                written += records_in[path]
            except OSError as exc:
                lost += records_in[path]
                error = f"cannot append to {path}: {exc}"
        self.written += written
        if self.metrics is not None:
            self.metrics.log_written.inc(written)
        if error is not None:
            self._failed(lost, error)
        elif self.failing_since is not None:
            log.warning("prediction log: writing again after %.0f s of failures (%d records lost in all)",
                        time.time() - self.failing_since, self.write_errors)
            self.failing_since = self.last_error = None

    def _failed(self, lost: int, error: str) -> None:
        """Count records lost to a failed write; log when failures start, then at most
        every :data:`ERROR_LOG_EVERY` seconds (a full disk must not flood the server log)."""
        self.write_errors += lost
        if self.metrics is not None:
            self.metrics.log_errors.inc(lost)
        self.last_error = error
        self._lost_since_log += lost
        now = time.monotonic()
        if self.failing_since is None or now - self._logged_at >= ERROR_LOG_EVERY:
            if self.failing_since is None:
                self.failing_since = time.time()
            log.error("prediction log: %d records lost (%s); requests are still answered, writes are retried",
                      self._lost_since_log, error)
            self._logged_at, self._lost_since_log = now, 0

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


def _row_times(row: dict[str, Any]) -> tuple[Any, Any]:
    """(received_at, event_time) of a parsed line; an old line's ``ts`` stands for both."""
    ts = row.get("ts")
    return row.get("received_at", ts), row.get("event_time", ts)


def expand_line(row: dict[str, Any], day: str | None = None) -> list[dict[str, Any]]:
    """Per-impression rows of one parsed log line (either kind), in the per-impression
    line's shape: ``received_at, event_time, request_id, impression_id, [ad_index,] endpoint,
    model_version, ctr, fields`` (an old line's ``ts`` gives both times). With ``day``
    (``YYYY-MM-DD``, the folder the line was read from), only the records whose event time
    falls on that UTC date: a request spanning several dates is logged in each of them."""
    received, event = _row_times(row)
    if "ctrs" not in row:
        out = {"received_at": received, "event_time": event,
               **{k: v for k, v in row.items() if k not in ("ts", "received_at", "event_time")}}
        return [out] if day is None or event is None or str(event)[:10] == day else []
    head = {"received_at": received, "request_id": row["request_id"]}
    tail = {"endpoint": row["endpoint"], "model_version": row["model_version"]}
    times = row.get("event_times") or [event] * len(row["ctrs"])
    return [{**head, "event_time": t, "impression_id": rec.get("id"), **tail, "ctr": ctr, "fields": rec.get("fields")}
            for rec, ctr, t in zip(row["request"]["records"], row["ctrs"], times)
            if day is None or t is None or str(t)[:10] == day]
