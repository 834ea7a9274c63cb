"""Classification, ranking, popularity-bias and fairness metrics per slice; paired bootstrap intervals.

Modules, lowest first: definitions (metric names, EvalConfig), slices (bucket rules, assign_slices),
kernels (per-query and pooled metric kernels), bootstrap (paired bootstrap), evaluation (the typed
metrics.json) and evaluate (evaluate()). The names below are the package's public surface.
"""

from tailguard.metrics.bootstrap import bootstrap_mean_interval
from tailguard.metrics.definitions import (
    HIGHER_IS_BETTER,
    POPULARITY_BUCKETS,
    PROBABILITY_METRICS,
    QUERY_BUCKETS,
    SCHEMA_VERSION,
    SLICE_DIMENSIONS,
    SLICE_METRICS,
    EvalConfig,
)
from tailguard.metrics.evaluate import evaluate
from tailguard.metrics.evaluation import (
    Comparison,
    DataSummary,
    Evaluation,
    Exposure,
    Fairness,
    Interval,
    MetricEntry,
    SliceDefinitions,
    SliceInfo,
    finite_value,
)
from tailguard.metrics.kernels import (
    exposure_by_bucket,
    graded_pair_accuracy,
    grouped_auc,
    per_query_auc,
    per_query_values,
    popularity_bias,
)
from tailguard.metrics.slices import (
    MISSING_CATEGORY,
    OTHER_CATEGORY,
    TrainCounts,
    assign_slices,
    category_slice_value,
    category_slices,
    popularity_undefined,
    query_terms,
    share_buckets,
    slice_cutoffs,
)

__all__ = [
    "HIGHER_IS_BETTER",
    "MISSING_CATEGORY",
    "OTHER_CATEGORY",
    "POPULARITY_BUCKETS",
    "PROBABILITY_METRICS",
    "QUERY_BUCKETS",
    "SCHEMA_VERSION",
    "SLICE_DIMENSIONS",
    "SLICE_METRICS",
    "Comparison",
    "DataSummary",
    "EvalConfig",
    "Evaluation",
    "Exposure",
    "Fairness",
    "Interval",
    "MetricEntry",
    "SliceDefinitions",
    "SliceInfo",
    "TrainCounts",
    "assign_slices",
    "bootstrap_mean_interval",
    "category_slice_value",
    "category_slices",
    "evaluate",
    "exposure_by_bucket",
    "finite_value",
    "graded_pair_accuracy",
    "grouped_auc",
    "per_query_auc",
    "per_query_values",
    "popularity_bias",
    "popularity_undefined",
    "query_terms",
    "share_buckets",
    "slice_cutoffs",
]
