"""The generator's configuration: everything that determines the synthetic world and its logs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date
from typing import Any

from shared.errors import ConfigurationError

# Log-line faults, in the order of :attr:`GeneratorConfig.line_fault_rates`.
FAULT_KINDS = ("truncated", "invalid_json", "missing_impression_id", "bad_timestamp", "wrong_type")


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that determines the output. Same config, same bytes."""

    start_date: date = date(2026, 11, 1)
    days: int = 7
    impressions_per_day: int = 200_000
    seed: int = 42
    drift_day: int | None = None  # day index (0-based) from which the drifted model applies; None: days // 2 (>= 1)

    # faults, as a fraction of generated impressions (duplicates: extra identical lines)
    duplicate_rate: float = 0.005
    truncated_rate: float = 0.001
    invalid_json_rate: float = 0.001
    missing_id_rate: float = 0.001
    bad_timestamp_rate: float = 0.001
    wrong_type_rate: float = 0.001
    duplicate_later_hour_share: float = 0.4  # of duplicates, the share written 1-3 hours after the original

    # cardinalities and popularity (Zipf-Mandelbrot: weight of rank r is (r + offset) ** -exponent;
    # the offset flattens the head, e.g. the heaviest of 300k users sees ~250 ads a day at 200k/day)
    n_users: int = 300_000
    n_sites: int = 4_000  # web sites + mobile apps + CTV apps
    app_share: float = 0.35
    ctv_share: float = 0.03
    n_publishers: int = 1_500
    n_advertisers: int = 100
    campaigns_per_advertiser: float = 5.0  # mean
    creatives_per_campaign: float = 3.0  # mean
    n_segments: int = 200
    mean_segments_per_user: float = 3.0
    max_segments_per_user: int = 12
    user_zipf: float = 1.0
    user_zipf_offset: float = 100.0
    site_zipf: float = 1.1
    site_zipf_offset: float = 3.0
    publisher_zipf: float = 1.0
    advertiser_zipf: float = 1.1
    advertiser_zipf_offset: float = 1.0

    # ground truth (interaction sizes: see synthetic.effects.build_truth_model)
    base_ctr: float = 0.015  # mean true CTR before drift (the base logit is calibrated to it)
    n_site_advertiser_pairs: int = 600  # site x advertiser pairs with an idiosyncratic affinity, drawn by traffic
    site_advertiser_sd: float = 0.6  # sd of those pair affinities (logit)
    context_match_lift: float = 0.7  # mean logit lift when the advertiser's vertical is one of the site's categories
    interaction_scale: float = 1.0  # multiplies every interaction of the truth (0: a main-effects-only truth)

    # click delays: a mixture of two lognormals
    click_delay_median_s: float = 20.0
    click_delay_sigma: float = 1.3
    late_click_share: float = 0.04
    late_click_median_s: float = 3 * 3600.0
    late_click_sigma: float = 1.5
    attribution_window_hours: float = 24.0

    def __post_init__(self) -> None:
        if isinstance(self.start_date, str):
            object.__setattr__(self, "start_date", date.fromisoformat(self.start_date))
        if self.days < 1:
            raise ConfigurationError("days must be >= 1")
        if self.impressions_per_day < 0:
            raise ConfigurationError("impressions_per_day must be >= 0")
        if self.drift_day is not None and self.drift_day < 0:
            raise ConfigurationError("drift_day must be >= 0")
        for f in ("duplicate_rate", "truncated_rate", "invalid_json_rate", "missing_id_rate",
                  "bad_timestamp_rate", "wrong_type_rate", "duplicate_later_hour_share",
                  "app_share", "ctv_share", "late_click_share"):
            v = getattr(self, f)
            if not 0.0 <= v <= 1.0:
                raise ConfigurationError(f"{f} must be in [0, 1], got {v}")
        if sum(self.line_fault_rates) > 0.5:
            raise ConfigurationError("line fault rates add up to more than 0.5")
        if self.app_share + self.ctv_share >= 1.0:
            raise ConfigurationError("app_share + ctv_share must leave some web sites")
        if not 0.0 < self.base_ctr < 0.5:
            raise ConfigurationError("base_ctr must be in (0, 0.5)")
        for f in ("n_users", "n_sites", "n_publishers", "n_advertisers", "n_segments"):
            if getattr(self, f) < 1:
                raise ConfigurationError(f"{f} must be >= 1")
        for f in ("n_site_advertiser_pairs", "site_advertiser_sd", "context_match_lift", "interaction_scale"):
            if getattr(self, f) < 0:
                raise ConfigurationError(f"{f} must be >= 0")
        if self.n_sites < 20:
            raise ConfigurationError("n_sites must be >= 20 (web, app and CTV inventory)")

    @property
    def line_fault_rates(self) -> tuple[float, ...]:
        """Rates in the order of FAULT_KINDS."""
        return (self.truncated_rate, self.invalid_json_rate, self.missing_id_rate,
                self.bad_timestamp_rate, self.wrong_type_rate)

    @property
    def effective_drift_day(self) -> int:
        """The 0-based day from which the drifted truth applies."""
        return self.drift_day if self.drift_day is not None else max(1, self.days // 2)

    def without_faults(self) -> GeneratorConfig:
        """The same config with no duplicates and no damaged lines."""
        return dataclasses.replace(self, duplicate_rate=0.0, truncated_rate=0.0, invalid_json_rate=0.0,
                                   missing_id_rate=0.0, bad_timestamp_rate=0.0, wrong_type_rate=0.0)

    def as_dict(self) -> dict[str, Any]:
        """The parameters as JSON values (the manifest's ``parameters``)."""
        d = dataclasses.asdict(self)
        d["start_date"] = self.start_date.isoformat()
        d["effective_drift_day"] = self.effective_drift_day
        return d

