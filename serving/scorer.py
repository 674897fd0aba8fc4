"""The immutable scorer the endpoint holds: one verified model plus its featurizer.

A :class:`Scorer` is built once, aside, by :func:`load_scorer` and never changed; a hot
swap replaces the whole object with one reference assignment, so a request that grabbed
the reference scores every record with one version.

Loading reads only the plain files through the shared model contract
(:mod:`shared.model.format`: checksums first, ``allow_pickle=False``, every file a part
the server can apply or one the writer declared ignorable) and refuses a model whose spec
fingerprint cannot be reproduced from its own ``feature_spec.toml``
(:func:`shared.model.format.check_spec`: weights trained on other features would score
garbage without any error).

Scoring takes each record's feature entries from the record path
(``Featurizer.record_entries``: the entries ``transform_record`` would sort and sum, left
as Python lists) and sums all records' weights per record with
:func:`shared.model.scoring.sparse_margin` (float64, in entry order), so a record gets the
same CTR alone or in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shared.aggregates import AggregateSnapshot
from shared.errors import ArtifactError, InputError
from shared.featurize import FeatureSpec, FeaturizeError, Featurizer
from shared.model.bundle import SegmentBundle, load_bundle
from shared.model.format import (
    IGNORE,
    PARTS,
    SEGMENTS_FILE,
    SEGMENTS_META,
    WEIGHTS_FILE,
    LoadedModel,
    ModelDirError,
    SpecCheckError,
    UnknownPartsError,
    check_spec,
    load_model_dir,
)
from shared.model.scoring import sigmoid, sparse_margin
from shared.openrtb import RAW_FIELD_NAMES


class ModelLoadError(ArtifactError):
    """A model that must not be served; ``reason`` is a short code for metrics."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class RecordError(InputError):
    """A record that cannot be scored; ``kind`` is ``unknown_field`` or ``bad_value``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, eq=False)
class Scorer:
    """A loaded model version, ready to score raw feature records. Immutable."""

    version: str
    alias: str | None
    model_name: str | None
    source: str  # "registry" or "directory"
    fingerprint: str
    spec: FeatureSpec
    featurizer: Featurizer = field(repr=False)
    dense_weights: np.ndarray = field(repr=False)
    intercept: float
    n_nonzero: int
    created_at: str | None
    loaded_at: datetime
    model_dir: str
    #: Keys a record may carry: the spec's inputs plus every OpenRTB raw field name.
    accepted_fields: frozenset[str] = field(repr=False, default=frozenset())
    #: The aggregate-feature snapshot trained with the model (None when the spec uses none):
    #: its values replace whatever the request carries for those columns.
    aggregates: AggregateSnapshot | None = field(repr=False, default=None)
    #: A per-segment bundle (``ctr train --per-segment``): records whose segment column has a
    #: segment model are scored by it, the others by the global model (the dense weights).
    segments: SegmentBundle | None = field(repr=False, default=None)

    def entries(self, records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Feature entries of ``records``: (indices, values or None when all are 1.0, row of
        each entry); :class:`RecordError` naming the record and the field."""
        accepted = self.accepted_fields
        for i, rec in enumerate(records):
            if not accepted.issuperset(rec):
                unknown = sorted(k for k in rec if k not in accepted)
                raise RecordError("unknown_field", f"records[{i}].fields: unknown field(s) {', '.join(map(repr, unknown))}; "
                                  f"the model reads {', '.join(self.spec.input_columns)}")
        if self.aggregates is not None:
            records = [self.aggregates.enrich(rec) for rec in records]
        entries = self.featurizer.record_entries
        idx: list[int] = []
        vals: list[float] = []  # stays empty when the spec has no raw-valued field (then every value is 1.0)
        lengths: list[int] = []
        for i, rec in enumerate(records):
            try:
                ri, rv = entries(rec)
            except (FeaturizeError, TypeError, ValueError) as exc:
                raise RecordError("bad_value", f"records[{i}].fields: {exc}") from None
            lengths.append(len(ri))
            idx += ri
            if rv is not None:
                vals += rv
        # one record (the common bid): all rows 0, ~1 us cheaper than np.repeat
        rows = (np.zeros(len(idx), dtype=np.intp) if len(records) == 1
                else np.repeat(np.arange(len(records), dtype=np.intp), lengths))
        return np.array(idx, dtype=np.int32), np.array(vals, dtype=np.float64) if vals else None, rows

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> list[float]:
        """Click probabilities of raw feature records (one or a batch: each record's
        entries are summed in the same order either way, so its CTR is the same)."""
        if not records:
            return []
        idx, vals, rows = self.entries(records)
        if self.segments is not None:
            bundle = self.segments
            positions = bundle.positions([_segment_key(rec.get(bundle.segment_column)) for rec in records])
            z = bundle.margins(positions, idx, np.ones(len(idx)) if vals is None else vals, rows)
            return sigmoid(z).tolist()
        z = sparse_margin(idx, vals, rows, len(records), self.dense_weights) + self.intercept
        return sigmoid(z).tolist()

    def describe(self) -> dict[str, Any]:
        """The served model as ``GET /v1/model`` reports it."""
        return {
            "model_name": self.model_name,
            "version": self.version,
            "alias": self.alias,
            "source": self.source,
            "spec_fingerprint": self.fingerprint,
            "spec_name": self.spec.name,
            "spec_version": self.spec.version,
            "n_features": self.spec.num_features,
            "n_nonzero": self.n_nonzero,
            "created_at": self.created_at,
            "loaded_at": self.loaded_at.isoformat(timespec="milliseconds"),
            "model_dir": self.model_dir,
            "input_fields": list(self.spec.input_columns),
            "segment_column": self.segments.segment_column if self.segments is not None else None,
            "n_segments": int(self.segments.keys.size) if self.segments is not None else None,
        }


def _segment_key(value: Any) -> str | None:
    """A record's segment key as training wrote it (the warehouse column cast to string):
    strings as they are, integers in decimal; anything else has no segment model."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def scorer_from_loaded(model: LoadedModel, *, version: str, alias: str | None = None,
                       model_name: str | None = None, source: str = "directory",
                       location: str | None = None, segments: SegmentBundle | None = None) -> Scorer:
    """Check a verified model's spec against its fingerprint and build the scorer."""
    try:
        spec = check_spec(model)
    except SpecCheckError as exc:
        raise ModelLoadError(exc.reason, str(exc)) from None
    featurizer = Featurizer(spec)
    # Warm the record path once so the first request does not pay for lazy set-up.
    featurizer.record_entries({})
    return Scorer(
        version=str(version), alias=alias, model_name=model_name, source=source,
        fingerprint=spec.fingerprint, spec=spec, featurizer=featurizer,
        dense_weights=model.dense_weights, intercept=float(model.intercept),
        n_nonzero=int(model.indices.size), created_at=model.metadata.get("created_at"),
        loaded_at=datetime.now(timezone.utc), model_dir=location or str(model.path),
        accepted_fields=frozenset(spec.input_columns) | frozenset(RAW_FIELD_NAMES),
        aggregates=model.aggregate_snapshot(), segments=segments,
    )


def _model_dir_reason(message: str) -> str:
    """The metric reason of a model directory :func:`load_model_dir` refused: a file changed
    since training (``checksum_mismatch``), deleted (``missing_files``), or anything else."""
    if "checksum mismatch" in message:
        return "checksum_mismatch"
    return "missing_files" if message.endswith(" is missing") else "bad_model_dir"


def load_scorer(model_dir: str | Path, *, version: str | None = None, alias: str | None = None,
                model_name: str | None = None, source: str = "directory", location: str | None = None) -> Scorer:
    """Verify and load a plain model directory into a :class:`Scorer`.

    ``version`` defaults to ``dir:<first 12 hex of the weights checksum>`` (a directory
    served directly has no registry version). ``location`` is what ``/v1/model`` reports
    as the model's place (default: the directory)."""
    try:
        model = load_model_dir(model_dir)
    except UnknownPartsError as exc:  # a file this server cannot apply: scoring without it would be silently wrong
        known = ", ".join(name for name, part in PARTS.items() if part.role != IGNORE)
        raise ModelLoadError("unsupported_model_files",
                             f"{model_dir}: this server does not know how to apply {', '.join(exc.files)}; "
                             f"it serves models made of {known} only (and files declared "
                             f"{IGNORE!r} in model.json \"parts\", which it skips)") from None
    except ModelDirError as exc:
        raise ModelLoadError(_model_dir_reason(str(exc)), str(exc)) from None
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError("bad_model_dir", f"{model_dir}: {type(exc).__name__}: {exc}") from None
    segments = None
    if SEGMENTS_FILE in model.checksums or SEGMENTS_META in model.checksums:
        try:
            segments = load_bundle(model_dir, loaded=model)
        except ModelDirError as exc:
            raise ModelLoadError("bad_model_dir", str(exc)) from None
    if version is None:
        version = "dir:" + model.checksums[WEIGHTS_FILE][:12]
    return scorer_from_loaded(model, version=version, alias=alias, model_name=model_name, source=source,
                              location=location, segments=segments)
