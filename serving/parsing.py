"""Request bodies of the scoring endpoints: read with a size limit, parse with orjson,
validate against the schemas of :mod:`serving.schemas` by hand.

Hand validation instead of pydantic on the hot path: ``benchmarks/bench_serving.py
--parse-only`` measures both on realistic bodies. Every rejection is an :class:`ApiError`
with an HTTP status, a stable ``kind`` and a message naming the JSON path at fault.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Callable, Mapping, NamedTuple

import orjson
from starlette.requests import ClientDisconnect, Request

from serving.schemas import (BID_REQUEST_SCHEMA, CANDIDATE_AD_SCHEMA, EVENT_TIME_MAX, EVENT_TIME_MIN,
                             EVENT_TIME_PATTERN, MAX_ID_CHARS)
from shared.errors import CtrError
from shared.openrtb import AD_KEYS, MappingError, impression_fields, request_impressions

SCORE_KEYS = frozenset({"request_id", "event_time", "records"})
RECORD_KEYS = frozenset({"id", "event_time", "fields"})
ENVELOPE_KEYS = frozenset({"bid_request", "ads", "event_time"})
AD_KEY_SET = frozenset(AD_KEYS)
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "integer", float: "number",
               bool: "boolean", type(None): "null"}


class ApiError(CtrError):  # statuses span the families (400/422 input, 401 auth, 503 not ready)
    """A request the API refuses: HTTP ``status``, error ``kind``, human ``message``."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (``string``, ``number``, ``array``, ...), for messages."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 beyond ``limit`` bytes (checked against
    Content-Length first, and while streaming for chunked bodies)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "malformed_json", f"Content-Length is not a number: {declared!r}") from None
        if size > limit:
            raise ApiError(413, "too_large", f"request body of {size} bytes exceeds the limit of {limit} bytes")
        try:
            return await request.body()
        except ClientDisconnect:
            raise ApiError(400, "malformed_json", "client disconnected before sending the whole body") from None
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "malformed_json", "client disconnected before sending the whole body") from None
    return b"".join(chunks)


def load_json_object(body: bytes, what: str) -> dict[str, Any]:
    """Parse a request body that must be a JSON object; :class:`ApiError` 400 or 422 otherwise."""
    if not body:
        raise ApiError(400, "malformed_json", f"empty request body: expected a JSON {what}")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ApiError(422, "wrong_type", f"request body must be a JSON object ({what}), got {json_type(obj)}")
    return obj


def _unknown(obj: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    if not allowed.issuperset(obj):
        extra = sorted(k for k in obj if k not in allowed)
        raise ApiError(422, "unknown_field", f"{where}: unknown field(s) {', '.join(map(repr, extra))} "
                                             f"(allowed: {', '.join(sorted(allowed))})")


def _opt_id(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(422, "wrong_type", f"{where} must be a string, got {json_type(value)}")
    if len(value) > MAX_ID_CHARS:
        raise ApiError(422, "bad_value", f"{where} is longer than {MAX_ID_CHARS} characters")
    return value


def parse_event_time(value: Any, where: str) -> float | None:
    """An event time (``serving.schemas.EventTime``) as epoch seconds: an ISO-8601 string with
    a UTC offset, or a number of epoch seconds, within [2000-01-01, 2100-01-01) UTC; None
    stays None. :class:`ApiError` 422 otherwise."""
    if value is None:
        return None
    if isinstance(value, str):
        if not _EVENT_TIME.search(value):
            if _NAIVE_TIME.match(value):
                raise ApiError(422, "bad_value", f"{where} has no UTC offset: {value[:64]!r} (write e.g. "
                                                 f"'2026-11-07T14:03:21Z' or '...+01:00')")
            raise ApiError(422, "bad_value", f"{where} is not an ISO-8601 (RFC 3339) date-time with a UTC offset, "
                                             f"dated 2000-01-01 .. 2099-12-31: {value[:64]!r}")
        try:
            t = datetime.fromisoformat(value.rstrip("\n"))
        except ValueError:
            raise ApiError(422, "bad_value", f"{where} is not an ISO-8601 date-time: {value[:64]!r}") from None
        if t.tzinfo is None:
            raise ApiError(422, "bad_value", f"{where} has no UTC offset: {value[:64]!r} (write e.g. "
                                             f"'2026-11-07T14:03:21Z' or '...+01:00')")
        return t.timestamp()  # the pattern bounds the written date
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ApiError(422, "bad_value", f"{where} is not a finite number")
    else:
        raise ApiError(422, "wrong_type", f"{where} must be an ISO-8601 string or epoch seconds, "
                                          f"got {json_type(value)}")
    if not EVENT_TIME_MIN <= seconds < EVENT_TIME_MAX:
        raise ApiError(422, "bad_value", f"{where} is outside 2000-01-01 .. 2100-01-01 UTC ({value!r}; epoch "
                                         f"times are in seconds, not milliseconds)")
    return seconds


_EVENT_TIME = re.compile(EVENT_TIME_PATTERN)
_NAIVE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]+$")


# --- a validator compiled from the JSON Schemas of serving.schemas (the document's own dicts) ---

Check = Callable[[Any, str], Any]
#: The Python types (exact: a bool is no integer) orjson gives for each JSON Schema type.
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "number": (int, float),
    "boolean": (bool,), "null": (type(None),),
}


def _matches(check: Check, value: Any) -> bool:
    try:
        check(value, "")
    except ApiError:
        return False
    return True


def compile_schema(schema: Mapping[str, Any]) -> Check:
    """A function ``check(value, where)`` raising :class:`ApiError` 422 where ``value`` breaks
    ``schema``: the subset of JSON Schema the documents of :mod:`serving.schemas` use (type,
    properties, required, additionalProperties false, items, min/maxItems, minLength,
    minimum/maximum, minProperties, not/anyOf). Unknown keywords are an error, so the server
    never silently enforces less than the document says.

    JSON has one kind of number: ``3.0`` is an ``integer`` in JSON Schema. Where the schema
    says integer (and not number), an integral float is replaced in place by the int it is."""
    known = {"type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
             "minLength", "minimum", "maximum", "minProperties", "not", "anyOf", "title", "description",
             "examples"}
    unknown = set(schema) - known
    if unknown:
        raise ValueError(f"compile_schema: unsupported keywords {sorted(unknown)}")
    types = schema.get("type")
    type_names = [types] if isinstance(types, str) else list(types or [])
    py_types = frozenset(t for name in type_names for t in _PY_TYPES[name])
    integral = "integer" in type_names and "number" not in type_names
    props = {k: compile_schema(v) for k, v in schema.get("properties", {}).items()}
    required = list(schema.get("required", []))
    closed = schema.get("additionalProperties", True) is False
    items = compile_schema(schema["items"]) if "items" in schema else None
    min_items, max_items = schema.get("minItems"), schema.get("maxItems")
    min_len, min_props = schema.get("minLength"), schema.get("minProperties")
    lo, hi = schema.get("minimum"), schema.get("maximum")
    negated = compile_schema(schema["not"]) if "not" in schema else None
    any_of = [compile_schema(s) for s in schema.get("anyOf", [])]
    allowed = ", ".join(sorted(props))

    def check(value: Any, where: str) -> Any:
        if integral and type(value) is float and value.is_integer() and lo is not None and hi is not None \
                and lo <= value <= hi:
            value = int(value)
        if py_types and type(value) not in py_types:
            raise ApiError(422, "wrong_type", f"{where} must be {' or '.join(type_names)}, got {json_type(value)}")
        if type(value) is dict:
            for k in required:
                if k not in value:
                    raise ApiError(422, "missing_field", f"{where}: missing required field {k!r}")
            for k, sub in props.items():
                if k in value:
                    v = value[k]
                    new = sub(v, f"{where}.{k}" if where else k)
                    if new is not v:
                        value[k] = new
            if closed and not value.keys() <= props.keys():
                extra = sorted(k for k in value if k not in props)
                raise ApiError(422, "unknown_field", f"{where}: unknown field(s) {', '.join(map(repr, extra))} "
                                                     f"(allowed: {allowed})")
            if min_props is not None and len(value) < min_props:
                raise ApiError(422, "bad_value", f"{where} is empty")
        elif type(value) is list:
            if min_items is not None and len(value) < min_items:
                raise ApiError(422, "bad_value", f"{where} has fewer than {min_items} items")
            if max_items is not None and len(value) > max_items:
                raise ApiError(413, "too_large", f"{where} has more than {max_items} items")
            if items is not None:
                for i, v in enumerate(value):
                    new = items(v, f"{where}[{i}]")
                    if new is not v:
                        value[i] = new
        elif type(value) is str:
            if min_len is not None and len(value) < min_len:
                raise ApiError(422, "missing_field", f"{where} is empty")
        elif type(value) is int or type(value) is float:
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ApiError(422, "bad_value", f"{where} is out of range [{lo}, {hi}]")
        if any_of and not any(_matches(c, value) for c in any_of):
            raise ApiError(422, "invalid", f"{where or 'value'} matches none of the allowed forms")
        if negated is not None and _matches(negated, value):
            raise ApiError(422, "invalid", f"{where or 'request body'} is not allowed here" + (
                " (a BidRequest may not have both a non-empty site and a non-empty app)" if "site" in props else ""))
        return value

    return check


check_bid_request = compile_schema(BID_REQUEST_SCHEMA)
check_candidate_ad = compile_schema(CANDIDATE_AD_SCHEMA)


class ScoreBody(NamedTuple):
    """A parsed ``/v1/score`` body."""

    request_id: str | None
    ids: list[str | None]
    fields: list[dict[str, Any]]
    event_time: float | None  # the request's event time (epoch seconds), if given
    event_times: list[float | None] | None  # each record's own event time; None when no record gives one


def parse_score_body(body: bytes, max_batch: int) -> ScoreBody:
    """The request id, record ids, field dicts and event times of a ``/v1/score`` body."""
    obj = load_json_object(body, "ScoreRequest")
    _unknown(obj, SCORE_KEYS, "request body")
    request_id = _opt_id(obj.get("request_id"), "request_id")
    event_time = parse_event_time(obj.get("event_time"), "event_time")
    records = obj.get("records")
    if records is None:
        raise ApiError(422, "missing_field", "missing required field 'records' (a list of {id, fields} objects)")
    if not isinstance(records, list):
        raise ApiError(422, "wrong_type", f"records must be an array, got {json_type(records)}")
    if not records:
        raise ApiError(422, "bad_value", "records is empty: send at least one record")
    if len(records) > max_batch:
        raise ApiError(413, "too_large", f"batch of {len(records)} records exceeds the maximum of {max_batch}")
    ids: list[str | None] = []
    fields: list[dict[str, Any]] = []
    event_times: list[float | None] | None = None
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            raise ApiError(422, "wrong_type", f"records[{i}] must be an object, got {json_type(rec)}")
        if not RECORD_KEYS.issuperset(rec):
            _unknown(rec, RECORD_KEYS, f"records[{i}]")
        f = rec.get("fields")
        if type(f) is not dict:
            if f is None:
                raise ApiError(422, "missing_field", f"records[{i}]: missing required field 'fields'")
            raise ApiError(422, "wrong_type", f"records[{i}].fields must be an object, got {json_type(f)}")
        rid = rec.get("id")
        ids.append(rid if rid is None or (type(rid) is str and len(rid) <= MAX_ID_CHARS)
                   else _opt_id(rid, f"records[{i}].id"))
        fields.append(f)
        t = rec.get("event_time")
        if t is not None:
            if event_times is None:
                event_times = [None] * i
            event_times.append(parse_event_time(t, f"records[{i}].event_time"))
        elif event_times is not None:
            event_times.append(None)
    return ScoreBody(request_id, ids, fields, event_time, event_times)


def _mapping_error(exc: MappingError, where: str = "") -> ApiError:
    kind = exc.reason if exc.reason in ("wrong_type", "missing_field", "invalid") else "invalid"
    return ApiError(422, kind, f"{where}{exc}")


def parse_openrtb_body(body: bytes, max_batch: int
                       ) -> tuple[dict[str, Any], list, list[dict[str, Any]] | None, float | None]:
    """(bid request, its imps, candidate ads or None, event time or None) of a ``/v1/openrtb``
    body: a bare BidRequest, or ``{"bid_request": ..., "ads": [...], "event_time": ...}``.

    OpenRTB 2.6 carries no event time in the BidRequest: only the envelope can give one
    (epoch seconds here); a bare BidRequest is always taken at its receipt time."""
    obj = load_json_object(body, "BidRequest or {bid_request, ads, event_time}")
    ads = None
    event_time = None
    if "bid_request" in obj:
        _unknown(obj, ENVELOPE_KEYS, "request body")
        request = obj["bid_request"]
        if not isinstance(request, dict):
            raise ApiError(422, "wrong_type", f"bid_request must be an object, got {json_type(request)}")
        raw_ads = obj.get("ads")
        if raw_ads is not None:
            if not isinstance(raw_ads, list):
                raise ApiError(422, "wrong_type", f"ads must be an array, got {json_type(raw_ads)}")
            for j, ad in enumerate(raw_ads):
                if not isinstance(ad, dict):
                    raise ApiError(422, "wrong_type", f"ads[{j}] must be an object, got {json_type(ad)}")
                _unknown(ad, AD_KEY_SET, f"ads[{j}]")
            ads = raw_ads or None
        event_time = parse_event_time(obj.get("event_time"), "event_time")
        where = "bid_request."
    else:
        request, where = obj, ""
    rid = request.get("id")
    if rid is None or rid == "":
        raise ApiError(422, "missing_field", f"{where}id is missing (OpenRTB requires BidRequest.id)")
    if not isinstance(rid, str):
        raise ApiError(422, "wrong_type", f"{where}id must be a string, got {json_type(rid)}")
    try:
        imps = request_impressions(request)
    except MappingError as exc:
        raise _mapping_error(exc, where) from None
    pairs = len(imps) * (len(ads) if ads else 1)
    if pairs > max_batch:
        raise ApiError(413, "too_large", f"{len(imps)} impressions x {len(ads) if ads else 1} ads = {pairs} "
                                         f"predictions exceeds the maximum of {max_batch}")
    for i, imp in enumerate(imps):
        imp_id = imp.get("id")
        if imp_id is None or imp_id == "":
            raise ApiError(422, "missing_field", f"{where}imp[{i}].id is missing (OpenRTB requires Imp.id)")
        if not isinstance(imp_id, str):
            raise ApiError(422, "wrong_type", f"{where}imp[{i}].id must be a string, got {json_type(imp_id)}")
    return request, imps, ads, event_time


def check_openrtb(request: dict[str, Any], ads: list[dict[str, Any]] | None) -> None:
    """The documented schema of the BidRequest and its candidate ads, all of it (also what the
    mapping would let through, e.g. a mistyped field it does not read for this impression);
    integral floats where the schema says integer become ints, in place."""
    check_bid_request(request, "bid_request")
    for j, ad in enumerate(ads or ()):
        check_candidate_ad(ad, f"ads[{j}]")


def openrtb_fields(request: dict[str, Any], imps: list, ads: list | None, event_time: datetime
                   ) -> list[dict[str, Any]]:
    """Raw fields of every impression (x every candidate ad, ads varying fastest)."""
    out = []
    for i, imp in enumerate(imps):
        try:
            if ads is None:
                out.append(impression_fields(request, imp, None, event_time))
            else:
                out.extend(impression_fields(request, imp, ad, event_time) for ad in ads)
        except MappingError as exc:
            raise _mapping_error(exc, f"imp[{i}]: ") from None
    return out
