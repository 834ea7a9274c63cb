"""Lowest layer of the metrics package: metric names and directions, slice names, EvalConfig, entry helpers.

Every other module of the package imports from here; this module imports none of them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

SCHEMA_VERSION = 1
POPULARITY_BUCKETS = ("head", "torso", "tail", "cold")
QUERY_BUCKETS = ("head", "torso", "tail")
SLICE_DIMENSIONS = ("popularity", "query_frequency", "query_terms", "category")

# Metrics reported per slice; True when a larger value is better (the gate reads this).
HIGHER_IS_BETTER: dict[str, bool] = {
    "roc_auc": True,
    "roc_auc_per_query": True,
    "pr_auc": True,
    "log_loss": False,
    "ece": False,
    "f1": True,
    "recall": True,
    "precision": True,
    "ndcg_at_k": True,
    "mrr": True,
    "recall_at_k": True,
    "graded_pair_accuracy": True,
}
SLICE_METRICS = tuple(HIGHER_IS_BETTER)
# Scores outside [0, 1] (an external ranker's raw scores) make these undefined rather than wrong.
PROBABILITY_METRICS = ("log_loss", "ece", "f1", "recall", "precision")


class EvalConfig(BaseModel):
    """How evaluation slices, ranks and bootstraps."""

    k: int = Field(10, ge=1, description="Cut-off of each query's top-k list (nDCG@k, recall@k, bias).")
    min_positives: int = Field(
        30, ge=0, description="A slice with fewer positives is reported but marked too small to judge."
    )
    head_share: float = Field(
        0.5, gt=0, lt=1, description="Head = most popular items making this share of training rows."
    )
    torso_share: float = Field(
        0.3, ge=0, lt=1, description="Torso = the next share of training rows; tail = the rest."
    )
    tail_max_count: int = Field(
        1,
        ge=0,
        description="When every training item has one and the same count (a random sample of a flat-tailed "
        "catalogue: every item seen once), items seen at most this many times are the tail; with a common "
        "count above it popularity cannot be judged and the popularity slices are marked so.",
    )
    threshold: float = Field(0.5, description="Decision threshold on the score for F1/recall/precision.")
    n_bootstrap: int = Field(1000, ge=0, description="Paired bootstrap resamples over queries (0 = none).")
    seed: int = Field(0, description="Seed of the bootstrap.")
    ci_level: float = Field(0.95, gt=0, lt=1, description="Confidence level of the intervals.")
    ece_bins: int = Field(10, ge=1, description="Equal-width score bins of the expected calibration error.")
    max_categories: int = Field(30, ge=1, description="Largest categories sliced; the rest form '(other)'.")
    bootstrap_chunk: int = Field(
        64,
        ge=1,
        description="Resamples per matrix product (memory bound); a multiple of 16 keeps every lane of "
        "the pooled ROC/PR pass busy.",
    )
    blas_threads: int = Field(1, ge=1, description="BLAS threads for the bootstrap's matrix products.")
    threads: int = Field(
        0,
        ge=0,
        description="Threads of the exact pooled ROC/PR pass (the two models and blocks of 16 resamples run "
        "side by side); 0 = every core this process may use, 1 = no thread pool.",
    )
    bootstrap_dtype: Literal["float32", "float64"] = Field(
        "float32",
        description="Precision of the bootstrap's matrix products: float32 is ~2x faster; its rounding "
        "(~1e-7 relative) is far below any interval's width.",
    )

    def validate_shares(self) -> None:
        """Reject shares that leave no tail."""
        if self.head_share + self.torso_share >= 1:
            raise ValueError(
                f"head_share + torso_share must be < 1, got {self.head_share} + {self.torso_share}"
            )


def _undefined(reason: str) -> dict:
    return {"value": None, "undefined": reason}


def _val(x: float | None, reason: str) -> dict:
    if x is None or not np.isfinite(x):
        return _undefined(reason)
    return {"value": float(x)}
