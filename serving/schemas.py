"""The API's request and response schemas (pydantic), for the OpenAPI document.

The scoring endpoints parse their bodies with orjson and :mod:`serving.parsing`, which
enforces exactly these schemas (measured: see ``benchmarks/bench_serving.py --parse-only``);
responses are serialised with orjson in the shapes below. The other endpoints use the
models directly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from shared.featurize import FeatureSpec
from shared.openrtb import AD_KEYS, RAW_FIELD_NAMES, RAW_FIELDS

MAX_BATCH = 1000
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_ID_CHARS = 256
# Event times are accepted from 2000-01-01 to 2100-01-01 (UTC), as epoch seconds [MIN, MAX):
# anything else is a unit mistake (milliseconds sent as seconds) or a broken clock.
EVENT_TIME_MIN = 946_684_800.0
EVENT_TIME_MAX = 4_102_444_800.0

#: Integers are parsed as 64-bit (orjson): beyond these bounds a JSON integer becomes a float
#: (the lower bound is one above int64's, so that a float rounded to -2**63 is out of range).
INT_MIN = -(2 ** 63) + 1
INT_MAX = 2 ** 64 - 1

#: An RFC 3339 date-time with a UTC offset, dated 2000-01-01 .. 2099-12-31 as written (only real
#: calendar days; no leap second: the server parses it with ``datetime.fromisoformat``). The server
#: checks strings against this very pattern (:func:`serving.parsing.parse_event_time`).
EVENT_TIME_PATTERN = (
    r"^(20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|20[0-9]{2}-(0[13-9]|1[0-2])-(29|30)"
    r"|20[0-9]{2}-(0[13578]|1[02])-31|20([02468][048]|[13579][26])-02-29)"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")

#: An event time: an RFC 3339 date-time *with* a UTC offset (``2026-11-07T14:03:21.5Z``,
#: ``...+01:00``) or a number of seconds since the Unix epoch (``1794060201.5``).
EventTime = Union[Annotated[str, Field(pattern=EVENT_TIME_PATTERN)],
                  Annotated[float, Field(ge=EVENT_TIME_MIN, lt=EVENT_TIME_MAX)]]

EVENT_TIME_DOC = (
    "When the impression happened: an RFC 3339 date-time with a UTC offset (e.g. `2026-11-07T14:03:21.5Z`), "
    "dated 2000-01-01 to 2099-12-31 as written, or seconds since the Unix epoch, from 2000-01-01 (inclusive) "
    "to 2100-01-01 UTC (exclusive). The prediction log files the "
    "prediction under this time (`event_time`, next to the receipt time `received_at`), so the monitor "
    "counts it on the traffic's own day and hour: send it when you replay or backfill logged impressions. "
    "Absent: the receipt time.")

_FIELD_DOC = "\n".join(f"* `{f.name}` ({f.dtype}): {f.doc}" for f in RAW_FIELDS)

EXAMPLE_FIELDS: dict[str, Any] = {
    "inventory_type": "site", "publisher_id": "9527", "site_id": "976716", "domain": "www.dealzone147.fr",
    "tag_id": "div-gpt-ad-7052618289779-2", "ad_format": "banner", "ad_size": "970x250", "ad_pos": 3,
    "bidfloor": 1.55, "device_type": 4, "os": "Android", "make": "Google", "model": "Pixel 8",
    "connection_type": 2, "country": "GBR", "region": "WLS",
    "user_id": "d7c81796ed157d31de9db58845cc9c08461ecbdf", "user_segments": ["1004", "1061", "5008"],
    "advertiser_id": "5044", "campaign_id": "433076", "creative_id": "7908081", "creative_type": "banner",
    "hour_of_day": 14, "day_of_week": 2,
}

EXAMPLE_BID_REQUEST: dict[str, Any] = {
    "id": "80ce30c53c16e6ede735f123ef6e32361bfc7b22",
    "at": 1,
    "cur": ["USD"],
    "imp": [{"id": "1", "bidfloor": 0.03, "banner": {"h": 250, "w": 300, "pos": 0}}],
    "site": {"id": "102855", "cat": ["IAB3-1"], "domain": "www.foobar.com",
             "page": "http://www.foobar.com/1234.html",
             "publisher": {"id": "8953", "name": "foobar.com", "cat": ["IAB3-1"], "domain": "foobar.com"}},
    "user": {"id": "55816b39711f9b5acf3b90e313ed29e51665623f"},
}

EXAMPLE_ADS: list[Any] = [
    {"advertiser_id": "5044", "campaign_id": "433076", "creative_id": "7908081", "creative_type": "banner"},
    {"advertiser_id": "5044", "campaign_id": "433076", "creative_id": "7908082", "creative_type": "rich_media"},
]


class ScoreRecord(BaseModel):
    """One record to score: an optional id and its raw feature fields."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=MAX_ID_CHARS,
                           description="Your id for the impression (echoed back and logged), e.g. imp.id.")
    event_time: EventTime | None = Field(
        None, description=EVENT_TIME_DOC + " Overrides the request's `event_time` for this record. It does not "
                                           "change the score: the calendar features are the record's "
                                           "`hour_of_day` and `day_of_week` fields.",
        examples=["2026-11-07T14:03:21.500Z"])
    fields: dict[str, Any] = Field(
        description=(
            "Raw feature fields, exactly as `shared.openrtb.impression_fields` produces them. "
            "An absent field or `null` is *missing* (hashed like a missing value in training). "
            "The keys listed here are the ones the served model accepts: the fields its feature spec "
            "reads plus the platform's raw fields (this document is generated from the loaded model and "
            "renewed when the server swaps models; `GET /v1/model` names the version). Any other key "
            "is rejected (422 `unknown_field`); fields the model does not read are logged but do "
            "not change the score.\n\n" + _FIELD_DOC),
        examples=[EXAMPLE_FIELDS],
    )


class ScoreRequest(BaseModel):
    """One impression (a batch of one) or a batch of raw feature records."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [
            {"request_id": "r-1", "records": [{"id": "imp-1", "fields": EXAMPLE_FIELDS}]},
            {"request_id": "replay-1", "event_time": "2026-11-07T14:03:21.500Z",
             "records": [{"id": "imp-1", "fields": EXAMPLE_FIELDS}]},
            {"records": [{"id": "a", "fields": EXAMPLE_FIELDS},
                         {"id": "b", "fields": {**EXAMPLE_FIELDS, "creative_id": "7908082"}}]},
        ]})

    request_id: str | None = Field(None, max_length=MAX_ID_CHARS,
                                   description="Your id for the request; one is generated when absent.")
    event_time: EventTime | None = Field(
        None, description=EVENT_TIME_DOC + " Applies to every record without its own `event_time`.")
    records: list[ScoreRecord] = Field(min_length=1, max_length=MAX_BATCH,
                                       description=f"1 to {MAX_BATCH} records, scored in order.")


class Prediction(BaseModel):
    """The predicted CTR of one record."""

    id: str | None = Field(description="The record's id, as given.")
    ctr: float = Field(description="Predicted click probability, in (0, 1).", examples=[0.0137])


class ModelStamp(BaseModel):
    """Which model scored the request."""

    request_id: str = Field(description="The request's id (given, BidRequest.id, or generated).")
    model_version: str = Field(description="Registry version of the model that scored *every* record "
                                           "of this request (or `dir:<sha>` for a served directory).")
    model_alias: str | None = Field(description="The alias the version was resolved from.")
    spec_fingerprint: str = Field(description="sha256 of the normalised feature spec the model was trained on.")


class ScoreResponse(ModelStamp):
    """The response of `/v1/score`: one prediction per record."""

    predictions: list[Prediction] = Field(description="One per record, in request order.")


class CandidateAd(BaseModel):
    """A candidate ad's fields, added to each impression's fields when scoring it."""

    model_config = ConfigDict(extra="forbid")

    advertiser_id: str | int | None = None
    campaign_id: str | int | None = None
    creative_id: str | int | None = None
    creative_type: str | int | None = Field(None, description="banner, video, native or rich_media")


class OpenRtbEnvelope(BaseModel):
    """A bid request with candidate ads (every impression is scored with every ad), and
    optionally the event time of the impressions (for a replay of logged bid requests)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"bid_request": EXAMPLE_BID_REQUEST, "ads": EXAMPLE_ADS}]})

    bid_request: dict[str, Any] = Field(description="The OpenRTB 2.6 BidRequest, unchanged.")
    ads: list[CandidateAd] | None = Field(
        None, max_length=MAX_BATCH,
        description=f"Candidate ads (keys: {', '.join(AD_KEYS)}; integer ids are read as their decimal "
                    f"string). Not expressible in this schema: impressions x ads may not exceed {MAX_BATCH} "
                    f"(413 `too_large`). Absent, null or empty: each impression is scored without an ad.")
    event_time: EventTime | None = Field(
        None, description=(
            "OpenRTB 2.6 has no event time in the BidRequest, so it goes here, next to it. "
            + EVENT_TIME_DOC + " Unlike `/v1/score`, it also sets the calendar features (`hour_of_day`, "
            "`day_of_week`), as the warehouse does with a logged impression's timestamp. A bare BidRequest "
            "is always scored and logged at its receipt time."),
        examples=["2026-11-07T14:03:21.500Z"])


class BidRequest(BaseModel):
    """An OpenRTB 2.6 BidRequest exactly as the exchange sent it. Only the objects the
    feature mapping reads are checked (`id`, `imp[].id`, and the types of the fields
    `shared.openrtb.impression_fields` reads); every other field and extension is ignored."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [EXAMPLE_BID_REQUEST]})

    id: str = Field(description="BidRequest.id; echoed as `request_id`.")
    imp: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH,
                                      description="Impressions; each needs a string `id`.")


class AdPrediction(BaseModel):
    """The predicted CTR of one candidate ad for one impression."""

    index: int = Field(description="Position of the ad in `ads`.")
    creative_id: str | None = Field(description="The ad's creative id as a string (an integer id is given "
                                                "in decimal), null when the ad has none.")
    ctr: float


class ImpressionPrediction(BaseModel):
    """The prediction for one impression (and each candidate ad)."""

    imp_id: str
    ctr: float = Field(description="Without candidate ads: the impression's predicted CTR with the ad fields "
                                   "missing. With candidates: the highest candidate CTR (that of `best_ad`).")
    best_ad: int | None = Field(None, description="Index of the candidate with the highest CTR (null without ads).")
    ads: list[AdPrediction] | None = Field(None, description="Per candidate, in `ads` order (null without ads).")


class OpenRtbResponse(ModelStamp):
    """The response of `/v1/openrtb`: one prediction per impression."""

    impressions: list[ImpressionPrediction] = Field(description="One per `imp`, in request order.")


class ErrorBody(BaseModel):
    """Why a request was refused."""

    kind: Literal["malformed_json", "wrong_type", "missing_field", "unknown_field", "bad_value", "invalid",
                  "too_large", "unauthorized", "not_ready", "internal"]
    message: str = Field(description="What is wrong and where (a JSON path such as `records[3].fields`).")


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorBody


class ModelInfo(BaseModel):
    """The served model (`GET /v1/model`)."""

    model_name: str | None
    version: str
    alias: str | None
    source: Literal["registry", "directory"]
    spec_fingerprint: str
    spec_name: str
    spec_version: int
    n_features: int
    n_nonzero: int
    created_at: str | None
    loaded_at: str
    model_dir: str
    input_fields: list[str]
    segment_column: str | None = Field(
        None, description="For a per-segment bundle: the raw field whose value picks the segment model "
                          "(records without one are scored by the global model); null otherwise.")
    n_segments: int | None = Field(None, description="Segment models in the bundle (null: not a bundle).")
    poll_seconds: float | None = Field(description="Alias poll interval (null: not polling).")
    last_error: str | None = Field(description="The last failed load or alias lookup, if the latest attempt failed.")


class Health(BaseModel):
    """Liveness (`GET /healthz`)."""

    status: Literal["ok"]


class RegistryStatus(BaseModel):
    """Whether the model registry answered the last poll (`GET /readyz`)."""

    reachable: bool
    unreachable_since: str | None = Field(None, description="ISO-8601 UTC time of the first failed call of "
                                                            "the current outage (null: reachable).")
    error: str | None = Field(None, description="The last failed call's error (null: reachable).")


class PredictionLogStatus(BaseModel):
    """Whether the prediction log is being written (`GET /readyz`)."""

    writing: bool
    failing_since: str | None = Field(None, description="ISO-8601 UTC time of the first failed write of the "
                                                        "current failure (null: writing).")
    error: str | None = Field(None, description="The last failed write's error (null: writing).")


class Readiness(BaseModel):
    """Readiness (`GET /readyz`): whether a model is loaded, and if not why. A server that has
    a model stays ready while the registry is unreachable or the prediction log cannot be
    written (it keeps scoring with the loaded version); ``registry`` and ``prediction_log``
    say so."""

    ready: bool
    model_version: str | None = None
    reason: str | None = None
    registry: RegistryStatus | None = Field(None, description="Null when serving a model directory.")
    prediction_log: PredictionLogStatus | None = Field(None, description="Null when the log is off.")


# --- JSON Schemas the server enforces itself (serving.parsing validates against these very dicts) ---

_INT_BOUNDS: dict[str, Any] = {"minimum": INT_MIN, "maximum": INT_MAX}
#: An OpenRTB id or string the mapping reads: a string or a (64-bit) integer, or null/absent.
OPT_ID: dict[str, Any] = {"type": ["string", "integer", "null"], **_INT_BOUNDS}
OPT_INT: dict[str, Any] = {"type": ["integer", "null"], **_INT_BOUNDS}
OPT_NUM: dict[str, Any] = {"type": ["number", "null"]}
_FORMAT = {"type": "object", "properties": {"w": OPT_INT, "h": OPT_INT}}
_CREATIVE = {"type": ["object", "null"], "properties": {
    "w": OPT_INT, "h": OPT_INT, "pos": OPT_INT, "format": {"type": ["array", "null"], "items": _FORMAT}}}
_PUBLISHER = {"type": ["object", "null"], "properties": {"id": OPT_ID}}
_GEO = {"type": ["object", "null"], "properties": {"country": OPT_ID, "region": OPT_ID}}
_SEGMENT = {"type": "object", "properties": {"id": OPT_ID, "value": OPT_ID}}
_DATA = {"type": "object", "properties": {"id": OPT_ID, "segment": {"type": ["array", "null"], "items": _SEGMENT}}}
_NON_EMPTY_ID = {"type": "string", "minLength": 1}

#: The parts of an OpenRTB 2.6 BidRequest the feature mapping reads, with the types it accepts;
#: everything else (other fields, extensions) is free. ``bid_request`` is reserved: a body with
#: that key is the envelope. Site and app: at most one of them non-empty.
BID_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "BidRequest",
    "description": (
        "An OpenRTB 2.6 BidRequest exactly as the exchange sent it. Only the fields the feature mapping "
        "(`shared.openrtb.impression_fields`) reads are checked, with the types listed here (ids: a string "
        "or a 64-bit integer); every other field and extension is ignored. At most one of `site` and `app` "
        f"may be a non-empty object. Not expressible in this schema: at most {MAX_BATCH} impressions, "
        "and a body of at most the server's byte limit (413 `too_large`)."),
    "required": ["id", "imp"],
    "properties": {
        "id": {**_NON_EMPTY_ID, "description": "BidRequest.id; echoed as `request_id`."},
        "imp": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "description": "Impressions.",
                "items": {"type": "object", "required": ["id"], "properties": {
                    "id": _NON_EMPTY_ID, "tagid": OPT_ID, "bidfloor": OPT_NUM,
                    "banner": _CREATIVE, "video": _CREATIVE}}},
        "site": {"type": ["object", "null"], "properties": {"id": OPT_ID, "domain": OPT_ID, "publisher": _PUBLISHER}},
        "app": {"type": ["object", "null"], "properties": {"id": OPT_ID, "bundle": OPT_ID, "publisher": _PUBLISHER}},
        "device": {"type": ["object", "null"], "properties": {
            "devicetype": OPT_INT, "connectiontype": OPT_INT, "os": OPT_ID, "make": OPT_ID, "model": OPT_ID,
            "ifa": OPT_ID, "geo": _GEO}},
        "user": {"type": ["object", "null"], "properties": {
            "id": OPT_ID, "buyeruid": OPT_ID, "geo": _GEO, "data": {"type": ["array", "null"], "items": _DATA}}},
    },
    "not": {"anyOf": [
        {"required": ["bid_request"]},
        {"required": ["site", "app"], "properties": {"site": {"type": "object", "minProperties": 1},
                                                     "app": {"type": "object", "minProperties": 1}}},
    ]},
    "examples": [EXAMPLE_BID_REQUEST],
}

#: A candidate ad of the envelope (only these keys).
CANDIDATE_AD_SCHEMA: dict[str, Any] = {
    "type": "object", "title": "CandidateAd", "additionalProperties": False,
    "description": "A candidate ad's fields, added to each impression's fields when scoring it "
                   "(an integer id is read as its decimal string).",
    "properties": {k: dict(OPT_ID) for k in AD_KEYS},
}

# Raw field values, by how the served spec reads the field (what shared.featurize accepts):
_WS = "[ \\t\\n\\r\\v\\f]*"
_SCALAR = {"type": ["string", "number", "boolean", "null"]}
#: A number written as a string: decimal, or inf / infinity / nan (any case, optional sign).
NUMERIC_STRING_PATTERN = (
    f"^{_WS}([+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?"
    f"|[+-]?([iI][nN][fF]([iI][nN][iI][tT][yY])?|[nN][aA][nN]))?{_WS}$")
_VALUE_SCHEMAS: dict[str, dict[str, Any]] = {
    "categorical": {**_SCALAR, "description": "categorical: a string, number or boolean (null: missing)"},
    "numeric": {"anyOf": [{"type": ["number", "boolean", "null"]},
                          {"type": "string", "pattern": NUMERIC_STRING_PATTERN}],
                "description": "numeric: a number, or a number written as a string (null or blank: missing)"},
    "multivalued": {"anyOf": [{"type": "array", "items": _SCALAR}, {"type": "null"},
                              {"type": "string", "pattern": f"^{_WS}$"}],
                    "description": "multivalued: an array of strings, numbers or booleans (null: missing)"},
}
_NOT_READ = {"description": "not read by the served model: logged, any value"}


def fields_schema(spec: FeatureSpec | None, accepted: frozenset[str] | None = None) -> dict[str, Any]:
    """The JSON Schema of a record's ``fields`` for the served model: exactly the keys the
    server accepts (``accepted``, default: the spec's inputs plus every raw field), each with
    the values its spec kind accepts; raw fields the spec does not read take any value.
    Without a model (``spec`` None): the raw fields, untyped."""
    kinds = {f.name: f.kind for f in spec.fields} if spec is not None else {}
    keys = accepted if accepted is not None else frozenset(kinds) | frozenset(RAW_FIELD_NAMES)
    ordered = [n for n in RAW_FIELD_NAMES if n in keys] + sorted(k for k in keys if k not in RAW_FIELD_NAMES)
    props = {k: dict(_VALUE_SCHEMAS[kinds[k]]) if k in kinds else dict(_NOT_READ) for k in ordered}
    return {"type": "object", "additionalProperties": False, "properties": props}
