"""Pure parsing of bidder and click-tracker log lines into observation rows.

Every line either becomes a row or a quarantine record with a stable reason code;
nothing is dropped without a count. Spark jobs call these functions inside
``mapInPandas`` so the parsing is the same code everywhere.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from shared.errors import InputError
from shared.limits import MiB, format_size
from shared.openrtb import MappingError, impression_fields, request_impressions

#: Quarantine reason codes (stable: dashboards and tests count by them).
REASONS = (
    "truncated_json",
    "invalid_json",
    "not_an_object",
    "missing_impression_id",
    "bad_timestamp",
    "missing_field",
    "wrong_type",
    "invalid",
    "line_too_long",
)

RAW_LINE_LIMIT = 4096  # bytes of an offending line kept in quarantine
#: Longest log line parsed (an impression line is a few KiB): a longer one is quarantined as
#: ``line_too_long`` without being parsed.
MAX_LINE_BYTES = 1 * MiB


class LineError(InputError):
    """A log line that cannot be parsed; ``reason`` is the quarantine reason code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def parse_timestamp(value: Any, where: str = "timestamp") -> datetime:
    """ISO-8601 time with an explicit zone (``Z`` or an offset) -> aware UTC datetime."""
    if not isinstance(value, str) or not value:
        raise LineError("bad_timestamp", f"{where} must be an ISO-8601 string, got {value!r}"[:200])
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise LineError("bad_timestamp", f"{where} is not ISO-8601: {value!r}"[:200]) from None
    if t.tzinfo is None:
        raise LineError("bad_timestamp", f"{where} has no time zone: {value!r}"[:200])
    return t.astimezone(timezone.utc)


def load_object(line: bytes | str) -> dict[str, Any]:
    """One log line as a JSON object; :class:`LineError` when it is too long, invalid, truncated or
    not an object."""
    if len(line) > MAX_LINE_BYTES // 4:  # a str of n characters is n..4n bytes of UTF-8
        size = len(line) if isinstance(line, bytes) else len(line.encode("utf-8", "replace"))
        if size > MAX_LINE_BYTES:
            raise LineError("line_too_long", f"line is {size:,} bytes, over the {format_size(MAX_LINE_BYTES)} "
                                             "limit (MAX_LINE_BYTES)")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        truncated = "unexpected end" in text.lower() or "eof" in text.lower()
        raise LineError("truncated_json" if truncated else "invalid_json", f"not valid JSON: {text}"[:300]) from None
    if not isinstance(obj, dict):
        raise LineError("not_an_object", f"line is JSON {type(obj).__name__}, not an object")
    return obj


def _id(obj: dict, key: str) -> str:
    value = obj.get(key)
    if value is None or value == "":
        raise LineError(f"missing_{key}" if key == "impression_id" else "missing_field", f"{key} is missing")
    if not isinstance(value, str):
        raise LineError("wrong_type", f"{key} must be a string, got {type(value).__name__}")
    return value


def parse_impression(line: bytes | str) -> tuple[str, datetime, dict[str, Any]]:
    """(impression_id, event_time, raw fields) of one impression-log line, or :class:`LineError`."""
    obj = load_object(line)
    impression_id = _id(obj, "impression_id")
    event_time = parse_timestamp(obj.get("timestamp"))
    request = obj.get("bid_request")
    if not isinstance(request, dict):
        raise LineError("missing_field" if request is None else "wrong_type", "bid_request must be an object")
    try:
        imps = request_impressions(request)
        imp_id = obj.get("imp_id")
        imp = next((i for i in imps if imp_id is not None and i.get("id") == imp_id), imps[0])
        fields = impression_fields(request, imp, obj.get("ad"), event_time)
    except MappingError as exc:
        raise LineError(exc.reason, str(exc)) from None
    return impression_id, event_time, fields


def parse_click(line: bytes | str) -> tuple[str, datetime]:
    """A click line -> (impression id, click time in UTC)."""
    obj = load_object(line)
    return _id(obj, "impression_id"), parse_timestamp(obj.get("click_time"), "click_time")


def clip_raw(line: bytes | str) -> str:
    """The raw line as text, clipped to ``RAW_LINE_LIMIT`` for the quarantine table."""
    if isinstance(line, bytes):
        line = line[:RAW_LINE_LIMIT].decode("utf-8", "replace")
    return line[:RAW_LINE_LIMIT]
