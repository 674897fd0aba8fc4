"""The training engines the job can fit with, behind one small contract.

An engine is a scikit-learn-style estimator class with declared ``_parameter_constraints``,
``fit(X, y)`` and the fitted attributes the model format stores (``indices_``,
``weights_``, ``intercept_``, ``raw_intercept_``, ``n_features_in_``, ...). A search
trial names its engine in the ``engine`` parameter; the other parameters go to that
engine when it declares them. ``ftrl`` (:mod:`training.ftrl`) is the default: measured
in docs/training-engine.md; ``sklearn`` (:mod:`training.model`) is the exact L1/L2 fit.
"""

from __future__ import annotations

from typing import Any, Mapping

from training.ftrl import FTRLLogisticRegression
from training.model import SparseLogisticRegression
from training.params import ParameterError

ENGINES: dict[str, type[FTRLLogisticRegression] | type[SparseLogisticRegression]] = {"ftrl": FTRLLogisticRegression, "sklearn": SparseLogisticRegression}
DEFAULT_ENGINE = "ftrl"
#: Trial parameters that belong to the job, not to an engine.
JOB_PARAMS = frozenset({"engine", "bits"})


def engine_of(params: Mapping[str, Any]) -> str:
    """The engine a parameter set names (``sklearn`` when absent, as in older versions)."""
    name = params.get("engine", "sklearn")
    if name not in ENGINES:
        raise ParameterError(f"engine must be one of {sorted(ENGINES)}, got {name!r}")
    return name


def engine_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters the named engine declares (others, meant for another engine, dropped)."""
    declared = ENGINES[engine_of(params)]._parameter_constraints
    return {k: v for k, v in params.items() if k in declared}


def make_estimator(params: Mapping[str, Any], random_state=None):
    """A fresh estimator of the named engine with its parameters."""
    return ENGINES[engine_of(params)](**engine_params(params), random_state=random_state)


def supports_deadline(estimator) -> bool:
    """Whether ``fit`` can stop at a deadline (a per-trial work budget)."""
    return isinstance(estimator, FTRLLogisticRegression)
