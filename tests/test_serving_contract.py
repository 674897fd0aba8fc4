"""API contract: schemathesis fuzzes every documented endpoint of a real server (uvicorn on a
free port, serving model ``a`` of the serving world) from the server's own OpenAPI document,
with all of its checks and both positive (schema-valid) and negative (schema-violating) data:
no 5xx, every response as documented, valid data accepted and invalid data rejected.

Two limits of the API cannot be written in JSON Schema and are documented in the
descriptions instead: the body's byte limit and impressions x candidate ads <= 1000 on
``/v1/openrtb``. Their answer, 413 ``too_large``, is therefore an expected answer to
schema-valid data too, and a rejection of schema-violating data (more than 1000 records).

The served document's ``fields`` schema is generated from the loaded model's feature spec
(exactly the keys the server accepts): a hot swap to a model reading other fields renews it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis

from serving.lifecycle import DirectorySource
from serving.server import ServeOptions
from shared.openrtb import RAW_FIELD_NAMES
from serving_support import Served

MAX_EXAMPLES = 40
SEED = 20260507
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "413", "429", "5xx"]

#: A spec reading other fields than ``generated``: two raw fields and one that is not a raw field.
OTHER_SPEC = """
version = 1
name = "contract-other"
bits = 18
seed = 0
missing_token = "__missing__"

[[fields]]
name = "site_id"
kind = "categorical"

[[fields]]
name = "bidfloor"
kind = "numeric"
transform = "log_bucket"

[[fields]]
name = "page_quality"
kind = "numeric"
transform = "raw"
clip = [0.0, 1.0]
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory, w):
    from shared.config import load_settings

    settings_ = load_settings({"home": str(tmp_path_factory.mktemp("contract_home"))}, env={})
    with Served(settings_, ServeOptions(model_dir=w.dirs["a"])) as srv:
        yield srv


@pytest.fixture(scope="module")
def api_schema(served):
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json")
    schema.config.update(base_url=served.url, workers=1)
    # both generation modes, a bounded and fixed set of examples (deterministic: CI sees the same cases)
    schema.config.generation.update(modes=list(schemathesis.GenerationMode), max_examples=MAX_EXAMPLES,
                                    deterministic=True, database="none")
    schema.config.seed = SEED
    schema.config.checks.update(included_check_names=["all"])
    schema.config.checks.negative_data_rejection.expected_statuses = REJECTED
    schema.config.checks.positive_data_acceptance.expected_statuses = ACCEPTED
    return schema


def test_api_contract(api_schema):
    """Every phase the CLI runs (the documented examples, the coverage phase's boundary and
    near-boundary values, hypothesis fuzzing) with every check, in process: schemathesis's
    own pytest integration (``schemathesis.pytest.from_fixture``) does not run on pytest 9."""
    from schemathesis.engine import events, from_schema

    failures: list[str] = []
    errors: list[str] = []
    tested: dict[str, int] = {}
    for event in from_schema(api_schema).execute():
        if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
            rec = event.recorder
            tested[rec.label] = tested.get(rec.label, 0) + len(rec.cases)
            for case_id, nodes in rec.checks.items():
                for node in nodes:
                    if node.failure_info is not None:
                        f = node.failure_info.failure
                        failures.append(f"{rec.label}: {node.name}: {f.title}: {f.message}\n"
                                        f"{node.failure_info.code_sample}")
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(f"{type(event).__name__}: {getattr(event, 'label', '')}: "
                          f"{getattr(event, 'value', getattr(event, 'exception', None))!r}")
    print(f"schemathesis: {sum(tested.values())} generated requests, {len(failures)} failed checks, "
          f"{len(errors)} errors; per operation {tested}")
    assert not errors, "\n".join(errors)
    assert not failures, f"{len(failures)} failed checks:\n" + "\n\n".join(dict.fromkeys(failures))
    # every documented operation was exercised
    assert {"POST /v1/score", "POST /v1/openrtb", "GET /healthz", "GET /readyz", "GET /v1/model",
            "GET /metrics"} <= set(tested), tested
    assert tested["POST /v1/score"] >= MAX_EXAMPLES and tested["POST /v1/openrtb"] >= MAX_EXAMPLES, tested


def _fields_schema(srv) -> dict:
    doc = srv.client.get("/openapi.json").json()
    return doc["components"]["schemas"]["ScoreRecord"]["properties"]["fields"]


def test_fields_schema_is_the_served_models_and_follows_a_swap(tmp_path_factory, w):
    from shared.config import load_settings
    from synthetic.sample import train_model_dir

    root = tmp_path_factory.mktemp("contract_swap")
    spec_path = root / "contract-other.toml"
    spec_path.write_text(OTHER_SPEC)
    other, _ = train_model_dir(w.impressions, root / "other", spec=str(spec_path), seed=1)
    settings_ = load_settings({"home": str(root / "home")}, env={})
    with Served(settings_, ServeOptions(model_dir=w.dirs["a"], prediction_log=False)) as srv:
        before = _fields_schema(srv)
        assert before["additionalProperties"] is False
        assert set(before["properties"]) == set(srv.state.manager.current.accepted_fields)
        assert "page_quality" not in before["properties"]
        unknown = srv.client.post("/v1/score", json={"records": [{"fields": {"page_quality": 0.5}}]})
        assert unknown.status_code == 422 and unknown.json()["error"]["kind"] == "unknown_field"

        manager = srv.state.manager
        manager.source = DirectorySource(Path(other))
        assert manager.refresh()  # the swap, as the poller does it
        after = _fields_schema(srv)
        assert set(after["properties"]) == set(RAW_FIELD_NAMES) | {"page_quality"}
        assert after["properties"]["page_quality"] != before["properties"].get("user_id")
        assert "pattern" in after["properties"]["page_quality"]["anyOf"][1]  # numeric: numbers as strings too
        assert "contract-other" in after["description"]
        ok = srv.client.post("/v1/score", json={"records": [{"fields": {"page_quality": 0.5}}]})
        assert ok.status_code == 200, ok.text
        # a raw field the new spec does not read: still accepted (logged), any value
        assert after["properties"]["ad_pos"] == {"description": "not read by the served model: logged, any value"}
        assert after != before


def test_openrtb_echoes_creative_ids_as_documented_strings(served):
    body = {"bid_request": {"id": "r1", "imp": [{"id": "1", "banner": {"w": 300.0, "h": 250}}]},
            "ads": [{"creative_id": 7908081}, {"creative_id": "c-2"}, {}]}
    r = served.client.post("/v1/openrtb", json=body)
    assert r.status_code == 200, r.text
    assert [a["creative_id"] for a in r.json()["impressions"][0]["ads"]] == ["7908081", "c-2", None]


@pytest.mark.parametrize("body, kind", [
    ({"bid_request": {"id": "r", "imp": [{"id": "1", "banner": {"w": 300}, "video": "x"}]}}, "wrong_type"),
    ({"bid_request": {"id": "r", "imp": [{"id": "1"}], "user": {"data": [{"segment": {}}]}}}, "wrong_type"),
    ({"bid_request": {"id": "r", "imp": [{"id": "1"}], "site": {"id": "s"}, "app": {"id": "a"}}}, "invalid"),
    ({"id": "r", "imp": [{"id": "1"}], "bid_request": {}}, "unknown_field"),
    ({"bid_request": {"id": "r", "imp": [{"id": "1", "tagid": 2 ** 64}]}}, "wrong_type"),
])
def test_openrtb_refuses_what_the_document_forbids(served, body, kind):
    r = served.client.post("/v1/openrtb", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["kind"] == kind


def test_document_renders_without_a_model():
    from serving.schemas import fields_schema

    schema_ = fields_schema(None)
    assert set(schema_["properties"]) == set(RAW_FIELD_NAMES) and schema_["additionalProperties"] is False
