"""Aggregate-feature definitions shared by the warehouse job and the bidder.

An entity is one raw field or a pair of them; its key is the fields' values
joined by a separator that cannot occur in ids. The Spark job
(:mod:`feature_store.aggregates`) writes per-entity, per-day counts over each
look-back; the bidder looks the same keys up in a snapshot. Feature columns are
named ``<entity>_<imps|clicks>_<L>d``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    import pyarrow as pa

ENTITIES: dict[str, tuple[str, ...]] = {
    "user": ("user_id",),
    "site": ("site_id",),
    "advertiser": ("advertiser_id",),
    "creative": ("creative_id",),
    "site_advertiser": ("site_id", "advertiser_id"),
}
LOOKBACK_DAYS: tuple[int, ...] = (1, 7)
KEY_SEPARATOR = "\x1f"  # ASCII unit separator


def feature_columns(entities: Sequence[str] = tuple(ENTITIES), lookbacks: Sequence[int] = LOOKBACK_DAYS) -> list[str]:
    """Aggregate column names ``<entity>_<imps|clicks>_<n>d`` for each entity and lookback."""
    return [f"{e}_{kind}_{n}d" for e in entities for n in lookbacks for kind in ("imps", "clicks")]


def entity_key(record: Mapping[str, Any], entity: str) -> str | None:
    """The snapshot key of ``record`` for ``entity``; None when a key field is missing."""
    parts = []
    for name in ENTITIES[entity]:
        value = record.get(name)
        if value is None or value == "":
            return None
        parts.append(str(value))
    return KEY_SEPARATOR.join(parts)


class AggregateSnapshot:
    """Latest aggregate values per entity key, for scoring live requests.

    ``values[entity][key]`` is a tuple aligned with ``columns[entity]``; an unseen key
    means zero counts (no impressions in the look-back), as in training.
    """

    def __init__(self, columns: Mapping[str, list[str]], values: Mapping[str, Mapping[str, tuple[int, ...]]]):
        self.columns = {e: list(c) for e, c in columns.items()}
        self.values = values

    def enrich(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """``record`` plus every aggregate column (0 when the entity is unseen)."""
        out = dict(record)
        for entity, cols in self.columns.items():
            key = entity_key(record, entity)
            found = self.values.get(entity, {}).get(key) if key is not None else None
            for i, col in enumerate(cols):
                out[col] = found[i] if found is not None else 0
        return out

    @classmethod
    def from_arrow(cls, table: pa.Table) -> "AggregateSnapshot":
        """From the exported snapshot table (entity, entity_key, one column per look-back count)."""
        count_cols = [c for c in table.column_names if c not in ("entity", "entity_key")]
        columns: dict[str, list[str]] = {}
        values: dict[str, dict[str, tuple[int, ...]]] = {}
        data = table.to_pydict()
        for i, (entity, key) in enumerate(zip(data["entity"], data["entity_key"])):
            if entity not in columns:
                columns[entity] = [f"{entity}_{c}" for c in count_cols]
                values[entity] = {}
            values[entity][key] = tuple(int(data[c][i]) for c in count_cols)
        return cls(columns, values)
