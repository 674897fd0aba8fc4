"""Feature spec parsing, validation errors, fingerprints and the shipped specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.featurize import FeatureSpec, SpecError, load_spec, shipped_specs
from shared.openrtb import RAW_FIELD_NAMES

GOLDEN = Path(__file__).parent / "golden"

BASE = """
version = 1
name = "t"
bits = 20
seed = 7
missing_token = "__missing__"

[[fields]]
name = "a"
kind = "categorical"

[[fields]]
name = "b"
kind = "numeric"
transform = "buckets"
boundaries = [0, 1.5, 10]

[[fields]]
name = "r"
kind = "numeric"
transform = "raw"
clip = [0, 1]

[[fields]]
name = "m"
kind = "multivalued"

[[crosses]]
fields = ["a", "b"]
"""


def parse(text: str) -> FeatureSpec:
    return FeatureSpec.from_toml(text, "test.toml")


def test_base_spec_parses_with_defaults():
    spec = parse(BASE)
    assert spec.input_columns == ("a", "b", "r", "m")
    assert spec.field("b").boundaries == (0.0, 1.5, 10.0)
    assert spec.field("r").clip == (0.0, 1.0)
    assert spec.crosses[0].name == "a_x_b"
    assert spec.num_features == 2**20
    assert spec.field("a").namespace == "a"


@pytest.mark.parametrize("old, new, message", [
    ('bits = 20', 'bits = 17', "bits must be in 18..26, got 17"),
    ('bits = 20', 'bits = 27', "bits must be in 18..26, got 27"),
    ('bits = 20', 'bits = "20"', "bits must be an integer"),
    ('bits = 20', 'bits = true', "bits must be an integer"),
    ('bits = 20\n', '', "missing required key 'bits'"),
    ('seed = 7', 'seed = -1', "seed must be in 0..4294967295"),
    ('seed = 7', 'seed = 4294967296', "seed must be in"),
    ('missing_token = "__missing__"', 'missing_token = ""', "missing_token must be a non-empty NFC string"),
    ('missing_token = "__missing__"', 'missing_token = " x"', "missing_token must be"),
    ('version = 1', 'version = 0', "version must be in 1.."),
    ('name = "t"', 'name = "has space"', "name must match"),
    ('kind = "categorical"', 'kind = "categorial"', "field 'a': unknown kind 'categorial'"),
    ('transform = "buckets"', 'transform = "bucket"', "field 'b': unknown transform 'bucket'"),
    ('transform = "buckets"\nboundaries = [0, 1.5, 10]', 'transform = "buckets"',
     "field 'b': missing required key 'boundaries'"),
    ('boundaries = [0, 1.5, 10]', 'boundaries = [0, 10, 1.5]', "boundaries must be strictly increasing"),
    ('boundaries = [0, 1.5, 10]', 'boundaries = [0, 0, 1]', "boundaries must be strictly increasing"),
    ('boundaries = [0, 1.5, 10]', 'boundaries = []', "boundaries must be a non-empty list"),
    ('boundaries = [0, 1.5, 10]', 'boundaries = [0, inf]', "boundaries[1] must be finite"),
    ('clip = [0, 1]', 'clip = [1, 0]', "clip must have lo < hi"),
    ('clip = [0, 1]', 'clip = [0]', "clip must be [lo, hi]"),
    ('clip = [0, 1]', 'clip = [0, 1e39]', "within the float32 range"),
    ('clip = [0, 1]', 'clip = [0, 1]\nboundaries = [1]', "field 'r': unknown key(s) boundaries"),
    ('kind = "categorical"', 'kind = "categorical"\ntransform = "raw"', "field 'a': unknown key(s) transform"),
    ('kind = "categorical"', 'kind = "categorical"\ntranform = "raw"', "unknown key(s) tranform"),
    ('name = "m"', 'name = "a"', "duplicate field name 'a'"),
    ('fields = ["a", "b"]', 'fields = ["a", "zz"]', "field 'zz' is not in the spec"),
    ('fields = ["a", "b"]', 'fields = ["a"]', "must list two or three field names"),
    ('fields = ["a", "b"]', 'fields = ["a", "b", "a", "b"]', "must list two or three field names"),
    ('fields = ["a", "b"]', 'fields = ["a", "a"]', "crosses a field with itself"),
    ('fields = ["a", "b"]', 'fields = ["a", "r"]', "field 'r' (numeric/raw) cannot be crossed"),
    ('fields = ["a", "b"]', 'fields = ["a", "m"]', "field 'm' (multivalued) cannot be crossed"),
    ('fields = ["a", "b"]', 'fields = ["a", "b"]\nname = "a"', "duplicate namespace 'a'"),
    ('name = "m"\nkind = "multivalued"', 'name = "m"\nkind = "multivalued"\nalias = "b"',
     "duplicate namespace 'b'"),
    ('seed = 7', 'seed = 7\ncolour = "red"', "unknown key(s) colour"),
    ('name = "t"', 'name = "t"\nname = "u"', "not valid TOML"),
])
def test_validation_errors_name_the_problem(old, new, message):
    assert old in BASE
    with pytest.raises(SpecError) as e:
        parse(BASE.replace(old, new, 1))
    assert message in str(e.value)


def test_spec_without_fields_and_too_many_fields():
    head = BASE.split("[[fields]]")[0]
    with pytest.raises(SpecError, match="missing required key 'fields'"):
        parse(head)
    with pytest.raises(SpecError, match="fields must be a non-empty array"):
        parse(head + "fields = []\n")
    many = head + "".join(f'[[fields]]\nname = "f{i}"\nkind = "categorical"\n' for i in range(256))
    with pytest.raises(SpecError, match="at most 255 fields and crosses"):
        parse(many)


def test_validate_columns_names_unknown_fields():
    spec = parse(BASE)
    spec.validate_columns(["a", "b", "r", "m", "extra"])
    with pytest.raises(SpecError) as e:
        spec.validate_columns(["a", "b"])
    assert "unknown field(s) r, m" in str(e.value)


def test_fingerprint_ignores_layout_comments_and_order():
    spec = parse(BASE)
    # keys reordered, comments and whitespace added, field blocks reordered, floats as ints
    reordered = """
# a comment
missing_token = "__missing__"
seed   = 7
name = "t"   # trailing comment
bits = 20
version = 1

[[fields]]
kind = "multivalued"
name = "m"

[[fields]]
clip = [0.0, 1.0]
transform = "raw"
kind = "numeric"
name = "r"

[[fields]]
name = "a"
kind = "categorical"

[[fields]]
boundaries = [0.0, 1.5, 10.0]
name = "b"
kind = "numeric"
transform = "buckets"

[[crosses]]
name = "a_x_b"
fields = ["a", "b"]
"""
    assert parse(reordered).fingerprint == spec.fingerprint
    assert len(spec.fingerprint) == 64 and int(spec.fingerprint, 16) >= 0


@pytest.mark.parametrize("old, new", [
    ('seed = 7', 'seed = 8'),
    ('bits = 20', 'bits = 21'),
    ('missing_token = "__missing__"', 'missing_token = "NA"'),
    ('boundaries = [0, 1.5, 10]', 'boundaries = [0, 1.5, 11]'),
    ('clip = [0, 1]', 'clip = [0, 2]'),
    ('kind = "categorical"', 'kind = "categorical"\nalias = "aa"'),
    ('fields = ["a", "b"]', 'fields = ["b", "a"]'),
    ('version = 1', 'version = 2'),
])
def test_fingerprint_changes_with_anything_hashed(old, new):
    assert parse(BASE.replace(old, new, 1)).fingerprint != parse(BASE).fingerprint


def test_fingerprint_is_pinned():
    """The fingerprint algorithm itself must not drift: models store these values."""
    assert load_spec(GOLDEN / "golden_a.toml").fingerprint == \
        "9f316831841ba7afa32f3b9233c6f636f82c75d950a451f01cffd53130990202"


def test_shipped_specs_load_and_fit_their_data():
    assert set(shipped_specs()) >= {"generated", "criteo", "avazu"}
    generated = load_spec("generated")
    generated.validate_columns(RAW_FIELD_NAMES)
    crosses = {c.fields for c in generated.crosses}
    assert {("site_id", "advertiser_id"), ("device_type", "creative_type"), ("hour_of_day", "country")} <= crosses
    assert generated.field("user_segments").kind == "multivalued"

    criteo = load_spec("criteo")
    criteo.validate_columns([f"i{i}" for i in range(1, 14)] + [f"c{i}" for i in range(1, 27)])
    assert len(criteo.fields) == 39
    # counts bucketed on a log scale, two buckets per unit of ln(1 + x) (spec version 2; measured in
    # docs/training-engine.md): boundaries 0 and exp(k/2) - 1
    for i in range(1, 14):
        b = criteo.field(f"i{i}").boundaries
        assert criteo.field(f"i{i}").transform == "buckets" and b[0] == 0
        assert np.allclose(np.log1p(b[1:]), np.arange(1, len(b)) / 2, atol=1e-4)
    assert all(criteo.field(f"c{i}").kind == "categorical" for i in range(1, 27))

    avazu = load_spec("avazu")
    avazu.validate_columns(["c1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
                            "app_domain", "app_category", "device_id", "device_ip", "device_model",
                            "device_type", "device_conn_type", *[f"c{i}" for i in range(14, 22)],
                            "hour_of_day", "day_of_week"])


def test_load_spec_by_path_and_errors(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(BASE)
    assert load_spec(path).fingerprint == parse(BASE).fingerprint
    assert load_spec(str(path)).name == "t"
    spec = load_spec("criteo")
    assert load_spec(spec) is spec
    with pytest.raises(SpecError, match="no shipped spec named 'nope'.*criteo"):
        load_spec("nope")
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "absent.toml")


def test_to_toml_round_trips_every_option():
    """Aliases, clip, boundaries, named three-way crosses and a non-ASCII missing token."""
    for spec in (load_spec(GOLDEN / "golden_a.toml"),
                 parse(BASE.replace('missing_token = "__missing__"', 'missing_token = "\\u00e9\\"x\\\\"'))):
        back = FeatureSpec.from_toml(spec.to_toml(), "round-trip")
        assert back == spec and back.fingerprint == spec.fingerprint
