"""The per-request shortcuts of the server: the scoring endpoints dispatched past the
middleware stack, the response head and body in one write, the prediction-log writer's
cached time texts, and a swap keeping the warm featurizer. Each one must change nothing
a client or a reader of the log can see."""

from __future__ import annotations

import dataclasses
import math
import shutil
import warnings
from pathlib import Path

import pytest
from starlette.middleware.base import BaseHTTPMiddleware

with warnings.catch_warnings():  # starlette announces a move from httpx to httpx2 for its test client
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from serving.app import create_app
from serving.lifecycle import DirectorySource, ModelManager
from serving.predlog import _iso_ms, _TimeTexts, hour_path
from serving.protocol import _HeadWithBody
from serving.server import ServeOptions, build_state
from serving_support import score_body, settings_with_home, store


def test_cached_time_texts_equal_datetime_formatting():
    texts = _TimeTexts(Path("/log"))
    base = 1764740000.0
    cases = [946684800.0, 4102444799.9999995, base + 0.0005, base + 0.0015, base + 0.9999995, base + 0.9999994,
             3600 * 490206 - 1e-7, 3600 * 490206 - 6e-7, 86400 * 20425 - 4e-7]
    cases += [base + k / 1e6 + d for k in range(0, 2000, 7) for d in (0.0, 5e-7, 4.9999e-7, 5.0001e-7)]
    cases += [math.nextafter(base + 1, 0.0), base + 1]
    for ts in cases:
        assert texts.iso_ms(ts).decode() == _iso_ms(ts), ts
        assert texts.hour_path(ts) == hour_path(Path("/log"), ts), ts


class _Recorder:
    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data):
        self.writes.append(bytes(data))

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed


def test_head_waits_for_the_body_and_leaves_with_it():
    t = _Recorder()
    out = _HeadWithBody(t)
    out.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # not the response head: sent at once
    assert t.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    out.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert len(t.writes) == 1
    out.write(b"{}")
    assert t.writes[1] == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    out.write(b"more")  # later writes go straight through
    assert t.writes[2] == b"more" and not out.is_closing()

    head_only = _Recorder()  # a HEAD response: no body write, the completion sends the head
    out = _HeadWithBody(head_only)
    out.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
    out.flush()
    assert head_only.writes == [b"HTTP/1.1 405 Method Not Allowed\r\n\r\n"]

    closing = _Recorder()  # closed with the head held (an error after the response started)
    out = _HeadWithBody(closing)
    out.write(b"HTTP/1.1 200 OK\r\n\r\n")
    out.close()
    assert closing.writes == [b"HTTP/1.1 200 OK\r\n\r\n"] and closing.closed


@pytest.fixture(scope="module")
def apps(tmp_path_factory, w):
    """The same state served twice: the app as built (scoring POSTs dispatched directly) and
    one with a user middleware, which sends every request through the full stack."""
    settings = settings_with_home(store(tmp_path_factory), tmp_path_factory.mktemp("hotpath_home"))
    state = build_state(settings, ServeOptions(model_dir=w.dirs["a"], prediction_log=False, token="s3cret",
                                               max_batch=5))
    direct, full = create_app(state), create_app(state)

    class PassThrough(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            return await call_next(request)

    full.add_middleware(PassThrough)
    taken: dict[str, list[str]] = {"direct": [], "full": []}
    for name, app in (("direct", direct), ("full", full)):  # count the requests the shortcut serves
        for path, handler in list(app.fast_routes.items()):
            async def counted(scope, receive, send, handler=handler, path=path, log=taken[name]):
                log.append(path)
                await handler(scope, receive, send)
            app.fast_routes[path] = counted
    with TestClient(direct) as a, TestClient(full) as b:
        yield a, b, taken


def test_direct_dispatch_answers_like_the_full_stack(apps, w):
    direct, full, taken = apps
    auth = {"authorization": "Bearer s3cret"}
    cases = [
        ("/v1/score", score_body(w.fields[:3], request_id="r-1"), auth),
        ("/v1/score", score_body(w.fields[:1], request_id="r-2"), {}),  # no token: 401
        ("/v1/score", score_body(w.fields[:1], request_id="r-3"), {"authorization": "Bearer wrong"}),
        ("/v1/score", {"records": [{"fields": {"nope": 1}}], "request_id": "r-4"}, auth),
        ("/v1/score", score_body(w.fields[:6], request_id="r-5"), auth),  # over max_batch: 413
        ("/v1/score", b"{not json", auth),
        ("/v1/openrtb", {"id": "br-1", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}, auth),
        ("/v1/openrtb", {"id": 7}, auth),
    ]
    for path, body, headers in cases:
        kw = {"content": body, "headers": {**headers, "content-type": "application/json"}} \
            if isinstance(body, bytes) else {"json": body, "headers": headers}
        a, b = direct.post(path, **kw), full.post(path, **kw)
        assert (a.status_code, a.content) == (b.status_code, b.content), (path, a.text, b.text)
        strip = lambda r: [(k, v) for k, v in r.headers.items() if k != "date"]  # noqa: E731
        assert strip(a) == strip(b), path
    # the shortcut served every scoring POST of the app as built, none of the app with middleware
    assert taken["direct"] == [path for path, _, _ in cases] and taken["full"] == []
    # other methods and paths are the framework's, unchanged
    assert direct.get("/v1/score").status_code == full.get("/v1/score").status_code == 405
    assert direct.post("/v1/score/", json={}, follow_redirects=False).status_code == \
        full.post("/v1/score/", json={}, follow_redirects=False).status_code


def test_swap_to_the_same_spec_keeps_the_warm_featurizer(w, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(w.dirs["a"], other)
    manager = ModelManager(DirectorySource(w.dirs["a"]), poll_seconds=0)
    manager.refresh()
    first = manager.current
    first.score_records(w.fields[:50])  # warm its caches
    manager.source = DirectorySource(other)
    assert manager.refresh()
    second = manager.current
    assert second is not first and second.model_dir == str(other)
    assert second.featurizer is first.featurizer  # same fingerprint: the warm one is kept
    assert second.score_records(w.fields[:50]) == first.score_records(w.fields[:50])
    assert dataclasses.replace(second, featurizer=first.featurizer).fingerprint == first.fingerprint
