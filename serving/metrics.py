"""Prometheus metrics of one serving app, in its own registry (``GET /metrics``).

Each app gets a fresh :class:`prometheus_client.CollectorRegistry`, so several servers in
one process (tests, the benchmark) never share counters. Label children used on the hot
path are resolved once and cached.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Latency buckets (seconds): fine below 10 ms, where the bidder's budget is.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
ENDPOINTS = ("score", "openrtb")


class ServingMetrics:
    """The Prometheus metrics of one app, in their own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("ctr_requests", "Scoring requests by endpoint and HTTP status.",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("ctr_request_latency_seconds",
                                 "Time in the scoring handler, body read to response built.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.scored = Counter("ctr_scored_impressions", "Impressions (or impression x ad pairs) scored.",
                              ["endpoint"], registry=r)
        self.errors = Counter("ctr_errors", "Rejected or failed requests by kind.", ["endpoint", "kind"],
                              registry=r)
        self.model_version = Gauge("ctr_model_version",
                                   "Registry version number of the served model (-1: not numeric).", registry=r)
        self.model_info = Gauge("ctr_model_info", "1 for the served model.",
                                ["version", "alias", "fingerprint"], registry=r)
        self.model_loaded = Gauge("ctr_model_loaded_timestamp_seconds", "When the served model was loaded.",
                                  registry=r)
        self.swaps = Counter("ctr_model_swaps", "Model swaps after the initial load.", registry=r)
        self.load_failures = Counter("ctr_model_load_failures", "Model loads refused or failed, by reason.",
                                     ["reason"], registry=r)
        self.log_written = Counter("ctr_prediction_log_written", "Prediction-log records written.", registry=r)
        self.log_dropped = Counter("ctr_prediction_log_dropped",
                                   "Prediction-log records dropped because the queue was full.", registry=r)
        self.log_errors = Counter("ctr_prediction_log_write_errors",
                                  "Prediction-log records lost to I/O errors (disk full, file too large, "
                                  "read-only or unwritable directory).", registry=r)
        self.log_queue = Gauge("ctr_prediction_log_queue_records", "Records waiting in the prediction-log queue.",
                               registry=r)
        self.registry_reachable = Gauge("ctr_registry_reachable",
                                        "1 when the last registry poll was answered, 0 during an outage "
                                        "(registry-served models only).", registry=r)
        self.registry_unreachable_since = Gauge("ctr_registry_unreachable_since_timestamp_seconds",
                                                "When the current registry outage began (0: reachable).",
                                                registry=r)
        self.connections_closed = Counter("ctr_http_connections_closed",
                                          "Connections the server closed to protect itself, by reason: "
                                          "over_limit, timeout, head_too_large.", ["reason"], registry=r)
        self._latency = {e: self.latency.labels(e) for e in ENDPOINTS}
        self._ok = {e: self.requests.labels(e, "200") for e in ENDPOINTS}
        self._scored = {e: self.scored.labels(e) for e in ENDPOINTS}

    def observe_ok(self, endpoint: str, seconds: float, n_scored: int) -> None:
        """Count a successful request, its latency and the impressions it scored."""
        self._latency[endpoint].observe(seconds)
        self._ok[endpoint].inc()
        self._scored[endpoint].inc(n_scored)

    def observe_error(self, endpoint: str, status: int, kind: str, seconds: float | None) -> None:
        """Count a refused or failed request by status and kind (and its latency, if it ran)."""
        if seconds is not None:  # None: refused before the handler ran (auth, readiness)
            self._latency[endpoint].observe(seconds)
        self.requests.labels(endpoint, str(status)).inc()
        self.errors.labels(endpoint, kind).inc()

    def set_model(self, version: str, alias: str | None, fingerprint: str, loaded_at: float) -> None:
        """Publish the served model's version, alias, fingerprint and load time."""
        self.model_info.clear()
        self.model_info.labels(version, alias or "", fingerprint).set(1)
        self.model_version.set(int(version) if version.isdigit() else -1)
        self.model_loaded.set(loaded_at)

    def set_registry(self, unreachable_since: float | None) -> None:
        """Publish whether the registry answered its last poll, and since when it has not."""
        self.registry_reachable.set(0 if unreachable_since is not None else 1)
        self.registry_unreachable_since.set(unreachable_since or 0)

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
