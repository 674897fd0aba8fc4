"""The ground-truth click model of generated ad logs, as pure functions.

The model is a logistic model over the RAW field values that
:func:`shared.openrtb.impression_fields` produces, so the true click probability
of an impression is a function of exactly what the warehouse sees (the raw
fields plus the UTC date of the event, which decides pre/post drift):

    logit = base_logit (+ drift.base_shift once drifted)
          + sum over fields f of effects[f][key(value_f)]        (list fields: sum over elements)
          + sum over hashed effects h of hashed(h, value_h)         (high-cardinality fields, e.g. user_id)
          + sum over interactions (a, b) of effects[key(a)][key(b)]
    p = 1 / (1 + exp(-logit))

Values missing from a table contribute 0; ``None`` fields contribute 0. From the
drift date on, entries in ``drift.effects`` / ``drift.interactions`` replace (or add
to the tables) the corresponding base entries. ``key(value)`` is ``str(value)``
(``4`` -> ``"4"``), so JSON tables are keyed by strings.

The generator builds the model (:func:`synthetic.effects.build_truth_model`); this
module only evaluates and (de)serializes it, and is what evaluation code should import.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import mmh3

from shared.openrtb import RAW_FIELD_NAMES

FORMAT_VERSION = 1


@dataclass(frozen=True)
class HashedEffect:
    """Effect of a high-cardinality field without a table: a deterministic
    function of the value, uniform on [-scale*sqrt(3), +scale*sqrt(3)] (sd = scale)."""

    field: str
    scale: float
    salt: int


@dataclass(frozen=True)
class Interaction:
    """Pairwise effect: ``effects[key(value_a)][key(value_b)]`` for fields (a, b)."""

    fields: tuple[str, str]
    effects: Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class Drift:
    """From ``date`` (day index ``day`` of the generated range) on, these entries
    replace or extend the base tables, and ``base_shift`` is added to the logit."""

    day: int
    date: date
    base_shift: float = 0.0
    effects: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    interactions: tuple[Interaction, ...] = ()


@dataclass(frozen=True)
class TruthModel:
    """The logistic ground truth: base logit, effect tables, hashed effects, interactions, drift."""

    base_logit: float
    effects: Mapping[str, Mapping[str, float]]
    hashed: tuple[HashedEffect, ...] = ()
    interactions: tuple[Interaction, ...] = ()
    drift: Drift | None = None

    def __post_init__(self) -> None:
        names = set(RAW_FIELD_NAMES)
        used = list(self.effects) + [h.field for h in self.hashed]
        used += [f for i in self.interactions for f in i.fields]
        if self.drift is not None:
            used += list(self.drift.effects) + [f for i in self.drift.interactions for f in i.fields]
        unknown = sorted(set(used) - names)
        if unknown:
            raise ValueError(f"truth model uses fields that impression_fields does not produce: {unknown}")


def value_key(value: Any) -> str:
    """The table key of a raw field value (``str``; ints as decimal)."""
    return value if isinstance(value, str) else str(value)


def hashed_value(effect: HashedEffect, value: Any) -> float:
    """The hashed effect of one value (0 for None)."""
    if value is None:
        return 0.0
    h = mmh3.hash(value_key(value), effect.salt, signed=False)
    u = (h + 0.5) / 4294967296.0  # in (0, 1)
    return effect.scale * math.sqrt(3.0) * (2.0 * u - 1.0)


def _as_date(when: date | datetime) -> date:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.astimezone(timezone.utc).date()
    return when


def is_drifted(model: TruthModel, when: date | datetime) -> bool:
    """Whether the post-drift model applies at ``when`` (UTC date >= drift date)."""
    return model.drift is not None and _as_date(when) >= model.drift.date


def effect_value(model: TruthModel, field_name: str, key: str, drifted: bool) -> float:
    """Table effect of one key of one field (0 when absent)."""
    if drifted and model.drift is not None:
        override = model.drift.effects.get(field_name)
        if override is not None and key in override:
            return override[key]
    table = model.effects.get(field_name)
    return table.get(key, 0.0) if table is not None else 0.0


def interaction_value(model: TruthModel, index: int, key_a: str, key_b: str, drifted: bool) -> float:
    """Effect of the ``index``-th interaction for one pair of keys (0 when absent)."""
    inter = model.interactions[index]
    if drifted and model.drift is not None:
        for over in model.drift.interactions:
            if over.fields == inter.fields:
                row = over.effects.get(key_a)
                if row is not None and key_b in row:
                    return row[key_b]
    row = inter.effects.get(key_a)
    return row.get(key_b, 0.0) if row is not None else 0.0


def logit(model: TruthModel, fields: Mapping[str, Any], when: date | datetime) -> float:
    """True click log-odds of an impression with raw ``fields`` at ``when`` (its UTC date decides drift)."""
    drifted = is_drifted(model, when)
    z = model.base_logit
    if drifted:
        z += model.drift.base_shift  # type: ignore[union-attr]
    for name in model.effects:
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            for v in value:
                z += effect_value(model, name, value_key(v), drifted)
        else:
            z += effect_value(model, name, value_key(value), drifted)
    for h in model.hashed:
        z += hashed_value(h, fields.get(h.field))
    for i, inter in enumerate(model.interactions):
        a, b = fields.get(inter.fields[0]), fields.get(inter.fields[1])
        if a is None or b is None:
            continue
        z += interaction_value(model, i, value_key(a), value_key(b), drifted)
    return z


def sigmoid(z: float) -> float:
    """The logistic function, without overflow for large ``|z|``."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def p_true(model: TruthModel, fields: Mapping[str, Any], when: date | datetime) -> float:
    """True click probability of an impression with raw ``fields`` at ``when``."""
    return sigmoid(logit(model, fields, when))


# ---------------------------------------------------------------- (de)serialization

def _inter_to_dict(i: Interaction) -> dict[str, Any]:
    return {"fields": list(i.fields), "effects": {a: dict(row) for a, row in i.effects.items()}}


def _inter_from_dict(d: Mapping[str, Any]) -> Interaction:
    a, b = d["fields"]
    return Interaction((a, b), {k: {kk: float(vv) for kk, vv in row.items()} for k, row in d["effects"].items()})


def to_dict(model: TruthModel) -> dict[str, Any]:
    """The model as the JSON document of ``truth/model.json``."""
    out: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": "logistic",
        "formula": (
            "logit = base_logit [+ drift.base_shift] + sum_f effects[f][str(value_f)] "
            "(list fields: sum over elements) + sum_h hashed(h, value_h) + sum_(a,b) interactions[a,b][str(a)][str(b)]; "
            "p = sigmoid(logit). Missing keys and None values contribute 0. "
            "From drift.date (UTC date of the event) on, drift.effects / drift.interactions entries replace the base entries. "
            "hashed(h, v) = h.scale * sqrt(3) * (2 * (mmh3.hash(str(v), h.salt, signed=False) + 0.5) / 2**32 - 1)."
        ),
        "base_logit": model.base_logit,
        "effects": {name: dict(table) for name, table in model.effects.items()},
        "hashed": [{"field": h.field, "scale": h.scale, "salt": h.salt} for h in model.hashed],
        "interactions": [_inter_to_dict(i) for i in model.interactions],
        "drift": None,
    }
    if model.drift is not None:
        d = model.drift
        out["drift"] = {
            "day": d.day,
            "date": d.date.isoformat(),
            "base_shift": d.base_shift,
            "effects": {name: dict(table) for name, table in d.effects.items()},
            "interactions": [_inter_to_dict(i) for i in d.interactions],
        }
    return out


def from_dict(d: Mapping[str, Any]) -> TruthModel:
    """The model of a ``truth/model.json`` document (:func:`to_dict`'s inverse)."""
    if d.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported truth model format_version {d.get('format_version')!r}")
    drift = None
    if d.get("drift"):
        dd = d["drift"]
        drift = Drift(
            day=int(dd["day"]),
            date=date.fromisoformat(dd["date"]),
            base_shift=float(dd.get("base_shift", 0.0)),
            effects={k: {kk: float(vv) for kk, vv in t.items()} for k, t in dd.get("effects", {}).items()},
            interactions=tuple(_inter_from_dict(i) for i in dd.get("interactions", [])),
        )
    return TruthModel(
        base_logit=float(d["base_logit"]),
        effects={k: {kk: float(vv) for kk, vv in t.items()} for k, t in d["effects"].items()},
        hashed=tuple(HashedEffect(h["field"], float(h["scale"]), int(h["salt"])) for h in d.get("hashed", [])),
        interactions=tuple(_inter_from_dict(i) for i in d.get("interactions", [])),
        drift=drift,
    )


def load(path: str | Path) -> TruthModel:
    """Read ``truth/model.json``; extra descriptive keys (e.g. ``summary``) are ignored."""
    return from_dict(json.loads(Path(path).read_text()))
