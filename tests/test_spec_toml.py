import dataclasses

import pytest

from shared.featurize import FeatureSpec, load_spec, shipped_specs


@pytest.mark.parametrize("name", shipped_specs())
def test_to_toml_round_trips_to_the_same_fingerprint(name):
    spec = load_spec(name)
    back = FeatureSpec.from_toml(spec.to_toml(), "round-trip")
    assert back.fingerprint == spec.fingerprint
    wider = dataclasses.replace(spec, bits=spec.bits - 2)
    again = FeatureSpec.from_toml(wider.to_toml(), "round-trip")
    assert again.bits == spec.bits - 2 and again.fingerprint == wider.fingerprint != spec.fingerprint
