"""Assemble and run the scoring server: :func:`build_state`, :func:`running_server`
(uvicorn in a background thread, for tests, the benchmark and the demo) and
:func:`serve_forever` (``ctr serve``)."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from serving import schemas
from serving.app import ServingState, create_app, wire_metrics
from serving.lifecycle import (DEFAULT_MODEL_NAME, DEFAULT_POLL_SECONDS, DEFAULT_RETRY_FAILED_SECONDS,
                               DirectorySource, ModelManager, RegistrySource)
from serving.metrics import ServingMetrics
from serving.predlog import DEFAULT_CAPACITY, DEFAULT_FLUSH_INTERVAL, PredictionLog
from serving.protocol import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEAD_BYTES, DEFAULT_REQUEST_TIMEOUT, bounded_protocol
from serving.scorer import ModelLoadError
from shared.config import Settings

log = logging.getLogger("ctr.serving")

TOKEN_ENV = "CTR_API_TOKEN"
GIL_SWITCH_INTERVAL = 0.0005  # seconds; see serve_forever
#: Seconds an idle keep-alive connection stays open (uvicorn's default, stated here).
DEFAULT_KEEP_ALIVE = 5
#: Allocations of at least this many bytes get their own mapping (see :func:`pin_mmap_threshold`).
MMAP_THRESHOLD = 1 << 20
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc malloc.h)


@dataclass(frozen=True)
class ServeOptions:
    """How ``ctr serve`` runs: which model, polling, auth token and prediction-log settings."""

    model_name: str = DEFAULT_MODEL_NAME
    alias: str = "champion"
    model_dir: Path | None = None  # serve this directory instead of the registry alias
    poll_seconds: float = DEFAULT_POLL_SECONDS
    retry_failed_seconds: float = DEFAULT_RETRY_FAILED_SECONDS
    token: str | None = None  # bearer token for the scoring endpoints (None: no auth)
    prediction_log: bool = True
    log_capacity: int = DEFAULT_CAPACITY
    log_flush_interval: float = DEFAULT_FLUSH_INTERVAL
    log_high_water: int | None = None
    max_batch: int = schemas.MAX_BATCH
    max_body_bytes: int = schemas.MAX_BODY_BYTES
    # connection bounds (serving/protocol.py): slow clients and floods cost bounded memory
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    keep_alive_seconds: int = DEFAULT_KEEP_ALIVE

    @classmethod
    def token_from_env(cls, env=None) -> str | None:
        """The bearer token from ``CTR_API_TOKEN``, or None when unset or empty."""
        value = (os.environ if env is None else env).get(TOKEN_ENV, "")
        return value or None


def build_state(settings: Settings, options: ServeOptions | None = None, *, load: bool = True) -> ServingState:
    """Metrics, model manager and prediction log for ``options``. With ``load`` the model
    is loaded now and a failure raises :class:`ModelLoadError` (the server would have
    nothing to serve)."""
    options = options or ServeOptions()
    metrics = ServingMetrics()
    source = (DirectorySource(Path(options.model_dir)) if options.model_dir is not None
              else RegistrySource(settings, options.model_name, options.alias))
    manager = ModelManager(source, poll_seconds=options.poll_seconds,
                           retry_failed_seconds=options.retry_failed_seconds)
    predlog = (PredictionLog(settings.predictions_dir, capacity=options.log_capacity,
                             flush_interval=options.log_flush_interval, high_water=options.log_high_water,
                             metrics=metrics) if options.prediction_log else None)
    state = ServingState(manager=manager, metrics=metrics, predlog=predlog, token=options.token,
                         max_batch=options.max_batch, max_body_bytes=options.max_body_bytes)
    wire_metrics(state)
    if load:
        manager.refresh()
        if manager.current is None:
            raise ModelLoadError("initial_load", f"cannot serve {source.description}: {manager.last_error}")
    return state


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _uvicorn_config(app, settings: Settings, options: ServeOptions, metrics: ServingMetrics, **kwargs):
    """uvicorn's settings: httptools with the connection bounds of ``options``, whose closings
    are counted in ``metrics``; no ``limit_concurrency`` (see :mod:`serving.protocol`)."""
    import uvicorn

    def closed(reason: str) -> None:
        metrics.connections_closed.labels(reason).inc()

    protocol = bounded_protocol(options.request_timeout, options.max_head_bytes, options.max_connections,
                                on_close=closed)
    return uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False, lifespan="on",
                          http=protocol, timeout_keep_alive=options.keep_alive_seconds,
                          timeout_graceful_shutdown=10, **kwargs)


@contextmanager
def running_server(settings: Settings, options: ServeOptions | None = None, *, state: ServingState | None = None,
                   port: int = 0, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run the scoring server in a background thread; yields its base URL.

    Binds ``settings.host`` (127.0.0.1 by default) on ``port`` (0: a free port). Pass a
    ``state`` from :func:`build_state` to keep a handle on the manager and the log (the
    connection bounds still come from ``options``). Stopping flushes the prediction log."""
    import uvicorn

    options = options or ServeOptions()
    state = state if state is not None else build_state(settings, options)
    app = create_app(state)
    sock = _bind(settings.host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_uvicorn_config(app, settings, options, state.metrics, log_config=None,
                                            log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ctr-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            sock.close()
            raise RuntimeError("the scoring server did not start (see the log)")
        time.sleep(0.01)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def pin_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (whether it could be set).

    glibc raises the threshold to the size of each large block freed, so once a swapped-out
    model's weights are freed the next version's come from the heap, which is not given back:
    measured, resident memory grew by the weights' size on each of the first swaps. A fixed
    threshold keeps every large array in its own mapping, returned to the system when freed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, nbytes))
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False


def serve_forever(settings: Settings, options: ServeOptions) -> int:
    """Load the model, then serve on ``settings.host:settings.port`` until interrupted."""
    import uvicorn

    pin_mmap_threshold()  # before the model's arrays are allocated
    state = build_state(settings, options)
    first = state.manager.current
    assert first is not None  # build_state loaded it or raised
    version = first.version
    del first  # no reference to the first version may outlive its swap (its weights would stay resident)
    # Everything allocated so far (MLflow, numpy) lives as long as the process (the first
    # model too, until a swap frees it by reference counting, which freezing does not stop):
    # keep it out of the collector's reach so full collections stay short (measured: one
    # ~90 ms generation-2 pause every few seconds at 1,000 requests/s without this).
    gc.collect()
    gc.freeze()
    # The prediction-log writer and the alias poller are Python threads: with the default
    # 5 ms GIL switch interval a request arriving while one of them runs can wait up to 5 ms
    # for the interpreter. 0.5 ms bounds that wait (the event loop asks for the GIL back sooner).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    log.info("serving %s version %s on http://%s:%d (at most %d connections, %g s per request, %d-byte heads)",
             state.manager.source.description, version, settings.host, settings.port,
             options.max_connections, options.request_timeout, options.max_head_bytes)
    server = uvicorn.Server(_uvicorn_config(create_app(state), settings, options, state.metrics, log_level="info"))
    server.run()
    return 0
