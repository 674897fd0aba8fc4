"""The scoring API over real HTTP: OpenRTB examples, /v1/score single and batch, the
operational endpoints and the OpenAPI document. The model comes from the real MLflow
registry (alias ``champion``) and every score is checked against offline scoring."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from serving.schemas import EVENT_TIME_PATTERN
from serving.server import ServeOptions
from shared.openrtb import impression_fields
from serving_support import (Served, metric_value, openrtb_examples, register, score_body, settings_with_home,
                             store)

MODEL = "serving-api"


@pytest.fixture(scope="module")
def served(tmp_path_factory, w):
    s = store(tmp_path_factory)
    version = register(s, w, MODEL, "a", "api-a")
    settings = settings_with_home(s, tmp_path_factory.mktemp("api_home"))
    with Served(settings, ServeOptions(model_name=MODEL, poll_seconds=0)) as srv:
        srv.version = version
        yield srv


@pytest.mark.parametrize("name", ["simple-banner", "mobile", "expandable-creative"])
def test_openrtb_examples_as_sent(served, w, name):
    path = next((p for p in openrtb_examples() if p.stem == name), None)
    if path is None:
        pytest.skip(f"{name}.json not present")
    raw = path.read_bytes()
    request = json.loads(raw)
    before = datetime.now(timezone.utc)
    r = served.client.post("/v1/openrtb", content=raw, headers={"content-type": "application/json"})
    after = datetime.now(timezone.utc)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"] == request["id"]
    assert body["model_version"] == served.version and body["model_alias"] == "champion"
    assert body["spec_fingerprint"] == w.offline["a"].model.fingerprint
    assert [i["imp_id"] for i in body["impressions"]] == [imp["id"] for imp in request["imp"]]
    for imp, got in zip(request["imp"], body["impressions"]):
        assert got["ads"] is None and got["best_ad"] is None
        expected = [w.offline["a"].ctr(impression_fields(request, imp, None, t)) for t in (before, after)]
        assert any(got["ctr"] == pytest.approx(e, rel=1e-6) for e in expected), (got, expected)


def test_openrtb_with_candidate_ads_and_extensions(served, w):
    request = json.loads(openrtb_examples()[0].read_bytes())
    request["ext"] = {"exchange_specific": {"deal": [1, 2]}}  # extensions are ignored
    request["imp"][0]["ext"] = {"gpid": "/1234/home"}
    request["imp"].append({**request["imp"][0], "id": "2", "tagid": "below-the-fold"})
    ads = [w.impressions[k].ad for k in range(3)]
    before = datetime.now(timezone.utc)
    r = served.client.post("/v1/openrtb", json={"bid_request": request, "ads": ads})
    after = datetime.now(timezone.utc)
    assert r.status_code == 200, r.text
    imps = r.json()["impressions"]
    assert [i["imp_id"] for i in imps] == [imp["id"] for imp in request["imp"]] and len(imps) == 2
    for imp, got in zip(request["imp"], imps):
        assert [a["index"] for a in got["ads"]] == [0, 1, 2]
        assert [a["creative_id"] for a in got["ads"]] == [ad["creative_id"] for ad in ads]
        for ad, got_ad in zip(ads, got["ads"]):
            expected = [w.offline["a"].ctr(impression_fields(request, imp, ad, t)) for t in (before, after)]
            assert any(got_ad["ctr"] == pytest.approx(e, rel=1e-5) for e in expected)
        best = max(range(3), key=lambda j: got["ads"][j]["ctr"])
        assert got["best_ad"] == best and got["ctr"] == got["ads"][best]["ctr"]


def test_score_single_matches_offline(served, w):
    fields = w.fields[7]
    r = served.client.post("/v1/score", json=score_body([fields], request_id="req-1", ids=["imp-7"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"] == "req-1" and body["model_version"] == served.version
    assert body["spec_fingerprint"] == w.offline["a"].model.fingerprint
    [pred] = body["predictions"]
    assert pred["id"] == "imp-7"
    assert pred["ctr"] == pytest.approx(w.offline["a"].ctr(fields), rel=1e-6)


def test_score_batch_in_order_and_generated_request_id(served, w):
    fields = w.fields[100:200]
    r = served.client.post("/v1/score", json={"records": [{"fields": f} for f in fields]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["request_id"]) == 32  # generated
    got = np.array([p["ctr"] for p in body["predictions"]])
    assert [p["id"] for p in body["predictions"]] == [None] * 100
    np.testing.assert_allclose(got, w.offline["a"].ctrs(fields), rtol=1e-5)
    assert got.std() > 0  # not one constant score
    alone = [served.client.post("/v1/score", json={"records": [{"fields": f}]}).json()["predictions"][0]["ctr"]
             for f in fields[:10]]
    assert alone == got[:10].tolist()  # a record's CTR does not depend on its batch-mates


def test_score_missing_fields_and_platform_only_fields(served, w):
    """Absent fields are missing values; user_id is a raw field the spec does not read: accepted,
    and it does not change the score."""
    f = dict(w.fields[3])
    r = served.client.post("/v1/score", json=score_body([{}, f, {**f, "user_id": "someone-else"}]))
    assert r.status_code == 200, r.text
    ctrs = [p["ctr"] for p in r.json()["predictions"]]
    assert ctrs[0] == pytest.approx(w.offline["a"].ctr({}), rel=1e-6)
    assert ctrs[1] == pytest.approx(ctrs[2], rel=1e-12)


def test_operational_endpoints(served, w):
    c = served.client
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json() == {"ready": True, "model_version": served.version, "reason": None,
                                       "registry": {"reachable": True, "unreachable_since": None, "error": None},
                                       "prediction_log": {"writing": True, "failing_since": None, "error": None}}
    info = c.get("/v1/model").json()
    assert info["version"] == served.version and info["alias"] == "champion" and info["model_name"] == MODEL
    assert info["source"] == "registry" and info["spec_fingerprint"] == w.offline["a"].model.fingerprint
    assert info["spec_name"] == "generated" and info["n_features"] == 2 ** 22
    assert info["model_dir"].startswith("runs:/") and info["model_dir"].endswith("/model_dir")
    datetime.fromisoformat(info["loaded_at"])
    c.post("/v1/score", json=score_body(w.fields[:5]))
    text = served.metrics()
    assert metric_value(text, "ctr_model_version") == float(served.version)
    assert metric_value(text, "ctr_requests_total", endpoint="score", status="200") >= 1
    assert metric_value(text, "ctr_scored_impressions_total", endpoint="score") >= 5
    assert metric_value(text, "ctr_request_latency_seconds_count", endpoint="score") >= 1
    for name in ("ctr_model_swaps_total", "ctr_prediction_log_dropped_total", "ctr_model_info"):
        assert name in text


def test_openapi_document_explains_the_api(served):
    doc = served.client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    score = doc["paths"]["/v1/score"]["post"]
    assert score["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ScoreRequest"}
    assert set(score["responses"]) >= {"200", "400", "401", "413", "422", "503"}
    assert "a batch of up to 1000" in score["description"]
    assert score["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ScoreResponse")
    req = schemas["ScoreRequest"]
    assert req["properties"]["records"]["maxItems"] == 1000 and req["examples"]
    assert "hour_of_day" in schemas["ScoreRecord"]["properties"]["fields"]["description"]
    # the optional event time: an RFC 3339 date-time or epoch seconds, on the request, each record
    # and the OpenRTB envelope (OpenRTB 2.6 has none of its own)
    for model in ("ScoreRequest", "ScoreRecord", "OpenRtbEnvelope"):
        et = schemas[model]["properties"]["event_time"]
        assert et["anyOf"][:2] == [{"pattern": EVENT_TIME_PATTERN, "type": "string"},
                                   {"type": "number", "minimum": 946684800.0, "exclusiveMaximum": 4102444800.0}]
        assert "UTC offset" in et["description"] and "event_time" not in schemas[model].get("required", [])
    rtb = doc["paths"]["/v1/openrtb"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {r["$ref"].rsplit("/", 1)[1] for r in rtb["oneOf"]} == {"BidRequest", "OpenRtbEnvelope"}
    assert "bearer" in doc["components"]["securitySchemes"]
    assert "CtrPyfuncModel" not in json.dumps(doc)
    # every $ref resolves
    refs = set()

    def walk(o):
        if isinstance(o, dict):
            if "$ref" in o:
                refs.add(o["$ref"].rsplit("/", 1)[1])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(doc)
    assert refs <= set(schemas)
