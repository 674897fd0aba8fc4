"""The bidder's scoring endpoint (``ctr serve``): FastAPI + uvicorn, one process.

Modules:

* :mod:`.app` - the FastAPI app: ``POST /v1/score``, ``POST /v1/openrtb``, ``GET /healthz``,
  ``/readyz``, ``/v1/model``, ``/metrics``; the OpenAPI document at ``/docs``.
* :mod:`.scorer` - the immutable :class:`~serving.scorer.Scorer` (verified plain model files +
  the shared featurizer) and :func:`~serving.scorer.load_scorer`, which refuses bad checksums and
  spec fingerprints that do not reproduce.
* :mod:`.lifecycle` - :class:`~serving.lifecycle.ModelManager`: load the version behind a
  registry alias (or a model directory), poll the alias, swap atomically, keep the old version
  when a load fails.
* :mod:`.parsing`, :mod:`.schemas` - request bodies: orjson + hand validation on the hot path,
  pydantic models for the documented schemas.
* :mod:`.predlog` - the asynchronous, bounded prediction log (hourly JSON lines).
* :mod:`.metrics` - Prometheus metrics (one registry per app).
* :mod:`.protocol` - uvicorn's httptools protocol with bounds for slow clients and connection
  floods (per-request deadline, request-head size limit, connection cap).
* :mod:`.server` - :func:`~serving.server.build_state`, :func:`~serving.server.running_server`
  (``with running_server(settings) as url:`` - uvicorn in a background thread) and
  :func:`~serving.server.serve_forever`.
* :mod:`.cli` - ``ctr serve``. (The load generator and the sample traffic live in
  :mod:`synthetic`.)

Nothing here unpickles: models are read from ``weights.npz`` (``allow_pickle=False``), the
spec TOML and JSON, through the shared model contract (:mod:`shared.model.format`).
"""
