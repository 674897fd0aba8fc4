"""The bidder's scoring endpoint: a FastAPI app around the served model.

Endpoints (see the OpenAPI document at ``/docs`` / ``/openapi.json``):

* ``POST /v1/score``   raw feature records (1..MAX_BATCH) -> CTR per record
* ``POST /v1/openrtb`` an OpenRTB 2.6 BidRequest (optionally with candidate ads) -> CTR per
  impression (and per impression x ad)
* ``GET /healthz``, ``GET /readyz``, ``GET /v1/model``, ``GET /metrics``

Hot path: the scoring handlers take the raw ``Request``, read the body with a size
limit, parse it with orjson and validate by hand (:mod:`serving.parsing`), featurize
and score with the scorer grabbed *once* from the :class:`~serving.lifecycle.ModelManager`
(so a request never mixes versions), queue the prediction-log entry without waiting
and write the response with orjson. The request schemas are still documented in
OpenAPI (``openapi_extra`` referencing the pydantic models of :mod:`serving.schemas`).
Everything the handlers need arrives through one async dependency,
:func:`scoring_context` (auth, readiness, the scorer, the log and the metrics).

``POST /v1/score`` and ``POST /v1/openrtb`` are dispatched by :meth:`ScoringApp.__call__`
straight to the same handler code, past Starlette's middleware stack, router and FastAPI's
dependency solver (about a third of a single request's server CPU in a py-spy profile: the
README's Benchmarks section); the routes stay registered for the OpenAPI document and for every other
method or path, and the full stack is used whenever the app has user middleware, a root
path or FastAPI's OpenTelemetry instrumentation configured.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
import weakref
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, NamedTuple

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from serving import schemas
from serving.lifecycle import ModelManager, RegistrySource
from serving.metrics import ServingMetrics
from serving.parsing import (ApiError, check_openrtb, openrtb_fields, parse_openrtb_body, parse_score_body,
                             read_body)
from serving.predlog import PredictionLog
from serving.scorer import RecordError, Scorer

log = logging.getLogger("ctr.serving")

API_DESCRIPTION = f"""
Predicted click-through rates for a real-time bidder.

**Budget.** The model's share of a ~100 ms bid is a few milliseconds: one featurization and
one sparse dot product per impression. Keep connections alive (HTTP/1.1 keep-alive) and batch
the candidates of one auction into one request.

**Two ways in.**
* `POST /v1/score` takes raw feature records (the fields `shared.openrtb.impression_fields`
  produces), one or up to {schemas.MAX_BATCH} per request.
* `POST /v1/openrtb` takes the exchange's OpenRTB 2.6 BidRequest unchanged (unknown fields and
  extensions are ignored), optionally wrapped with candidate ads; the mapping to raw fields is the
  one the warehouse uses for training, with the event time set to the receipt time (UTC), or to the
  wrapper's `event_time` when given (OpenRTB 2.6 has no event time of its own).

**Event time.** Every prediction is logged with its receipt time (`received_at`) and its event
time (`event_time`): the optional `event_time` of the request or record (ISO-8601 with a UTC offset,
or epoch seconds), else the receipt time. The monitor counts predictions on the event time's day
and hour, so a replay or backfill of logged impressions should send their own times.

**Versions.** Every response names the model version and feature-spec fingerprint that scored
*all* of its predictions. The server follows a registry alias and swaps versions atomically.

**Errors.** Bad input gets a 4xx with `{{"error": {{"kind", "message"}}}}`; the message names the
JSON path at fault. Kinds: `malformed_json` (400), `unauthorized` (401), `too_large` (413: body over
{schemas.MAX_BODY_BYTES} bytes or more than {schemas.MAX_BATCH} predictions), `wrong_type`,
`missing_field`, `unknown_field`, `bad_value`, `invalid` (422), `not_ready` (503: no model loaded).

**Auth.** When the server runs with `CTR_API_TOKEN` set, the scoring endpoints need
`Authorization: Bearer <token>`.
"""

ENDPOINT_OF_PATH = {"/v1/score": "score", "/v1/openrtb": "openrtb"}

#: The bearer scheme, declared in the OpenAPI document by hand: ``scoring_context`` reads the
#: header itself, because FastAPI's ``HTTPBearer`` sub-dependency measurably costs (~10-20 us
#: of a ~200 us request on this machine) for one string comparison.
SECURITY_SCHEME = {"type": "http", "scheme": "bearer",
                   "description": "Required on the scoring endpoints only when the server has CTR_API_TOKEN set."}


@dataclass
class ServingState:
    """What the app serves with: the model manager, metrics, prediction log, token and request limits."""

    manager: ModelManager
    metrics: ServingMetrics
    predlog: PredictionLog | None
    token: str | None
    max_batch: int = schemas.MAX_BATCH
    max_body_bytes: int = schemas.MAX_BODY_BYTES


class ScoringContext(NamedTuple):
    """What a scoring handler gets: the scorer grabbed once for the request, and the state."""

    scorer: Scorer
    state: ServingState


def get_state(request: Request) -> ServingState:
    """The app's :class:`ServingState` (a FastAPI dependency)."""
    return request.app.state.serving


def _bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def scoring_context(request: Request) -> ScoringContext:
    """Auth (when a token is configured) and the scorer to use for this whole request."""
    state: ServingState = request.app.state.serving
    if state.token is not None:
        given = _bearer_token(request)
        if not hmac.compare_digest(given.encode(), state.token.encode()):
            raise ApiError(401, "unauthorized", "wrong bearer token" if given else
                           "missing bearer token: send 'Authorization: Bearer <token>'")
    scorer = state.manager.current  # grabbed once: the whole request uses this version
    if scorer is None:
        raise ApiError(503, "not_ready", "no model is loaded yet")
    return ScoringContext(scorer, state)


def _error_response(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"error": {"kind": exc.kind, "message": exc.message}}, status_code=exc.status,
                        headers=headers)


def _json(payload: dict[str, Any]) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


def _stamp(scorer: Scorer, request_id: str) -> dict[str, Any]:
    return {"request_id": request_id, "model_version": scorer.version, "model_alias": scorer.alias,
            "spec_fingerprint": scorer.fingerprint}


def _score(scorer: Scorer, fields: list[dict[str, Any]]) -> list[float]:
    try:
        return scorer.score_records(fields)
    except RecordError as exc:
        raise ApiError(422, exc.kind, str(exc)) from None


def _request_body_doc(*names: str) -> dict[str, Any]:
    refs = [{"$ref": f"#/components/schemas/{n}"} for n in names]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "security": [{}, {"bearer": []}]}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse, "description": text} for code, text in (
        (400, "Malformed JSON."), (401, "Missing or wrong bearer token."),
        (413, "Body or batch too large."), (422, "Wrong type, missing or unknown field, bad value."),
        (503, "No model loaded."))
}


def _score_payload(st: ServingState, scorer: Scorer, body: bytes, received: float) -> tuple[dict, int]:
    parsed = parse_score_body(body, st.max_batch)
    ctrs = _score(scorer, parsed.fields)
    request_id = parsed.request_id or uuid.uuid4().hex
    if st.predlog is not None:
        event_time = received if parsed.event_time is None else parsed.event_time
        event_times = None if parsed.event_times is None else [
            event_time if t is None else t for t in parsed.event_times]
        st.predlog.submit_request(received, request_id, "score", scorer.version, ctrs, body,
                                  event_time=event_time, event_times=event_times)
    payload = _stamp(scorer, request_id)
    payload["predictions"] = [{"id": i, "ctr": c} for i, c in zip(parsed.ids, ctrs)]
    return payload, len(ctrs)


def _openrtb_payload(st: ServingState, scorer: Scorer, body: bytes, received: float) -> tuple[dict, int]:
    bid_request, imps, ads, given_time = parse_openrtb_body(body, st.max_batch)
    event_time = received if given_time is None else given_time
    when = datetime.fromtimestamp(event_time, timezone.utc)
    try:
        check_openrtb(bid_request, ads)  # the documented schema (integral floats -> ints where it says integer)
    except ApiError:
        openrtb_fields(bid_request, imps, ads, when)  # the mapping's own message for the mistakes it names
        raise
    fields = openrtb_fields(bid_request, imps, ads, when)
    ctrs = _score(scorer, fields)
    request_id = bid_request["id"]
    imp_ids = [imp["id"] for imp in imps]
    payload = _stamp(scorer, request_id)
    if ads is None:
        payload["impressions"] = [{"imp_id": i, "ctr": c, "best_ad": None, "ads": None}
                                  for i, c in zip(imp_ids, ctrs)]
        log_ids, ad_index = imp_ids, None
    else:
        k = len(ads)
        out = []
        for n, imp_id in enumerate(imp_ids):
            row = ctrs[n * k:(n + 1) * k]
            best = max(range(k), key=row.__getitem__)
            # the creative id as the mapping read it (a string: an integer id in decimal)
            out.append({"imp_id": imp_id, "ctr": row[best], "best_ad": best,
                        "ads": [{"index": j, "creative_id": fields[n * k + j]["creative_id"], "ctr": c}
                                for j, c in enumerate(row)]})
        payload["impressions"] = out
        log_ids = [i for i in imp_ids for _ in range(k)]
        ad_index = list(range(k)) * len(imp_ids)
    if st.predlog is not None:
        st.predlog.submit(received, request_id, "openrtb", scorer.version, log_ids, ctrs, fields, ad_index,
                          event_time=event_time)
    return payload, len(ctrs)


class ScoringApp(FastAPI):
    """FastAPI with this API's OpenAPI document: the scoring endpoints parse their bodies
    themselves, so their schemas are added as components, with the bearer scheme.

    The keys a record's ``fields`` may carry depend on the served model's feature spec, so
    the document is built for the model being served and rebuilt when another one is
    swapped in (the cache is keyed by the scorer object: a swap replaces it)."""

    #: A weak reference to the scorer the cached document describes (a strong one would keep a
    #: swapped-out version's weights in memory until the document is asked for again).
    _openapi_for: Callable[[], object] | None = None
    #: ``path -> ASGI handler`` of the POST endpoints served past the middleware stack (see
    #: :meth:`__call__`); filled by :func:`create_app`.
    fast_routes: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST to a scoring path goes straight to its handler (the same code the route runs,
        errors and metrics included); everything else through FastAPI as usual."""
        if scope["type"] == "http" and scope["method"] == "POST" and not self.user_middleware \
                and not self.root_path and not scope.get("root_path"):
            handler = self.fast_routes.get(scope["path"])
            if handler is not None and not self._telemetry_on():
                scope["app"] = self
                await handler(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    _ctr_telemetry_checked: tuple[float, bool] = (-1.0, False)  # (monotonic time of the check, enabled)

    def _telemetry_on(self) -> bool:
        """:func:`_telemetry_enabled`, asked at most once a second (the answer changes only
        when a tracer or meter provider is installed; asking costs ~5 us)."""
        now = time.monotonic()
        checked, on = self._ctr_telemetry_checked
        if now - checked >= 1.0:
            on = _telemetry_enabled(self)
            self._ctr_telemetry_checked = (now, on)
        return on

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document for the model served now, with the request schemas and the bearer scheme."""
        state: ServingState | None = getattr(self.state, "serving", None)
        scorer = state.manager.current if state is not None else None
        built_for = self._openapi_for() if self._openapi_for is not None else None
        if self.openapi_schema is None or built_for is not scorer:
            self.openapi_schema = self._build_openapi(scorer)
            self._openapi_for = weakref.ref(scorer) if scorer is not None else None
        return self.openapi_schema

    def _build_openapi(self, scorer: Scorer | None) -> dict[str, Any]:
        doc = get_openapi(title=self.title, version=self.version, description=self.description,
                          routes=self.routes)
        doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = SECURITY_SCHEME
        components = doc["components"].setdefault("schemas", {})
        for model in (schemas.ScoreRequest, schemas.OpenRtbEnvelope):
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(js.pop("$defs", {}))
            components[model.__name__] = js
        # the parts the server validates by hand, from the very dicts it validates against
        components["BidRequest"] = schemas.BID_REQUEST_SCHEMA
        components["CandidateAd"] = schemas.CANDIDATE_AD_SCHEMA
        components["OpenRtbEnvelope"]["properties"]["bid_request"] = {
            "$ref": "#/components/schemas/BidRequest", "description": "The OpenRTB 2.6 BidRequest, unchanged."}
        fields = components["ScoreRecord"]["properties"]["fields"]
        fields.pop("additionalProperties", None)
        fields.update(schemas.fields_schema(scorer.spec if scorer else None,
                                            scorer.accepted_fields if scorer else None))
        if scorer is not None:
            fields["description"] += (f"\n\nServed model: version {scorer.version}, spec {scorer.spec.name!r} "
                                      f"(fingerprint {scorer.fingerprint[:12]}).")
        return doc


def create_app(state: ServingState) -> FastAPI:
    """The app for ``state``. Its lifespan loads the model if none is loaded yet, starts the
    alias poller and the prediction-log writer, and stops both (flushing the log) on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state.manager.current is None:
            state.manager.refresh()
        state.manager.start()
        if state.predlog is not None:
            state.predlog.start()
        try:
            yield
        finally:
            state.manager.stop()
            if state.predlog is not None:
                state.predlog.close()

    app = ScoringApp(title="ctr-platform bidder scoring API", version="1", description=API_DESCRIPTION,
                     lifespan=lifespan)
    app.state.serving = state
    metrics = state.metrics

    def fast_route(endpoint: str, compute):
        """The route's behaviour as a plain ASGI handler: :func:`scoring_context` (a refusal
        counted as the exception handler below counts it), then :func:`run_scoring`."""
        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            request = Request(scope, receive, send)
            try:
                ctx = await scoring_context(request)
            except ApiError as exc:
                metrics.observe_error(endpoint, exc.status, exc.kind, None)
                response = _error_response(exc)
            else:
                response = await run_scoring(endpoint, request, ctx, compute)
            await response(scope, receive, send)
        return handle

    app.fast_routes = {"/v1/score": fast_route("score", _score_payload),
                       "/v1/openrtb": fast_route("openrtb", _openrtb_payload)}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):  # raised by scoring_context
        endpoint = ENDPOINT_OF_PATH.get(request.url.path)
        if endpoint:
            metrics.observe_error(endpoint, exc.status, exc.kind, None)
        return _error_response(exc)

    async def run_scoring(endpoint: str, request: Request, ctx: ScoringContext, compute):
        """Read the body, ``compute(state, scorer, body, received) -> (payload, n_scored)``,
        answer with orjson; every outcome is timed and counted."""
        t0 = time.perf_counter()
        received = time.time()
        try:
            body = await read_body(request, ctx.state.max_body_bytes)
            payload, n = compute(ctx.state, ctx.scorer, body, received)
            response = _json(payload)
        except ApiError as exc:
            metrics.observe_error(endpoint, exc.status, exc.kind, time.perf_counter() - t0)
            return _error_response(exc)
        except Exception:  # noqa: BLE001 - a bug must not take the server down
            log.exception("unexpected error in /v1/%s", endpoint)
            metrics.observe_error(endpoint, 500, "internal", time.perf_counter() - t0)
            return _error_response(ApiError(500, "internal", "internal error; the server log has the details"))
        metrics.observe_ok(endpoint, time.perf_counter() - t0, n)
        return response

    @app.post("/v1/score", tags=["scoring"], summary="Score raw feature records",
              description=f"Predicted CTR of each raw feature record (one impression, or a batch of up to "
                          f"{state.max_batch}), with the model version and spec fingerprint that scored them.",
              response_model=schemas.ScoreResponse, responses=ERROR_RESPONSES,
              openapi_extra=_request_body_doc("ScoreRequest"))
    async def score(request: Request, ctx: ScoringContext = Depends(scoring_context)):
        return await run_scoring("score", request, ctx, _score_payload)

    @app.post("/v1/openrtb", tags=["scoring"], summary="Score an OpenRTB 2.6 bid request",
              response_model=schemas.OpenRtbResponse, responses=ERROR_RESPONSES,
              openapi_extra=_request_body_doc("BidRequest", "OpenRtbEnvelope"))
    async def openrtb(request: Request, ctx: ScoringContext = Depends(scoring_context)):
        """Send the BidRequest exactly as the exchange sent it, or wrap it as
        `{"bid_request": ..., "ads": [...]}` to score every impression with every candidate ad.
        Without ads, each impression is scored with the ad fields missing."""
        return await run_scoring("openrtb", request, ctx, _openrtb_payload)

    @app.get("/healthz", tags=["operations"], response_model=schemas.Health, summary="Liveness")
    async def healthz():
        """The process is up and answering."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=schemas.Readiness, summary="Readiness",
             responses={503: {"model": schemas.Readiness, "description": "No model loaded."}})
    async def readyz(st: ServingState = Depends(get_state)):
        """200 once a model is loaded (the scoring endpoints can answer), else 503; with the
        registry's and the prediction log's state (degraded, still ready)."""
        scorer = st.manager.current
        status = _dependency_status(st)
        if scorer is None:
            return JSONResponse({"ready": False, "model_version": None,
                                 "reason": st.manager.last_error or "no model loaded yet", **status},
                                status_code=503)
        return {"ready": True, "model_version": scorer.version, **status}

    @app.get("/v1/model", tags=["operations"], response_model=schemas.ModelInfo, summary="The served model",
             responses={503: {"model": schemas.ErrorResponse, "description": "No model loaded."}})
    async def model_info(st: ServingState = Depends(get_state)):
        """Version, alias, spec fingerprint and load time of the model being served."""
        scorer = st.manager.current
        if scorer is None:
            return _error_response(ApiError(503, "not_ready", st.manager.last_error or "no model loaded yet"))
        return {**scorer.describe(), "poll_seconds": st.manager.poll_seconds if st.manager.polling else None,
                "last_error": st.manager.last_error}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}})
    async def prometheus_metrics(st: ServingState = Depends(get_state)):
        """Requests, latency histogram, errors by kind, served model version, swaps, load
        failures and prediction-log counters, in the Prometheus text format."""
        if st.predlog is not None:
            st.metrics.log_queue.set(st.predlog.pending)
        if isinstance(st.manager.source, RegistrySource):
            st.metrics.set_registry(st.manager.registry_unreachable_since)
        body, content_type = st.metrics.exposition()
        return Response(body, media_type=content_type)

    return app


def _telemetry_enabled(app: FastAPI) -> bool:
    """Whether FastAPI's own OpenTelemetry instrumentation would trace this request (a
    provider configured): then the request takes the full stack, so it is traced."""
    telemetry = getattr(app, "_native_telemetry", None)
    return telemetry is not None and bool(telemetry.enabled())


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _dependency_status(st: ServingState) -> dict[str, Any]:
    """The registry's and the prediction log's state for ``/readyz`` (None: not used)."""
    manager, plog = st.manager, st.predlog
    registry = None if not isinstance(manager.source, RegistrySource) else {
        "reachable": manager.registry_unreachable_since is None,
        "unreachable_since": _iso(manager.registry_unreachable_since), "error": manager.registry_error}
    predlog = None if plog is None else {
        "writing": plog.failing_since is None, "failing_since": _iso(plog.failing_since), "error": plog.last_error}
    return {"registry": registry, "prediction_log": predlog}


def wire_metrics(state: ServingState) -> None:
    """Point the manager's swap / failure callbacks at the metrics (and record the current model)."""
    metrics, manager = state.metrics, state.manager

    def on_swap(old: Scorer | None, new: Scorer) -> None:
        metrics.set_model(new.version, new.alias, new.fingerprint, new.loaded_at.timestamp())
        if old is not None:
            metrics.swaps.inc()

    def on_failure(reason: str, message: str) -> None:
        metrics.load_failures.labels(reason).inc()

    manager.on_swap, manager.on_failure = on_swap, on_failure
    metrics.set_registry(None)  # reachable until a poll fails (always, for a model directory)
    if manager.current is not None:
        on_swap(None, manager.current)
