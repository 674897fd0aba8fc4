"""The synthetic world's oracle: the generator's truth files give the best possible log-loss."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.config import Settings
from training.metrics import evaluate


class TruthOracle:
    """Reads ``<raw_dir>/truth/date=D/hour=H.parquet`` (impression_id, p_true), as the generator
    writes them (:mod:`synthetic.logs`); implements :class:`shared.oracle.Oracle`."""

    def __init__(self, raw_dir: Path):
        self.raw_dir = Path(raw_dir)

    def truth(self, start: date, end: date) -> pa.Table | None:
        """The true probabilities of every impression logged on days [start, end), or None."""
        files = []
        day = start
        while day < end:
            files += sorted((self.raw_dir / "truth" / f"date={day.isoformat()}").glob("hour=*.parquet"))
            day += timedelta(days=1)
        if not files:
            return None
        return pa.concat_tables([pq.read_table(f, columns=["impression_id", "p_true"]) for f in files])

    def true_click_sum(self, rows: pa.Table, start: date, end: date) -> float | None:
        """Sum of the true probabilities of exactly ``rows``; None unless every row is known."""
        truth = self.truth(start, end)
        if truth is None:
            return None
        joined = rows.select(["impression_id"]).join(truth, "impression_id", join_type="inner")
        if joined.num_rows != rows.num_rows:
            return None
        return float(pc.sum(joined.column("p_true")).as_py() or 0.0)

    def best_log_loss(self, rows: pa.Table, start: date, end: date) -> float | None:
        """Log-loss of the true probabilities on exactly ``rows``; None unless every row is known."""
        truth = self.truth(start, end)
        if truth is None:
            return None
        joined = rows.select(["impression_id", "label"]).join(truth, "impression_id", join_type="inner")
        if joined.num_rows != rows.num_rows:
            return None  # not generated data, or truth incomplete: no honest figure
        return float(evaluate(joined.column("label").to_numpy(), joined.column("p_true").to_numpy())["log_loss"])


def oracle_for(settings: Settings) -> TruthOracle | None:
    """The oracle of a data root whose logs the generator wrote (it has truth files), else None."""
    truth = settings.raw_dir / "truth"
    return TruthOracle(settings.raw_dir) if truth.is_dir() else None
