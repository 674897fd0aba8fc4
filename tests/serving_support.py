"""Shared set-up of the serving tests (not a test module: the ``test_serving_*`` modules
import it, and ``conftest.py`` serves :func:`serving_world` as the fixture ``w``).

Everything is real: impressions from the platform's generator, models fitted with
``SparseLogisticRegression`` on the shipped ``generated`` spec, written as plain model
directories and registered in the real MLflow SQLite store the training tests share
(``training_support.shared_store``). Built once per test session.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
import pytest

from shared.featurize import Featurizer, FeatureSpec
from synthetic.sample import generate_impressions, register_model_dir, train_model_dir
from training.artifacts import CHECKSUMS_FILE, META_FILE, MODEL_FILES, load_model_dir, sha256_file
from training_support import shared_store

OPENRTB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "openrtb"

_CACHE: dict = {}


def openrtb_examples() -> list[Path]:
    if not OPENRTB_DIR.is_dir():
        pytest.skip(f"OpenRTB examples not present: {OPENRTB_DIR}")
    files = sorted(OPENRTB_DIR.glob("*.json"))
    if not files:
        pytest.skip(f"no OpenRTB examples in {OPENRTB_DIR}")
    return files


@dataclasses.dataclass
class Offline:
    """A model directory scored the offline way (training.artifacts + shared.featurize)."""

    path: Path

    def __post_init__(self):
        self.model = load_model_dir(self.path)
        self.featurizer = Featurizer(FeatureSpec.from_toml(self.model.spec_text))

    def ctr(self, fields: dict) -> float:
        return self.model.score(*self.featurizer.transform_record(fields))

    def ctrs(self, field_dicts) -> np.ndarray:
        return self.model.score_batch(self.featurizer.transform_records(field_dicts))


@dataclasses.dataclass
class World:
    impressions: list
    fields: list[dict]
    dirs: dict[str, Path]  # "a", "b": good models; "mismatch": fingerprint not reproducible
    offline: dict[str, Offline]


def serving_world(tmp_path_factory) -> World:
    if "world" not in _CACHE:
        root = tmp_path_factory.mktemp("serving_models")
        imps = generate_impressions(3000, seed=5, workdir=root)
        dirs, offline = {}, {}
        for name, C in (("a", 0.05), ("b", 2.0)):
            dirs[name], _ = train_model_dir(imps, root / name, C=C, seed=1)
            offline[name] = Offline(dirs[name])
        dirs["mismatch"] = rewrite_model_dir(dirs["a"], root / "mismatch", META_FILE,
                                             lambda t: t.replace(offline["a"].model.fingerprint, "0" * 64))
        _CACHE["world"] = World(imps, [i.fields for i in imps], dirs, offline)
    return _CACHE["world"]


def rewrite_model_dir(src: Path, dst: Path, name: str, edit) -> Path:
    """A copy of a model dir with file ``name`` edited and *valid* checksums: only the
    spec fingerprint check can tell whether the spec still describes the weights."""
    shutil.copytree(src, dst)
    (dst / name).write_text(edit((dst / name).read_text()))
    (dst / CHECKSUMS_FILE).write_text(json.dumps({n: sha256_file(dst / n) for n in MODEL_FILES}))
    return dst


def store(tmp_path_factory):
    """Settings of the shared MLflow store."""
    return shared_store(tmp_path_factory)


def settings_with_home(store_settings, home: Path):
    """The shared store's MLflow URIs with a private data root (own predictions_dir)."""
    return dataclasses.replace(store_settings, home=home)


def register(store_settings, w: World, model_name: str, which: str, window: str) -> str:
    d = w.dirs[which]
    meta = json.loads((d / "model.json").read_text())
    return register_model_dir(store_settings, d, model_name, meta["metrics"]["test"], test_window=window)


def tamper_registered_weights(store_settings, model_name: str, version: str) -> Path:
    """Change weights.npz of a registered version inside the artifact store (the bytes the
    server downloads), keeping it a valid npz: only the checksum can tell."""
    import mlflow

    from shared.mlflow_utils import configure_mlflow

    configure_mlflow(store_settings)
    client = mlflow.MlflowClient()
    mv = client.get_model_version(model_name, version)
    run_id = re.fullmatch(r"runs:/([^/]+)/model_dir", mv.tags["model_dir_uri"]).group(1)
    uri = urlsplit(client.get_run(run_id).info.artifact_uri)
    assert uri.scheme == "file", uri
    weights = Path(url2pathname(uri.path)) / "model_dir" / "weights.npz"
    with np.load(weights, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["weights"] = arrays["weights"] * 3.0
    with open(weights, "wb") as f:
        np.savez(f, **arrays)
    return weights


def copy_tampered_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    with np.load(dst / "weights.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["intercept"] = arrays["intercept"] + 1.0
    with open(dst / "weights.npz", "wb") as f:
        np.savez(f, **arrays)
    return dst


def score_body(field_dicts, request_id: str | None = None, ids=None) -> dict:
    ids = ids or [f"imp-{k}" for k in range(len(field_dicts))]
    body = {"records": [{"id": i, "fields": f} for i, f in zip(ids, field_dicts)]}
    if request_id:
        body["request_id"] = request_id
    return body


def metric_value(text: str, name: str, **labels) -> float:
    """A sample's value from Prometheus text (0.0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" (\S+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.group(1))
    return 0.0


class Served:
    """A real server (uvicorn in a thread on a free 127.0.0.1 port) and a client for it."""

    def __init__(self, settings, options):
        from serving.server import build_state

        self.settings = settings
        self.state = build_state(settings, options)

    def __enter__(self):
        import httpx

        from serving.server import running_server

        self._cm = running_server(self.settings, state=self.state)
        self.url = self._cm.__enter__()
        self.client = httpx.Client(base_url=self.url, timeout=10.0)
        return self

    def __exit__(self, *exc):
        self.client.close()
        return self._cm.__exit__(*exc)

    def metrics(self) -> str:
        return self.client.get("/metrics").text


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
