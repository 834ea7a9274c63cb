"""Evaluation: the typed form of metrics.json, with named accessors instead of key paths.

`evaluate` returns one; `Evaluation.from_json` reads a stored metrics.json back. Fields keep the JSON's
names and order, and only the keys a file had are written again (`exclude_unset`), so
`Evaluation.from_json(b).to_json_bytes() == b` for every metrics.json tailguard writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tailguard.metrics.definitions import SCHEMA_VERSION, EvalConfig


class _Part(BaseModel):
    # extra="allow": a key a later schema adds survives a read-write round trip.
    model_config = ConfigDict(extra="allow")


class MetricEntry(_Part):
    """One metric value: `value` is None when undefined, `undefined` says why; `queries` counts the queries
    a per-query mean averaged."""

    value: float | None = None
    queries: int | None = None
    undefined: str | None = None


class Interval(_Part):
    """A candidate − production difference: point `value`, paired bootstrap interval [ci_low, ci_high]
    (None where undefined, `undefined` says why) and the number of resamples where it was defined."""

    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    undefined: str | None = None
    resamples_defined: int | None = None

    @property
    def has_interval(self) -> bool:
        """True when both interval ends are defined."""
        return self.ci_low is not None and self.ci_high is not None


class SliceInfo(_Part):
    """A slice's size; `too_small` slices are reported but not judged (`reason` says why)."""

    dimension: str | None = None
    rows: int | None = None
    queries: int | None = None
    positives: int | None = None
    too_small: bool = False
    reason: str | None = None


class DataSummary(_Part):
    """What was evaluated: eval rows, queries, positives, items; training rows; graded relevance present."""

    rows: int | None = None
    queries: int | None = None
    positives: int | None = None
    items: int | None = None
    train_rows: int | None = None
    graded_relevance: bool | None = None


class SliceDefinitions(_Part):
    """Bucket cut-offs per dimension ({bucket: {min_train_count, ...}, "rule": ..., ["undefined": why]})
    and the slice dimensions present."""

    cutoffs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    dimensions: list[str] = Field(default_factory=list)


class Exposure(_Part):
    """Share of position-weighted top-k exposure per popularity bucket, and tail / head."""

    share: dict[str, float | None]
    tail_head_ratio: MetricEntry


class Fairness(_Part):
    """One model's recall per popularity bucket, the judged buckets, the recall gap and exposure."""

    recall_by_bucket: dict[str, MetricEntry]
    judged_buckets: list[str]
    recall_gap: MetricEntry
    exposure: Exposure


class Comparison(_Part):
    """Candidate − production per slice and metric, the fairness gap difference, and the method."""

    method: dict[str, Any] = Field(default_factory=dict)
    slices: dict[str, dict[str, Interval]] = Field(default_factory=dict)
    fairness: dict[str, Interval] = Field(default_factory=dict)


def finite_value(entry: Any) -> float | None:
    """The value of a MetricEntry, Interval, metrics.json entry dict or plain number as a finite float;
    None when it is undefined, absent, not a number, NaN or infinite."""
    if isinstance(entry, dict):
        entry = entry.get("value")
    elif isinstance(entry, MetricEntry | Interval):
        entry = entry.value
    if entry is None:
        return None
    try:
        x = float(entry)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


class Evaluation(_Part):
    """metrics.json, typed. Read it through the accessors; `to_json_bytes` writes the file."""

    # Defaults let a reader take a partial metrics.json (a hand-built one in tests, say); they are never
    # written back (to_json_bytes dumps only the keys that were set).
    schema_version: int = SCHEMA_VERSION
    config: EvalConfig = Field(default_factory=EvalConfig)
    models: list[str] = Field(default_factory=list)
    data: DataSummary = Field(default_factory=DataSummary)
    slice_definitions: SliceDefinitions = Field(default_factory=SliceDefinitions)
    slices: dict[str, SliceInfo] = Field(default_factory=dict)
    metrics: dict[str, dict[str, dict[str, MetricEntry]]] = Field(default_factory=dict)
    popularity_bias: dict[str, dict[str, MetricEntry]] = Field(default_factory=dict)
    fairness: dict[str, Fairness] = Field(default_factory=dict)
    comparison: Comparison | None = None

    # -- reading and writing ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict) -> Evaluation:
        """From metrics.json's parsed content (raises pydantic.ValidationError when it is not one)."""
        return cls.model_validate(data)

    @classmethod
    def coerce(cls, evaluation: Evaluation | dict) -> Evaluation:
        """An Evaluation as is, or one parsed from metrics.json's dict (readers accept either)."""
        return evaluation if isinstance(evaluation, Evaluation) else cls.from_dict(evaluation)

    @classmethod
    def from_json(cls, source: bytes | str | Path) -> Evaluation:
        """From metrics.json's bytes or text, or a path to the file."""
        if isinstance(source, Path):
            source = source.read_bytes()
        return cls.from_dict(json.loads(source))

    def to_dict(self) -> dict:
        """metrics.json's content as plain Python values (only the keys the file has)."""
        return self.model_dump(exclude_unset=True)

    def to_json_bytes(self) -> bytes:
        """metrics.json exactly as a version stores it (2-space indent; the recheck compares these bytes)."""
        return json.dumps(self.to_dict(), indent=2, default=str).encode()

    # -- accessors -------------------------------------------------------------------------------------

    def has_model(self, model: str) -> bool:
        """True when metrics for `model` ("candidate" or "production") were computed."""
        return model in self.metrics

    def slice_names(self) -> list[str]:
        """Every slice name ("overall", "popularity:tail", ...) in metrics.json's order."""
        return list(self.slices)

    def slice_info(self, name: str) -> SliceInfo | None:
        """A slice's size and judged flag, or None when the evaluation has no such slice."""
        return self.slices.get(name)

    def model_metrics(self, model: str) -> dict[str, dict[str, MetricEntry]]:
        """{slice: {metric: entry}} of one model (empty when the model was not evaluated)."""
        return self.metrics.get(model, {})

    def entry(self, model: str, slice_name: str, metric: str) -> MetricEntry | None:
        """One metric entry, or None when absent."""
        return self.metrics.get(model, {}).get(slice_name, {}).get(metric)

    def value(self, model: str, slice_name: str, metric: str) -> float | None:
        """One metric's value, or None when undefined or absent."""
        e = self.entry(model, slice_name, metric)
        return None if e is None else e.value

    def diff(self, slice_name: str, metric: str) -> Interval | None:
        """Candidate − production difference of one metric in one slice, or None without a comparison."""
        if self.comparison is None:
            return None
        return self.comparison.slices.get(slice_name, {}).get(metric)

    def comparison_slices(self) -> dict[str, dict[str, Interval]]:
        """{slice: {metric: Interval}} (empty without a production model)."""
        return {} if self.comparison is None else self.comparison.slices

    def fairness_diff(self, name: str = "recall_gap") -> Interval | None:
        """Candidate − production difference of a fairness measure, or None without a comparison."""
        return None if self.comparison is None else self.comparison.fairness.get(name)

    def fairness_of(self, model: str) -> Fairness | None:
        """A model's fairness block, or None when absent."""
        return self.fairness.get(model)

    def bias(self, model: str, metric: str) -> MetricEntry | None:
        """A model's popularity-bias entry (arp, aplt, gini, item_coverage), or None when absent."""
        return self.popularity_bias.get(model, {}).get(metric)

    def cutoffs(self, dimension: str) -> dict[str, Any]:
        """The bucket cut-offs of "popularity" or "query_frequency" (empty when not recorded)."""
        return self.slice_definitions.cutoffs.get(dimension, {})

    @property
    def resamples(self) -> int:
        """Bootstrap resamples behind the intervals (0 without a comparison)."""
        return 0 if self.comparison is None else int(self.comparison.method.get("resamples", 0))

    @property
    def ci_level(self) -> float:
        """Confidence level of the intervals."""
        return self.config.ci_level
