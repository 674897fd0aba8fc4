"""Bad input never gets a 500 or crashes the server: each kind of problem is a 4xx whose
message names it. Auth with a bearer token. A real server over HTTP, serving a model
directory directly (``--model-dir``)."""

from __future__ import annotations

import json

import httpx
import pytest

from serving.server import ServeOptions
from serving_support import Served, metric_value, openrtb_examples, score_body

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def served(tmp_path_factory, w):
    from shared.config import load_settings

    settings = load_settings({"home": str(tmp_path_factory.mktemp("bad_home"))}, env={})
    with Served(settings, ServeOptions(model_dir=w.dirs["a"], max_body_bytes=256 * 1024)) as srv:
        yield srv


def _bid_request() -> dict:
    return json.loads(openrtb_examples()[-1].read_bytes())  # simple-banner


def _rtb(**changes) -> bytes:
    req = _bid_request()
    for path, value in changes.items():
        obj, *keys = path.split("__")
        target = req
        for k in [obj, *keys][:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        last = [obj, *keys][-1]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return json.dumps(req).encode()


def _score(fields=None, **top) -> bytes:
    body = score_body([fields if fields is not None else {"site_id": "1"}])
    body.update(top)
    return json.dumps(body).encode()


CASES = [
    # (endpoint, body, status, kind, words the message must contain)
    ("score", b'{"records": [', 400, "malformed_json", ["not valid JSON"]),
    ("score", b"", 400, "malformed_json", ["empty request body"]),
    ("score", b'{"records": [{"fields": {"bidfloor": NaN}}]}', 400, "malformed_json", ["not valid JSON"]),
    ("score", b"\xff\xfe{}", 400, "malformed_json", ["UTF-8"]),
    ("score", b"[" * 5000 + b"]" * 5000, 400, "malformed_json", ["depth"]),
    ("score", b"[1, 2]", 422, "wrong_type", ["JSON object", "array"]),
    ("score", b"{}", 422, "missing_field", ["'records'"]),
    ("score", b'{"records": {"fields": {}}}', 422, "wrong_type", ["records", "array"]),
    ("score", b'{"records": []}', 422, "bad_value", ["records", "empty"]),
    ("score", b'{"records": ["site_id"]}', 422, "wrong_type", ["records[0]", "object"]),
    ("score", b'{"records": [{"id": "x"}]}', 422, "missing_field", ["records[0]", "'fields'"]),
    ("score", b'{"records": [{"fields": [["site_id", "1"]]}]}', 422, "wrong_type", ["records[0].fields", "object"]),
    ("score", b'{"records": [{"id": 7, "fields": {}}]}', 422, "wrong_type", ["records[0].id", "string"]),
    ("score", b'{"request_id": ["r"], "records": [{"fields": {}}]}', 422, "wrong_type", ["request_id"]),
    ("score", b'{"record": [{"fields": {}}]}', 422, "unknown_field", ["'record'"]),
    ("score", b'{"records": [{"fields": {}, "feilds": {}}]}', 422, "unknown_field", ["records[0]", "'feilds'"]),
    ("score", _score({"site_id": "1", "sitee": "2"}), 422, "unknown_field", ["records[0].fields", "'sitee'"]),
    ("score", _score({"site_id": {"id": "1"}}), 422, "bad_value", ["records[0].fields", "'site_id'"]),
    ("score", _score({"bidfloor": "cheap"}), 422, "bad_value", ["'bidfloor'", "not a number"]),
    ("score", _score({"user_segments": "a,b"}), 422, "bad_value", ["'user_segments'", "list"]),
    ("score", _score({"country": [["USA"]]}), 422, "bad_value", ["'country'"]),
    ("score", _score(event_time="yesterday"), 422, "bad_value", ["event_time", "ISO-8601"]),
    ("score", _score(event_time="2026-11-07T10:00:00"), 422, "bad_value", ["event_time", "UTC offset"]),
    ("score", _score(event_time=1794060201000), 422, "bad_value", ["event_time", "milliseconds"]),
    ("score", b'{"records": [{"fields": {}, "event_time": true}]}', 422, "wrong_type",
     ["records[0].event_time", "ISO-8601"]),
    ("openrtb", b'{"id": "r1", "imp": [', 400, "malformed_json", ["not valid JSON"]),
    ("openrtb", b'"a bid request"', 422, "wrong_type", ["JSON object", "string"]),
    ("openrtb", _rtb(imp=KeyError), 422, "missing_field", ["imp"]),
    ("openrtb", _rtb(imp=[]), 422, "missing_field", ["imp"]),
    ("openrtb", _rtb(imp={"id": "1"}), 422, "missing_field", ["imp"]),
    ("openrtb", _rtb(imp=["1"]), 422, "wrong_type", ["imp[0]"]),
    ("openrtb", _rtb(imp__0__id=KeyError), 422, "missing_field", ["imp[0].id"]),
    ("openrtb", _rtb(imp__0__id=1), 422, "wrong_type", ["imp[0].id", "string"]),
    ("openrtb", _rtb(id=KeyError), 422, "missing_field", ["BidRequest.id"]),
    ("openrtb", _rtb(imp__0__bidfloor="0.03"), 422, "wrong_type", ["imp.bidfloor"]),
    ("openrtb", _rtb(imp__0__banner__w="300"), 422, "wrong_type", ["imp.banner.w"]),
    ("openrtb", _rtb(device=["ios"]), 422, "wrong_type", ["request.device", "object"]),
    ("openrtb", _rtb(app={"id": "a1"}), 422, "invalid", ["both site and app"]),
    ("openrtb", _rtb(user__data="segments"), 422, "wrong_type", ["user.data"]),
    ("openrtb", json.dumps({"bid_request": "x"}).encode(), 422, "wrong_type", ["bid_request", "object"]),
    ("openrtb", json.dumps({"bid_request": {"imp": [{"id": "1"}]}}).encode(), 422, "missing_field",
     ["bid_request.id"]),
    ("openrtb", json.dumps({"bid_request": {"id": "r", "imp": [{"id": "1"}]}, "ads": {"creative_id": "c"}}).encode(),
     422, "wrong_type", ["ads", "array"]),
    ("openrtb", json.dumps({"bid_request": {"id": "r", "imp": [{"id": "1"}]}, "ads": [{"creative": "c"}]}).encode(),
     422, "unknown_field", ["ads[0]", "'creative'"]),
    ("openrtb", json.dumps({"bid_request": {"id": "r", "imp": [{"id": "1"}]}, "ads": [{"creative_id": {}}]}).encode(),
     422, "wrong_type", ["imp[0]", "ad.creative_id"]),
    ("openrtb", json.dumps({"bid_request": {"id": "r", "imp": [{"id": "1"}]}, "event_time": "11/7/2026"}).encode(),
     422, "bad_value", ["event_time", "ISO-8601"]),
    ("openrtb", json.dumps({"bid_request": {"id": "r", "imp": [{"id": "1"}]}, "adz": []}).encode(),
     422, "unknown_field", ["'adz'"]),
    ("openrtb", json.dumps({"bid_request": {"id": "r", "imp": [{"id": str(i)} for i in range(40)]},
                            "ads": [{"creative_id": str(j)} for j in range(30)]}).encode(),
     413, "too_large", ["1200", "1000"]),
]


@pytest.mark.parametrize("endpoint, body, status, kind, words", CASES,
                         ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_a_named_4xx(served, endpoint, body, status, kind, words):
    r = served.client.post(f"/v1/{endpoint}", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["kind"] == kind, err
    for word in words:
        assert word in err["message"], (word, err["message"])


def test_oversized_batch_and_body(served, w):
    c = served.client
    r = c.post("/v1/score", json=score_body([{}] * 1001))
    assert r.status_code == 413 and r.json()["error"]["kind"] == "too_large"
    assert "1001 records exceeds the maximum of 1000" in r.json()["error"]["message"]
    big = json.dumps(score_body([w.fields[0]] * 900)).encode()  # under 1000 records, over 256 KiB
    assert len(big) > 256 * 1024
    r = c.post("/v1/score", content=big)
    assert r.status_code == 413 and "exceeds the limit of 262144 bytes" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: chunked transfer, cut off while streaming
        for k in range(0, len(big), 16384):
            yield big[k:k + 16384]
    r = c.post("/v1/score", content=chunks())
    assert r.status_code == 413 and r.json()["error"]["kind"] == "too_large"
    r = c.post("/v1/score", content=iter([_score()]))  # a small chunked body is fine
    assert r.status_code == 200, r.text


def test_server_survives_and_counts_every_rejection(served):
    for endpoint, body, *_ in CASES:
        served.client.post(f"/v1/{endpoint}", content=body)
    text = served.metrics()
    assert metric_value(text, "ctr_errors_total", endpoint="score", kind="malformed_json") >= 5
    assert metric_value(text, "ctr_errors_total", endpoint="openrtb", kind="wrong_type") >= 1
    assert 'status="500"' not in text and 'kind="internal"' not in text
    assert served.client.get("/readyz").status_code == 200
    assert served.client.post("/v1/score", content=_score()).status_code == 200


def test_method_and_path_errors_are_4xx(served):
    assert served.client.get("/v1/score").status_code == 405
    assert served.client.get("/v1/nothing").status_code == 404


def test_bearer_token(tmp_path, w):
    from shared.config import load_settings

    settings = load_settings({"home": str(tmp_path)}, env={})
    options = ServeOptions(model_dir=w.dirs["a"], token=TOKEN, prediction_log=False)
    with Served(settings, options) as srv:
        c = srv.client
        body = _score()
        for headers, why in (({}, "missing bearer token"), ({"authorization": "Bearer nope"}, "wrong bearer token"),
                             ({"authorization": f"Basic {TOKEN}"}, "missing bearer token")):
            for endpoint, payload in (("score", body), ("openrtb", _rtb())):
                r = c.post(f"/v1/{endpoint}", content=payload, headers=headers)
                assert r.status_code == 401, r.text
                assert r.headers["www-authenticate"] == "Bearer"
                assert r.json()["error"] == {"kind": "unauthorized", "message": r.json()["error"]["message"]}
                assert why in r.json()["error"]["message"]
        ok = {"authorization": f"Bearer {TOKEN}"}
        assert c.post("/v1/score", content=body, headers=ok).status_code == 200
        assert c.post("/v1/openrtb", content=_rtb(), headers=ok).status_code == 200
        # operational endpoints stay open (probes and scrapers carry no token)
        for path in ("/healthz", "/readyz", "/metrics", "/v1/model", "/openapi.json"):
            assert c.get(path).status_code == 200, path
        assert metric_value(srv.metrics(), "ctr_errors_total", endpoint="score", kind="unauthorized") == 3


def test_token_comes_from_the_environment():
    assert ServeOptions.token_from_env({"CTR_API_TOKEN": TOKEN}) == TOKEN
    assert ServeOptions.token_from_env({"CTR_API_TOKEN": ""}) is None
    assert ServeOptions.token_from_env({}) is None


def test_binds_loopback_by_default(served):
    assert httpx.URL(served.url).host == "127.0.0.1"
