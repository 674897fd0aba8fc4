"""The dashboard in a real headless Chromium against a real uvicorn server on 127.0.0.1,
serving the world's monitoring tables (the export the job wrote). The pages' charts mark
how many data points they drew (``data-points``); the dumped DOM must show them drawn.
Screenshots are kept under ``test-artifacts/``.

Chromium comes from Debian's ``chromium`` package: when it is missing, this module's setup
installs it with apt-get (CI included, so a fresh machine runs the check; not when
``CTR_NO_APT`` is set, and only as root); when that is impossible the browser tests are skipped with the reason.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from apt_support import apt_install
from monitoring_support import DAY_A, DAY_B

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
BROWSERS = ("chromium", "chromium-browser")



@pytest.fixture(scope="session")
def chromium() -> str:
    found = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if found is None:
        why = apt_install("chromium")
        found = next((p for p in map(shutil.which, BROWSERS) if p), None)
        if found is None:
            pytest.skip(why or "chromium could not be found after installing it")
    return found


class Server:
    """The dashboard app on a uvicorn server in a background thread (a real socket)."""

    def __init__(self, settings):
        import uvicorn

        from monitoring.dashboard import create_app

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def served(world):
    with Server(world.settings) as srv:
        yield srv


def browse(chromium: str, url: str, tmp_path: Path, screenshot: Path | None = None) -> str:
    """Load ``url`` in headless Chromium (a fresh profile) and return the DOM after the scripts ran."""
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,2400",
            "--virtual-time-budget=10000"]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    done = subprocess.run(args + [url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def attribute(dom: str, name: str) -> dict[str, int]:
    """The integer attribute ``name`` (data-points, data-rows) of every element that has an id
    and that attribute in a dumped DOM, by id."""
    out = {}
    for tag in re.findall(r"<div [^>]*>", dom):
        m_id, m_n = re.search(r'\bid="([\w-]+)"', tag), re.search(rf'\b{name}="(\d+)"', tag)
        if m_id and m_n:
            out[m_id.group(1)] = int(m_n.group(1))
    return out


def test_json_endpoints(served):
    with httpx.Client(base_url=served.url, timeout=30) as c:
        o = c.get("/api/overview").json()
        assert o["dates"] == [DAY_A.isoformat(), DAY_B.isoformat()] and o["versions"] == ["1", "2"]
        assert o["slice_fields"] == ["site_id"] and o["latest"]["date"] == DAY_B.isoformat()
        b = c.get("/api/business", params={"window": "hour", "slice_field": "site_id"}).json()
        assert {s["name"] for s in b["series"]} == {"s1", "s2", "__other__"}
        s1 = next(r for r in b["table"] if r["slice_value"] == "s1")
        assert (s1["impressions"], s1["clicks"]) == (3 + 2, 1 + 1)  # day A: 3 labelled, 1 click; day B: j1, j3
        m = c.get("/api/model").json()
        v1 = next(s for s in m["series"] if s["version"] == "1")
        assert [p["calibration"] for p in v1["points"]] == [pytest.approx(0.7), pytest.approx(0.3)]
        r = c.get("/api/reliability", params={"version": "1", "date": DAY_A.isoformat()}).json()
        assert sum(b["count"] for b in r["bins"]) == 6 and r["auc"] == pytest.approx(7 / 9)
        d = c.get("/api/drift", params={"date": DAY_A.isoformat()}).json()
        psis = [row["psi"] for row in d["rows"]]
        known = [x for x in psis if x is not None]
        assert known == sorted(known, reverse=True) and psis[:len(known)] == known  # largest first, nulls last
        # day_of_week on a Monday: the reference (a Sunday) has no Monday, so it is not compared
        dow = next(row for row in d["rows"] if row["field"] == "day_of_week")
        assert dow["psi"] is None and "no Monday in the reference" in dow["reference"]
        assert c.get("/api/alerts").json()["total"] >= 2
        cmp = c.get("/api/compare", params={"a": "1", "b": "2"}).json()
        assert cmp["same_days"] and cmp["days"] == [DAY_B.isoformat()]
        assert c.get("/api/business", params={"window": "week"}).status_code == 422


def test_business_page_draws_in_chromium(chromium, served, tmp_path):
    dom = browse(chromium, served.url + "/", tmp_path)
    assert 'data-ready="1"' in dom, dom[-3000:]
    p = attribute(dom, "data-points")
    # all traffic, day windows: one point per day for impressions, clicks and CTR
    assert (p["chart-impressions"], p["chart-clicks"], p["chart-ctr"]) == (2, 2, 2), p
    assert attribute(dom, "data-rows")["table-slices"] == 1
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard-business.png"
    browse(chromium, served.url + "/", tmp_path, screenshot=shot)
    assert shot.stat().st_size > 10_000


def test_model_page_draws_in_chromium(chromium, served, tmp_path):
    dom = browse(chromium, served.url + "/model", tmp_path)
    assert 'data-ready="1"' in dom, dom[-3000:]
    p = attribute(dom, "data-points")
    # v1 served both days, v2 day B only: calibration needs clicks (v2 had none), NE and AUC need
    # both classes (only v1 on day A has them)
    assert p["chart-calibration"] == 2 and p["chart-logloss"] == 3 and p["chart-ne"] == 1, p
    assert p["chart-auc"] == 1, p
    assert p["chart-reliability"] > 0 and p["chart-psi"] > 0 and p["chart-bins"] > 0, p
    r = attribute(dom, "data-rows")
    assert r["table-alerts"] >= 2 and r["table-drift"] > 0 and r["table-compare"] == 7, r
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard-model.png"
    browse(chromium, served.url + "/model", tmp_path, screenshot=shot)
    assert shot.stat().st_size > 10_000
