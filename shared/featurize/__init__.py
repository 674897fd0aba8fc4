"""The one featurization package: every path (Spark jobs, training, the bidder) hashes here.

* :mod:`.spec` - the declarative, versioned TOML feature spec (:func:`load_spec`,
  :class:`FeatureSpec`, :class:`SpecError`) and its fingerprint.
* :mod:`.canonical` - the canonical string form of raw values (:func:`canonical`).
* :mod:`.featurizer` - :class:`Featurizer`: ``transform(frame) -> csr_matrix`` (pandas or
  Arrow, vectorised) and ``transform_record(record) -> (indices, values)`` (the bidder's
  hot path, no pandas), plus ``explain(record)`` listing every hashed key.
* :mod:`.spark` - ``featurize_spark(df, spec, keep=[...])`` (imports pyspark lazily).
* :mod:`.golden` - ``python -m shared.featurize.golden`` writes the cross-language golden vectors.

Spark's ``hash()`` / ``xxhash64`` are never used: they are not MurmurHash3 as ``mmh3``
computes it, and a model trained on one hashing and served with another fails silently.
"""

from shared.featurize.canonical import FeaturizeError, canonical, to_number
from shared.featurize.featurizer import Featurizer, categorical_key, cross_key, raw_key
from shared.featurize.spec import HASHING_SCHEME, Cross, FeatureSpec, Field, SpecError, load_spec, shipped_specs

__all__ = [
    "HASHING_SCHEME", "Cross", "FeatureSpec", "FeaturizeError", "Featurizer", "Field", "SpecError",
    "canonical", "categorical_key", "cross_key", "load_spec", "raw_key", "shipped_specs", "to_number",
]
