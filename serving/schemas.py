"""The API's request and response schemas (pydantic), for the OpenAPI document.

The scoring endpoints parse their bodies with orjson and :mod:`serving.parsing`, which
enforces exactly these schemas (measured: see ``benchmarks/bench_serving.py --parse-only``);
responses are serialised with orjson in the shapes below. The other endpoints use the
models directly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.openrtb import AD_KEYS, RAW_FIELDS

MAX_BATCH = 1000
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_ID_CHARS = 256
# Event times are accepted from 2000-01-01 to 2100-01-01 (UTC), as epoch seconds [MIN, MAX):
# anything else is a unit mistake (milliseconds sent as seconds) or a broken clock.
EVENT_TIME_MIN = 946_684_800.0
EVENT_TIME_MAX = 4_102_444_800.0

Scalar = Union[str, int, float, bool, None]
FieldValue = Union[Scalar, list[Scalar]]

#: An event time: an ISO-8601 / RFC 3339 date-time *with* a UTC offset (``2026-11-07T14:03:21.5Z``,
#: ``...+01:00``) or a number of seconds since the Unix epoch (``1794060201.5``).
EventTime = Union[AwareDatetime, Annotated[float, Field(ge=EVENT_TIME_MIN, lt=EVENT_TIME_MAX)]]

EVENT_TIME_DOC = (
    "When the impression happened: an ISO-8601 date-time with a UTC offset (e.g. `2026-11-07T14:03:21.5Z`) "
    "or seconds since the Unix epoch, between 2000-01-01 and 2100-01-01 UTC. The prediction log files the "
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
    fields: dict[str, FieldValue] = Field(
        description=(
            "Raw feature fields, exactly as `shared.openrtb.impression_fields` produces them. "
            "An absent field or `null` is *missing* (hashed like a missing value in training). "
            "A name that is neither read by the served model's spec nor one of these raw fields "
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

    advertiser_id: str | None = None
    campaign_id: str | None = None
    creative_id: str | None = None
    creative_type: str | None = Field(None, description="banner, video, native or rich_media")


class OpenRtbEnvelope(BaseModel):
    """A bid request with candidate ads (every impression is scored with every ad), and
    optionally the event time of the impressions (for a replay of logged bid requests)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"bid_request": EXAMPLE_BID_REQUEST, "ads": EXAMPLE_ADS}]})

    bid_request: dict[str, Any] = Field(description="The OpenRTB 2.6 BidRequest, unchanged.")
    ads: list[CandidateAd] = Field(default_factory=list, max_length=MAX_BATCH,
                                   description=f"Candidate ads (keys: {', '.join(AD_KEYS)}); "
                                               f"impressions x ads may not exceed {MAX_BATCH}.")
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
    creative_id: str | None
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


class Readiness(BaseModel):
    """Readiness (`GET /readyz`): whether a model is loaded, and if not why."""

    ready: bool
    model_version: str | None = None
    reason: str | None = None
