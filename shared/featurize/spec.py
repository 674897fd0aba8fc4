"""Feature specs: versioned, declarative TOML describing one model's features.

Format (read with :mod:`tomllib`; unknown keys are errors, so a typo cannot pass silently)::

    version = 1                    # the spec's own version (positive integer)
    name = "generated"             # a short identifier
    bits = 22                      # hash space 2**bits, 18..26
    seed = 0                       # MurmurHash3 seed, 0..2**32-1
    missing_token = "__missing__"  # the token hashed for a missing value

    [[fields]]
    name = "site_id"               # the column / record key
    kind = "categorical"           # categorical | multivalued | numeric
    alias = "site"                 # optional hashing namespace (default: name)

    [[fields]]
    name = "user_segments"
    kind = "multivalued"           # a list of strings, one feature per distinct value

    [[fields]]
    name = "bidfloor"
    kind = "numeric"
    transform = "buckets"          # log_bucket | buckets | raw
    boundaries = [0.1, 0.5, 1, 5]  # buckets: strictly increasing, finite

    [[fields]]
    name = "score"
    kind = "numeric"
    transform = "raw"
    clip = [0.0, 1.0]              # raw: finite [lo, hi], lo < hi

    [[crosses]]
    fields = ["site_id", "advertiser_id"]   # two or three categorical / bucketed fields
    name = "site_x_adv"            # optional namespace (default: names joined by "_x_")

Names and namespaces match ``[A-Za-z_][A-Za-z0-9_.-]*`` and every namespace (field
aliases and cross names) is unique. A spec holds at most 255 fields and crosses.
What each kind emits is documented in :mod:`shared.featurize.featurizer`.

:attr:`FeatureSpec.fingerprint` is the sha256 of the normalised spec (every default
filled in, fields and crosses ordered by name, floats as float64, the hashing scheme
version included): TOML key order, whitespace, comments and the order of
``[[fields]]`` blocks do not change it; any change to what is hashed does.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

from shared.errors import ConfigurationError
from shared.featurize.canonical import canonical
from shared.limits import MiB, read_text_limited

#: Version of the hashing scheme (key layout, canonical forms); part of every fingerprint.
HASHING_SCHEME = "ctr-featurize/1"
MIN_BITS, MAX_BITS = 18, 26
MAX_FEATURES = 255
#: Largest feature-spec TOML file read (a real spec is a few KiB): :class:`SpecError` above it.
MAX_SPEC_BYTES = 1 * MiB
KINDS = ("categorical", "multivalued", "numeric")
TRANSFORMS = ("log_bucket", "buckets", "raw")
SPECS_DIR = Path(__file__).resolve().parents[1] / "specs"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_TOP_KEYS = {"version", "name", "bits", "seed", "missing_token", "fields", "crosses"}
_FIELD_KEYS = {
    "categorical": {"name", "kind", "alias"},
    "multivalued": {"name", "kind", "alias"},
    "numeric": {"name", "kind", "alias", "transform"},
}
_TRANSFORM_KEYS = {"log_bucket": set(), "buckets": {"boundaries"}, "raw": {"clip"}}
_CROSS_KEYS = {"fields", "name"}
_FLOAT32_MAX = 3.4028234663852886e38


class SpecError(ConfigurationError):
    """A feature spec that is malformed, or does not fit the data it is applied to."""


@dataclass(frozen=True)
class Field:
    """One raw input field of a spec: its kind and, for numeric fields, the transform."""

    name: str
    kind: str
    alias: str | None = None
    transform: str | None = None
    boundaries: tuple[float, ...] | None = None
    clip: tuple[float, float] | None = None

    @property
    def namespace(self) -> str:
        """The prefix hashed with every value of this field."""
        return self.alias or self.name

    @property
    def crossable(self) -> bool:
        """Whether the field yields one token per record (categorical or bucketed numeric)."""
        return self.kind == "categorical" or (self.kind == "numeric" and self.transform != "raw")

    def normalized(self) -> dict[str, Any]:
        """The field as it enters the spec fingerprint."""
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "namespace": self.namespace}
        if self.kind == "numeric":
            d["transform"] = self.transform
            if self.boundaries is not None:
                d["boundaries"] = list(self.boundaries)
            if self.clip is not None:
                d["clip"] = list(self.clip)
        return d


@dataclass(frozen=True)
class Cross:
    """A cross of two or three fields, hashed under its own name."""

    fields: tuple[str, ...]
    name: str

    def normalized(self) -> dict[str, Any]:
        """The cross as it enters the spec fingerprint."""
        return {"name": self.name, "fields": list(self.fields)}


@dataclass(frozen=True)
class FeatureSpec:
    """A validated feature spec. Build it with :func:`load_spec` or :meth:`from_dict`."""

    name: str
    version: int
    bits: int
    seed: int
    missing_token: str
    fields: tuple[Field, ...]
    crosses: tuple[Cross, ...] = ()

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> "FeatureSpec":
        """Parse and validate a spec from TOML text; :class:`SpecError` names ``source``."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"{source}: not valid TOML: {e}") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "FeatureSpec":
        """Validate a spec from parsed TOML; :class:`SpecError` names ``source``."""
        return _parse(data, source)

    @property
    def num_features(self) -> int:
        """Width of the hashed feature space: ``2**bits``."""
        return 1 << self.bits

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The raw columns the spec reads, in declared order."""
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        """The field called ``name``; KeyError when the spec has none."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The normalised spec (the fingerprint's input)."""
        return {
            "scheme": HASHING_SCHEME,
            "name": self.name,
            "version": self.version,
            "bits": self.bits,
            "seed": self.seed,
            "missing_token": self.missing_token,
            "fields": [f.normalized() for f in sorted(self.fields, key=lambda f: f.name)],
            "crosses": [c.normalized() for c in sorted(self.crosses, key=lambda c: c.name)],
        }

    def to_toml(self) -> str:
        """The spec as a TOML file that :meth:`from_toml` reads back to the same fingerprint
        (used to store a spec derived in code, e.g. with other ``bits``, beside a model)."""
        def value(v: Any) -> str:
            if isinstance(v, str):
                return json.dumps(v, ensure_ascii=False)  # JSON string escapes are valid TOML
            if isinstance(v, (list, tuple)):
                return "[" + ", ".join(value(x) for x in v) + "]"
            return repr(v)

        lines = [f"{k} = {value(getattr(self, k))}" for k in ("version", "name", "bits", "seed", "missing_token")]
        for f in self.fields:
            lines += ["", "[[fields]]", f"name = {value(f.name)}", f"kind = {value(f.kind)}"]
            for key in ("alias", "transform", "boundaries", "clip"):
                if getattr(f, key) is not None:
                    lines.append(f"{key} = {value(getattr(f, key))}")
        for c in self.crosses:
            lines += ["", "[[crosses]]", f"name = {value(c.name)}", f"fields = {value(c.fields)}"]
        return "\n".join(lines) + "\n"

    @cached_property
    def fingerprint(self) -> str:
        """sha256 hex of the normalised spec."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def validate_columns(self, columns: Iterable[str]) -> None:
        """Raise :class:`SpecError` naming every spec field that ``columns`` lacks."""
        available = set(columns)
        missing = [f.name for f in self.fields if f.name not in available]
        if missing:
            raise SpecError(
                f"spec {self.name!r} v{self.version}: unknown field(s) {', '.join(missing)}: "
                f"not among the available columns ({', '.join(sorted(available)) or 'none'})"
            )


def _require(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise SpecError(f"{where}: missing required key {key!r}")
    return data[key]


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise SpecError(f"{where} must be in {lo}..{hi}, got {value}")
    return value


def _identifier(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise SpecError(f"{where} must match [A-Za-z_][A-Za-z0-9_.-]*, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{where} must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise SpecError(f"{where} must be finite, got {value!r}")
    return x


def _parse_field(raw: Any, where: str) -> Field:
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where} must be a table")
    name = _identifier(_require(raw, "name", where), f"{where}.name")
    where = f"field {name!r}"
    kind = _require(raw, "kind", where)
    if kind not in KINDS:
        raise SpecError(f"{where}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    alias = raw.get("alias")
    if alias is not None:
        alias = _identifier(alias, f"{where}.alias")
    if kind != "numeric":
        _check_keys(raw, _FIELD_KEYS[kind], where)
        return Field(name, kind, alias)
    transform = _require(raw, "transform", where)
    if transform not in TRANSFORMS:
        raise SpecError(f"{where}: unknown transform {transform!r} (expected one of {', '.join(TRANSFORMS)})")
    _check_keys(raw, _FIELD_KEYS[kind] | _TRANSFORM_KEYS[transform], where)
    boundaries = clip = None
    if transform == "buckets":
        b = _require(raw, "boundaries", where)
        if not isinstance(b, list) or not b:
            raise SpecError(f"{where}.boundaries must be a non-empty list of numbers")
        boundaries = tuple(_number(x, f"{where}.boundaries[{i}]") for i, x in enumerate(b))
        if any(x >= y for x, y in zip(boundaries, boundaries[1:])):
            raise SpecError(f"{where}.boundaries must be strictly increasing, got {list(boundaries)}")
    elif transform == "raw":
        c = _require(raw, "clip", where)
        if not isinstance(c, list) or len(c) != 2:
            raise SpecError(f"{where}.clip must be [lo, hi]")
        lo, hi = (_number(x, f"{where}.clip") for x in c)
        if not lo < hi:
            raise SpecError(f"{where}.clip must have lo < hi, got [{lo}, {hi}]")
        if max(abs(lo), abs(hi)) > _FLOAT32_MAX:
            raise SpecError(f"{where}.clip must lie within the float32 range")
        clip = (lo, hi)
    return Field(name, kind, alias, transform, boundaries, clip)


def _parse_cross(raw: Any, where: str, by_name: Mapping[str, Field]) -> Cross:
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where} must be a table")
    _check_keys(raw, _CROSS_KEYS, where)
    names = _require(raw, "fields", where)
    if not isinstance(names, list) or not 2 <= len(names) <= 3 or not all(isinstance(n, str) for n in names):
        raise SpecError(f"{where}.fields must list two or three field names, got {names!r}")
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: crosses a field with itself: {names}")
    for n in names:
        if n not in by_name:
            raise SpecError(f"{where}: field {n!r} is not in the spec")
        field = by_name[n]
        if not field.crossable:
            raise SpecError(f"{where}: field {n!r} ({field.kind}"
                            f"{'/' + field.transform if field.transform else ''}) cannot be crossed; "
                            "only categorical and bucketed numeric fields can")
    name = raw.get("name")
    name = _identifier(name, f"{where}.name") if name is not None else "_x_".join(names)
    return Cross(tuple(names), name)


def _parse(data: Mapping[str, Any], source: str) -> FeatureSpec:
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: a spec must be a table")
    _check_keys(data, _TOP_KEYS, source)
    name = _identifier(_require(data, "name", source), f"{source}: name")
    where = f"{source} (spec {name!r})"
    version = _int(_require(data, "version", where), f"{where}: version", 1, 2**31 - 1)
    bits = _int(_require(data, "bits", where), f"{where}: bits", MIN_BITS, MAX_BITS)
    seed = _int(_require(data, "seed", where), f"{where}: seed", 0, 2**32 - 1)
    missing = _require(data, "missing_token", where)
    if not isinstance(missing, str) or canonical(missing) != missing:
        raise SpecError(f"{where}: missing_token must be a non-empty NFC string without surrounding "
                        f"whitespace, got {missing!r}")
    raw_fields = _require(data, "fields", where)
    if not isinstance(raw_fields, list) or not raw_fields:
        raise SpecError(f"{where}: fields must be a non-empty array of tables ([[fields]])")
    fields = tuple(_parse_field(f, f"{where}: fields[{i}]") for i, f in enumerate(raw_fields))
    by_name: dict[str, Field] = {}
    for f in fields:
        if f.name in by_name:
            raise SpecError(f"{where}: duplicate field name {f.name!r}")
        by_name[f.name] = f
    raw_crosses = data.get("crosses", [])
    if not isinstance(raw_crosses, list):
        raise SpecError(f"{where}: crosses must be an array of tables ([[crosses]])")
    crosses = tuple(_parse_cross(c, f"{where}: crosses[{i}]", by_name) for i, c in enumerate(raw_crosses))
    seen: dict[str, str] = {}
    for ns, owner in [(f.namespace, f"field {f.name!r}") for f in fields] + [(c.name, "a cross") for c in crosses]:
        if ns in seen:
            raise SpecError(f"{where}: duplicate namespace {ns!r} ({seen[ns]} and {owner})")
        seen[ns] = owner
    if len(fields) + len(crosses) > MAX_FEATURES:
        raise SpecError(f"{where}: at most {MAX_FEATURES} fields and crosses, got {len(fields) + len(crosses)}")
    return FeatureSpec(name, version, bits, seed, missing, fields, crosses)


def shipped_specs() -> tuple[str, ...]:
    """Names of the specs in ``shared/specs``."""
    return tuple(sorted(p.stem for p in SPECS_DIR.glob("*.toml")))


def load_spec(spec: "str | Path | FeatureSpec") -> FeatureSpec:
    """A shipped spec by name (``"generated"``, ``"criteo"``, ``"avazu"``), or a TOML file path."""
    if isinstance(spec, FeatureSpec):
        return spec
    path = Path(spec)
    if isinstance(spec, str) and _NAME.fullmatch(spec) and not spec.endswith(".toml"):
        shipped = SPECS_DIR / f"{spec}.toml"
        if shipped.is_file():
            path = shipped
        elif not path.is_file():
            raise SpecError(f"no shipped spec named {spec!r} (shipped: {', '.join(shipped_specs())})")
    try:
        text = read_text_limited(path, MAX_SPEC_BYTES, "feature spec", SpecError)
    except OSError as e:
        raise SpecError(f"cannot read spec {str(path)!r}: {e.strerror or e}") from None
    return FeatureSpec.from_toml(text, str(path))
