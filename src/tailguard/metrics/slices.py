"""Slices of the eval rows: item popularity, query frequency, unseen query terms and category.

balance.py reads the same bucket rule (share_buckets), so "tail" means one thing in the balance report and
in the evaluation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tailguard.metrics.definitions import POPULARITY_BUCKETS, QUERY_BUCKETS, EvalConfig

_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W\u3400-\u9fff\uf900-\ufaff]+")


def query_terms(query: str) -> list[str]:
    """Lower-cased word tokens; CJK characters count as one term each (no spaces to split on)."""
    return _TOKEN.findall(str(query).lower())


def share_buckets(
    counts: pd.Series, head_share: float, torso_share: float, tail_max_count: int = 1
) -> pd.Series:
    """Bucket per distinct count (index: count, value: head/torso/tail); see _count_buckets for the rule."""
    return _count_buckets(counts, head_share, torso_share, tail_max_count)[0]


def popularity_undefined(counts: pd.Series, tail_max_count: int = 1) -> str | None:
    """Why popularity buckets cannot be judged (every key has one count above tail_max_count), else None."""
    distinct = counts.unique() if len(counts) else []
    if len(distinct) == 1 and int(distinct[0]) > tail_max_count:
        return f"popularity cannot be judged: every training item has count {int(distinct[0])}"
    return None


def _count_buckets(
    counts: pd.Series, head_share: float, torso_share: float, tail_max_count: int = 1
) -> tuple[pd.Series, str]:
    """Bucket per distinct count, and the rule that made the cut (shares/flat-tail/tail-max-count/undefined).

    Share rule: count groups by count, most popular first; a group is head while the rows *before* it
    are under head_share of all rows, torso while under head_share + torso_share, else tail. Every key
    with the same count lands in the same bucket (ties are never split), and the most popular group is
    always head.

    Flat-tail rule: when that leaves the tail empty although there are two or more distinct counts, one
    tie group straddles the tail cut (Home Depot: items seen once hold ~70% of training rows and start
    at 30%, so the share rule puts every item in head). Then the least popular group is the tail (it
    holds more than 1 - head_share - torso_share of the rows, else the share rule had a tail), and the
    other groups are split into head and torso by the share rule with head_share / (head_share +
    torso_share) of *their* rows as the head cut.

    One count only (every item seen once, as in a random 500-row sample of Home Depot): when that count
    is at most tail_max_count every key is tail (rule `tail-max-count`: head and torso are empty);
    above it no key is more popular than another, the share rule's all-head labels are kept and the rule
    is `undefined` (popularity_undefined gives the reason; evaluate marks the buckets too small).
    """
    if counts.empty:
        return pd.Series(dtype=object), "shares"
    distinct = np.sort(counts.unique())[::-1]
    if len(distinct) == 1:
        single = int(distinct[0])
        label = "tail" if single <= tail_max_count else "head"
        rule = "tail-max-count" if single <= tail_max_count else "undefined"
        return pd.Series([label], index=pd.Index(distinct)), rule
    mass = counts.groupby(counts).sum().sort_index(ascending=False)
    before = (mass.cumsum() - mass).to_numpy(dtype=np.float64)
    total = float(mass.sum())
    labels = np.where(
        before < head_share * total,
        "head",
        np.where(before < (head_share + torso_share) * total, "torso", "tail"),
    ).astype(object)
    flat = len(mass) >= 2 and not (labels == "tail").any()
    if flat:
        rest = before[-1]  # rows of every group but the least popular one
        cut = head_share / (head_share + torso_share) * rest
        labels = np.append(np.where(before[:-1] < cut, "head", "torso").astype(object), "tail")
    return pd.Series(labels, index=mass.index), "flat-tail" if flat else "shares"


def _require(df: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; has {list(df.columns)[:12]}")


@dataclass(frozen=True)
class TrainCounts:
    """All that evaluation reads from the training batch: training rows per item and per query.

    items / queries: int64 Series indexed by the text of item_id / query as `astype(str)` names it (a
    missing value is "None"), sorted by that text; rows: training rows. A compact frame's rows count
    `repeats` times (row_weights), as the trainer counts them. A training batch of n rows with d
    distinct keys shrinks to O(d): the Ray engine sums these on the cluster (ray_engine.train_counts) so the
    training rows never reach the driver.
    """

    items: pd.Series
    queries: pd.Series
    rows: int

    @classmethod
    def of(cls, train: pd.DataFrame | TrainCounts) -> TrainCounts:
        """The counts of a training frame (columns query, item_id); a TrainCounts is returned as it is.

        Raises ValueError naming the missing column(s).
        """
        if isinstance(train, TrainCounts):
            return train
        _require(train, ("query", "item_id"), "train frame")
        w = row_weights(train)
        rows = len(train) if w is None else int(w.sum())
        return cls(_text_counts(train["item_id"], w), _text_counts(train["query"], w), rows)

    @classmethod
    def merged(cls, parts: list[TrainCounts]) -> TrainCounts:
        """The counts of the concatenated frames the parts were counted from."""
        if not parts:
            none = _text_counts(pd.Series([], dtype=object))
            return cls(none, none, 0)
        items = _sum_counts([p.items for p in parts])
        queries = _sum_counts([p.queries for p in parts])
        return cls(items, queries, sum(p.rows for p in parts))


def row_weights(train: pd.DataFrame) -> np.ndarray | None:
    """How many training rows each row stands for: its `repeats` (a compact frame, `balance --compact`: the
    row counts that many times, as the trainer counts it), or None without that column.

    Raises ValueError naming rows whose repeats is not a whole number >= 1.
    """
    if "repeats" not in train.columns:
        return None
    values = pd.to_numeric(train["repeats"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(values) & (values >= 1) & (values == np.floor(values)))
    if bad.any():
        at = np.flatnonzero(bad)[:5]
        raise ValueError(
            f"train frame: column 'repeats' (a compact frame: each row counts that many times) must be a "
            f"whole number >= 1; {int(bad.sum())} row(s) are not, e.g. rows {at.tolist()} with values "
            f"{train['repeats'].iloc[at].tolist()}"
        )
    return values.astype(np.int64)


def _text_counts(column: pd.Series, weights: np.ndarray | None = None) -> pd.Series:
    text = column.astype(str)
    if weights is None:
        return _sorted_counts(text.value_counts(sort=False))
    return _sorted_counts(pd.Series(weights).groupby(text.to_numpy(dtype=object)).sum())


def _sum_counts(parts: list[pd.Series]) -> pd.Series:
    return _sorted_counts(pd.concat(parts).groupby(level=0, sort=False).sum())


def _sorted_counts(counts: pd.Series) -> pd.Series:
    counts = counts.sort_index()
    return pd.Series(
        counts.to_numpy(dtype=np.int64), index=pd.Index(counts.index.to_numpy(dtype=object), dtype=object)
    )


def assign_slices(
    eval_df: pd.DataFrame, train: pd.DataFrame | TrainCounts, config: EvalConfig
) -> pd.DataFrame:
    """Slice columns aligned with eval_df: popularity, query_frequency, query_terms, category, item counts.

    train: the training frame (query, item_id) or its TrainCounts. Raises ValueError for a missing column,
    an empty training batch, or head_share + torso_share >= 1.
    """
    config.validate_shares()
    _require(eval_df, ("query", "item_id"), "eval frame")
    counts = TrainCounts.of(train)
    if counts.rows == 0:
        raise ValueError("train frame: empty; popularity cut-offs need training interactions")
    out = pd.DataFrame(index=eval_df.index)

    item_counts = counts.items
    item_bucket = share_buckets(item_counts, config.head_share, config.torso_share, config.tail_max_count)
    eval_items = eval_df["item_id"].astype(str)
    train_count = eval_items.map(item_counts).fillna(0).astype(np.int64)
    bucket = train_count.map(item_bucket).fillna("cold")
    out["popularity"] = pd.Categorical(bucket, categories=POPULARITY_BUCKETS)
    out["item_train_count"] = train_count.to_numpy()

    # Query frequency: cut-offs from training queries; each eval query is placed by its own row count.
    train_q = counts.queries
    # tail_max_count 0: one common query count puts every query in head, as the share rule always did.
    q_bucket = share_buckets(train_q, config.head_share, config.torso_share, tail_max_count=0)
    head_min = int(q_bucket.index[q_bucket == "head"].min())
    torso_counts = q_bucket.index[q_bucket == "torso"]
    torso_min = int(torso_counts.min()) if len(torso_counts) else head_min
    eval_q = eval_df["query"].astype(str)
    own = eval_q.map(eval_q.value_counts()).to_numpy()
    freq = np.where(own >= head_min, "head", np.where(own >= torso_min, "torso", "tail"))
    out["query_frequency"] = pd.Categorical(freq, categories=QUERY_BUCKETS)

    vocab: set[str] = set()
    for q in train_q.index:
        vocab.update(query_terms(q))
    uniq = eval_q.unique()
    unseen = {q: any(t not in vocab for t in query_terms(q)) for q in uniq}
    out["query_terms"] = pd.Categorical(
        np.where(eval_q.map(unseen).to_numpy(dtype=bool), "unseen-term", "seen-terms"),
        categories=("seen-terms", "unseen-term"),
    )

    if "category" in eval_df.columns:
        out["category"] = category_slices(eval_df["category"], config.max_categories)
    return out


MISSING_CATEGORY = "(missing)"
OTHER_CATEGORY = "(other)"


def category_slice_value(value: str) -> str:
    """The slice value of a real category: itself, or JSON-quoted when it could pass for a marker.

    Markers are the bare texts (missing) and (other); a real value spelled like one, or starting with a
    double quote, is written as its JSON string ('"(missing)"'), so the mapping is one-to-one and a
    missing category never shares a slice with any text.
    """
    if value in (MISSING_CATEGORY, OTHER_CATEGORY) or value.startswith('"'):
        return json.dumps(value, ensure_ascii=False)
    return value


def category_slices(category: pd.Series, max_categories: int) -> np.ndarray:
    """Each row's category slice value (object array): see category_slice_value for real values.

    An empty value (None/NaN: an empty CSV cell or a Parquet null; also "": a Parquet empty string) is
    the marker (missing) and the text "None" stays the category "None". The `max_categories` largest
    real categories keep their own slice (equal counts by name, so row order never matters), the rest
    form (other).
    """
    text = category.map(lambda v: v if isinstance(v, str) else (None if pd.isna(v) else str(v)))
    missing = (text.isna() | (text == "")).to_numpy()
    counts = text[~missing].value_counts()
    top = set(sorted(counts.index, key=lambda c: (-counts[c], c))[:max_categories])
    names = {c: category_slice_value(c) if c in top else OTHER_CATEGORY for c in counts.index}
    values = text.map(names).to_numpy(dtype=object)
    values[missing] = MISSING_CATEGORY
    return values


def slice_cutoffs(train: pd.DataFrame | TrainCounts, config: EvalConfig) -> dict:
    """The training counts that separate the buckets (recorded in metrics.json and on the summary page).

    train: the training frame (query, item_id) or its TrainCounts. Per dimension and non-empty bucket:
    min/max training count of its keys, how many keys, their training rows and share of all training rows;
    `rule` says which rule of _count_buckets made the cut.
    """
    out = {}
    known = TrainCounts.of(train)
    dims = (("popularity", known.items, config.tail_max_count), ("query_frequency", known.queries, 0))
    for name, counts, tail_max in dims:
        b, rule = _count_buckets(counts, config.head_share, config.torso_share, tail_max)
        rule = "shares" if rule == "undefined" and name == "query_frequency" else rule
        total = int(counts.sum())
        entry: dict[str, Any] = {}
        for bucket in QUERY_BUCKETS:
            in_bucket = counts[counts.isin(b.index[b == bucket])]
            if in_bucket.empty:
                continue
            entry[bucket] = {
                "min_train_count": int(in_bucket.min()),
                "max_train_count": int(in_bucket.max()),
                "keys": int(in_bucket.size),
                "train_rows": int(in_bucket.sum()),
                "train_share": round(float(in_bucket.sum()) / total, 4),
            }
        entry["rule"] = rule
        if rule == "undefined":
            entry["undefined"] = popularity_undefined(counts, tail_max)
        out[name] = entry
    return out
