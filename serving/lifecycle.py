"""Which model is served: load at start-up, poll the registry alias, swap atomically.

:class:`ModelManager` holds the current :class:`~serving.scorer.Scorer` in one attribute,
``current``. Requests read it once (``scorer = manager.current``) and use that object
for the whole request. A new version is downloaded and loaded completely aside (verify
checksums, reproduce the fingerprint, build the featurizer, warm it) by the poller
thread; only then is ``current`` reassigned - a single reference store, atomic under the
GIL. A failed load leaves ``current`` untouched, is logged with the reason and counted
in ``ctr_model_load_failures_total{reason}``, and is retried after
``retry_failed_seconds`` (or at once when the alias moves to yet another version).

A registry that cannot answer (down, unreachable, 5xx, throttling) is not a bad model: the
loaded version keeps serving, :attr:`ModelManager.registry_unreachable_since` records when
the outage began (``/readyz``, ``ctr_registry_reachable``), each failed poll is counted as
``ctr_model_load_failures_total{reason="registry_unreachable"}``, and the next successful
poll clears it. Registry calls are bounded (:data:`REGISTRY_HTTP_DEFAULTS`) so a poll
reports an outage within seconds instead of MLflow's minutes of retries.

Sources: the version behind an alias of a registered model (``RegistrySource``: the
plain files its ``model_dir_uri`` tag names, downloaded with an MLflow client of the
configured store), or a fixed model directory (``DirectorySource``, no polling).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from serving.scorer import ModelLoadError, Scorer, load_scorer
from shared.config import Settings
from shared.model.registry import DEFAULT_MODEL_NAME, Tag

log = logging.getLogger("ctr.serving")

DEFAULT_POLL_SECONDS = 30.0
DEFAULT_RETRY_FAILED_SECONDS = 60.0
#: ModelLoadError reason of a registry that could not answer (not a verdict on the model).
REGISTRY_UNREACHABLE = "registry_unreachable"
#: MLflow's HTTP client settings for the server's registry calls, unless set in the
#: environment: one immediate retry and a 5 s socket timeout. MLflow's own defaults (7
#: retries with exponential backoff, 120 s timeout) hold one poll for minutes; the poller
#: retries anyway every ``poll_seconds``.
REGISTRY_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


class ModelSource(Protocol):
    """Where the manager gets models: the version to serve now, and how to load it."""

    @property
    def description(self) -> str:
        """What is served, for the log and the errors."""

    def current_ref(self) -> str:
        """The version that should be served now (cheap: one registry lookup)."""

    def load(self, ref: str) -> Scorer:
        """Load ``ref`` fully; raises :class:`ModelLoadError`."""


@dataclass
class DirectorySource:
    """A model directory served as is (``ctr serve --model-dir``): nothing to poll."""

    path: Path

    @property
    def description(self) -> str:
        """What is served, for the log and the errors."""
        return f"directory {self.path}"

    def current_ref(self) -> str:
        """The directory itself: it never changes."""
        return str(self.path)

    def load(self, ref: str) -> Scorer:
        """Load the directory; raises :class:`ModelLoadError`."""
        return load_scorer(ref, source="directory")


@dataclass
class RegistrySource:
    """The version behind ``alias`` of registered model ``model_name`` in the MLflow registry."""

    settings: Settings
    model_name: str = DEFAULT_MODEL_NAME
    alias: str = "champion"

    @property
    def description(self) -> str:
        """What is served, for the log and the errors: ``models:/<name>@<alias>`` and the store."""
        return f"models:/{self.model_name}@{self.alias} ({self.settings.mlflow_tracking_uri})"

    def _client(self):
        """A client of this source's store, named explicitly: the poller thread neither reads
        nor moves MLflow's process-wide URIs, which other code in the process may point elsewhere."""
        from mlflow import MlflowClient

        for name, value in REGISTRY_HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        uri = self.settings.mlflow_tracking_uri
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def _ask(self, call: Callable[[Any], Any], reason: str, what: str) -> Any:
        """``call(client)``, its failure as a :class:`ModelLoadError`: ``reason`` when the
        registry answered no (a 4xx: no such alias, model or version), :data:`REGISTRY_UNREACHABLE`
        when it could not answer (connection refused, timeout, 5xx, 429, a broken store)."""
        from mlflow.exceptions import MlflowException

        try:
            return call(self._client())
        except MlflowException as exc:
            status = exc.get_http_status_code()
            if status < 500 and status != 429:
                raise ModelLoadError(reason, f"{what}: {exc.message}") from None
            raise ModelLoadError(REGISTRY_UNREACHABLE, f"{what}: registry unreachable: {exc.message}") from None
        except Exception as exc:  # noqa: BLE001 - whatever the store raises, the registry did not answer
            raise ModelLoadError(REGISTRY_UNREACHABLE,
                                 f"{what}: registry unreachable: {type(exc).__name__}: {exc}") from None

    def current_ref(self) -> str:
        """The version the alias points at now; :class:`ModelLoadError` when it cannot be resolved."""
        mv = self._ask(lambda c: c.get_model_version_by_alias(self.model_name, self.alias), "alias_lookup",
                       f"cannot resolve {self.description}")
        return str(mv.version)

    def load(self, ref: str) -> Scorer:
        """Download and load version ``ref``, checking its files against the registered fingerprint."""
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException

        # no tqdm bars in the server log for each download (an explicit setting wins)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

        tags = self._ask(lambda c: c.get_model_version(self.model_name, ref).tags, "download",
                         f"cannot look up version {ref} of {self.model_name!r}")
        uri = tags.get(Tag.MODEL_DIR_URI)
        if not uri:
            raise ModelLoadError("download", f"version {ref} of {self.model_name!r} has no {Tag.MODEL_DIR_URI} tag")
        with tempfile.TemporaryDirectory(prefix=f"ctr-serve-{self.model_name}-v{ref}-") as tmp:
            try:
                model_dir = download_artifacts(artifact_uri=uri, dst_path=tmp,
                                               tracking_uri=self.settings.mlflow_tracking_uri)
            except (MlflowException, OSError, ValueError) as exc:
                raise ModelLoadError("download", f"cannot download version {ref} of {self.model_name!r} "
                                                 f"from {uri}: {getattr(exc, 'message', exc)}") from None
            # Everything the scorer needs is read into memory; the files can go.
            scorer = load_scorer(model_dir, version=ref, alias=self.alias, model_name=self.model_name,
                                 source="registry", location=uri)
        registered = tags.get(Tag.FEATURE_FINGERPRINT)
        if registered and registered != scorer.fingerprint:
            raise ModelLoadError("fingerprint_mismatch",
                                 f"version {ref} of {self.model_name!r} is registered with feature fingerprint "
                                 f"{registered}, its files have {scorer.fingerprint}")
        return scorer


class ModelManager:
    """Owns the served scorer and the alias poller.

    ``on_swap(old, new)`` and ``on_failure(reason, message)`` let the app record metrics.
    """

    def __init__(self, source: ModelSource, *, poll_seconds: float = DEFAULT_POLL_SECONDS,
                 retry_failed_seconds: float = DEFAULT_RETRY_FAILED_SECONDS,
                 on_swap: Callable[[Scorer | None, Scorer], None] | None = None,
                 on_failure: Callable[[str, str], None] | None = None):
        self.source = source
        self.poll_seconds = float(poll_seconds)
        self.retry_failed_seconds = float(retry_failed_seconds)
        self.current: Scorer | None = None
        self.on_swap = on_swap
        self.on_failure = on_failure
        self.last_error: str | None = None
        self.last_check: float | None = None
        #: Epoch seconds of the first failed registry call of the current outage (None: reachable).
        self.registry_unreachable_since: float | None = None
        self.registry_error: str | None = None
        self._failed: dict[str, float] = {}  # ref -> monotonic time of its last failed load
        self._lock = threading.Lock()  # one load at a time (poller vs. an explicit refresh)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def polling(self) -> bool:
        """Whether the manager follows a registry alias (a registry source and a poll interval)."""
        return isinstance(self.source, RegistrySource) and self.poll_seconds > 0

    def _fail(self, reason: str, message: str) -> None:
        self.last_error = f"{reason}: {message}"
        if reason != REGISTRY_UNREACHABLE:  # an outage is logged when it starts and ends, not every poll
            log.error("model load failed (%s): %s; still serving %s", reason, message,
                      self.current.version if self.current else "nothing")
        if self.on_failure:
            self.on_failure(reason, message)

    def _registry_answered(self, error: ModelLoadError | None = None) -> None:
        """Record whether the registry answered the last call: an outage starts at its first
        failed call and ends at the next answer (logged once each way, not every poll)."""
        if error is not None and error.reason == REGISTRY_UNREACHABLE:
            if self.registry_unreachable_since is None:
                self.registry_unreachable_since = time.time()
                log.warning("model registry unreachable; keeping version %s: %s",
                            self.current.version if self.current else "none", error)
            self.registry_error = str(error)
        elif self.registry_unreachable_since is not None:
            log.info("model registry reachable again after %.0f s", time.time() - self.registry_unreachable_since)
            self.registry_unreachable_since = self.registry_error = None

    def refresh(self, *, force: bool = False) -> bool:
        """Check the source once; load and swap when it names another version.
        Returns whether a swap happened. Never raises for a bad model or an unreachable
        registry: the old version stays."""
        with self._lock:
            self.last_check = time.time()
            try:
                ref = self.source.current_ref()
            except ModelLoadError as exc:
                self._registry_answered(exc)
                self._fail(exc.reason, str(exc))
                return False
            self._registry_answered()
            current = self.current
            if current is not None and self._ref_of(current) == ref and not force:
                self.last_error = None  # the alias names what is served: nothing is wrong now
                return False
            failed_at = self._failed.get(ref)
            if failed_at is not None and not force and time.monotonic() - failed_at < self.retry_failed_seconds:
                return False
            started = time.perf_counter()
            try:
                new = self.source.load(ref)
            except ModelLoadError as exc:
                self._registry_answered(exc)
                if exc.reason != REGISTRY_UNREACHABLE:  # an outage says nothing about the version: retry next poll
                    self._failed[ref] = time.monotonic()
                self._fail(exc.reason, str(exc))
                return False
            except Exception as exc:  # noqa: BLE001 - a broken artifact must never stop serving
                self._failed[ref] = time.monotonic()
                self._fail("unexpected", f"{type(exc).__name__}: {exc}")
                return False
            self._failed.pop(ref, None)
            if current is not None and new.fingerprint == current.fingerprint:
                # The same feature spec (the fingerprint covers everything hashing depends on):
                # keep the serving featurizer, whose caches are warm and hold only what any
                # instance computes, so the first requests after a swap cost no more than the
                # others and a swap leaves no second set of caches behind.
                new = dataclasses.replace(new, featurizer=current.featurizer)
            self.current = new  # the swap: one reference assignment
            self.last_error = None
            log.info("serving model version %s (%s, fingerprint %s) after %.0f ms load; previous: %s",
                     new.version, self.source.description, new.fingerprint[:12],
                     (time.perf_counter() - started) * 1000, current.version if current else "none")
            if self.on_swap:
                self.on_swap(current, new)
            return True

    def _ref_of(self, scorer: Scorer) -> str:
        return scorer.version if isinstance(self.source, RegistrySource) else scorer.model_dir

    def start(self) -> None:
        """Start the alias poller (registry sources with ``poll_seconds > 0`` only)."""
        if not self.polling or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ctr-model-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep polling whatever happens
                log.exception("model poller iteration failed")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the poller thread, waiting up to ``timeout`` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
