"""The optional oracle a job may be given: the best possible log-loss on a set of rows.

Generated logs know every impression's true click probability (``synthetic.oracle`` reads
them); real logs do not. A job that is given no oracle reports no best-possible figure, so no
stage reaches for the synthetic world's files itself.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pyarrow as pa


class Oracle(Protocol):
    """Knows the true click probabilities of some rows."""

    def best_log_loss(self, rows: "pa.Table", start: date, end: date) -> float | None:
        """Log-loss of the true probabilities on exactly ``rows`` (``impression_id``, ``label``)
        logged on days [start, end); None when the oracle does not know every row."""
        ...

    def true_click_sum(self, rows: "pa.Table", start: date, end: date) -> float | None:
        """Sum of the true click probabilities of exactly ``rows`` (``impression_id``) logged on
        days [start, end): the clicks expected without Bernoulli noise, the denominator of a
        calibration against the truth; None when the oracle does not know every row."""
        ...
