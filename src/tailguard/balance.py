"""Rebalancing of the training split: resampling, popularity-aware weights, offline augmentation, report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tailguard import augment

STRATEGIES: dict[str, str] = {
    "none": "train on the split as it is",
    "random_under": "drop random negatives down to `ratio` negatives per positive",
    "random_over": "duplicate random positives up to `over_ratio` positives per negative",
    "popularity_cap": "keep at most `cap_k` rows per item and `cap_query_k` per query (positives first)",
    "stratified": "sample to target shares per popularity bucket x label (`bucket_shares`, `positive_share`)",
    "popularity_reweight": "weight rows by popularity^-alpha of the item or query (`reweight_key`), mean 1",
    "class_balanced": "weight labels by (1-beta)/(1-beta^n_y) (Cui et al. 2019), mean 1",
    "augment": "add EDA copies of tail-query positives (`aug_alpha`, `aug_copies`, `aug_rows`)",
}
# Applied in this order whatever the order listed, so a spec means one thing: caps and strata shape the
# population, augmentation adds positives, the label ratio is then set counting them, weights come last.
ORDER = (
    "popularity_cap",
    "stratified",
    "augment",
    "random_under",
    "random_over",
    "popularity_reweight",
    "class_balanced",
)
WEIGHTING = frozenset({"popularity_reweight", "class_balanced"})
# Strategies that drop or add rows; without them every input row survives (random_over only duplicates).
RESHAPING = frozenset({"popularity_cap", "stratified", "augment", "random_under"})
BUCKETS = ("head", "torso", "tail")
# Cumulative share of interactions closing the head and the torso (DESIGN: 50/30/20).
BUCKET_EDGES = (0.5, 0.8)
REQUIRED_COLUMNS = ("query", "item_id", "item_title", "label", "row_id")


class BalanceConfigError(ValueError):
    """A balancing option out of its allowed range, or a strategy that cannot work on this data."""


class BalanceConfig(BaseModel):
    """Which balancing strategies to apply to the training split, and their options."""

    model_config = ConfigDict(extra="forbid")

    strategies: list[str] = Field(
        default_factory=lambda: ["none"],
        description="Strategy names, applied in a fixed order: " + ", ".join(ORDER) + ".",
    )
    ratio: float = Field(
        1.0,
        gt=0,
        le=1000,
        description="random_under: negatives kept per positive (0 < ratio <= 1000). 1:1 lifted MiniLM from "
        "0.62 to 0.74 pooled AUC at 200 steps on Home Depot relevance data.",
    )
    over_ratio: float = Field(
        1.0,
        gt=0,
        le=1000,
        description="random_over: positives per negative after duplication (0 < over_ratio <= 1000), "
        "imbalanced-learn's float sampling_strategy.",
    )
    cap_k: int = Field(50, ge=1, description="popularity_cap: most rows kept per item (>= 1).")
    cap_query_k: int | None = Field(
        None, ge=1, description="popularity_cap: most rows kept per query (>= 1); None uses cap_k."
    )
    strata_key: Literal["item", "query"] = Field(
        "item", description="stratified: bucket rows by item popularity or by query frequency."
    )
    bucket_shares: dict[str, float] = Field(
        default_factory=lambda: {"head": 1 / 3, "torso": 1 / 3, "tail": 1 / 3},
        description="stratified: target share of rows per bucket (head/torso/tail, each >= 0, sum > 0).",
    )
    positive_share: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="stratified: positive share within every bucket (0 < share < 1); None keeps the "
        "split's overall positive rate.",
    )
    reweight_key: Literal["item", "query"] = Field(
        "item",
        description="popularity_reweight: popularity of the row's item or its query's frequency (items are "
        "often too sparse on real logs: 70% seen once on Home Depot).",
    )
    alpha: float = Field(
        0.5,
        ge=0,
        le=5,
        description="popularity_reweight: exponent, weight ∝ popularity^-alpha (0 <= alpha <= 5).",
    )
    beta: float = Field(
        0.9999,
        ge=0,
        lt=1,
        description="class_balanced: beta of the effective number (0 <= beta < 1; 0 = equal weights, "
        "-> 1 approaches inverse frequency).",
    )
    aug_alpha: float = Field(
        0.1,
        gt=0,
        le=0.5,
        description="augment: EDA change rate per text (0 < aug_alpha <= 0.5; EDA uses 0.1).",
    )
    aug_copies: int = Field(2, ge=1, le=32, description="augment: augmented copies per source row (1..32).")
    aug_rows: Literal[
        "tail_query_positives", "tail_item_positives", "tail_positives", "positives", "tail_query_rows"
    ] = Field(
        "tail_query_positives",
        description="augment: which rows are augmented. tail_query_rows takes every row of a tail query, "
        "negatives too, so each query keeps its positive rate (copies of positives alone shifted scores "
        "between queries on real data: docs/RESULTS.md).",
    )
    aug_fields: list[Literal["query", "item_title"]] = Field(
        default_factory=lambda: ["query", "item_title"], description="augment: text columns rewritten."
    )
    aug_ops: list[Literal["synonym", "insert", "swap", "delete"]] = Field(
        default_factory=lambda: list(augment.OPERATIONS), description="augment: EDA operations used."
    )
    aug_max_rows: int | None = Field(
        None, ge=1, description="augment: at most this many source rows (sampled by seed); None = all."
    )
    aug_mine_synonyms: bool = Field(
        True, description="augment: mine synonyms from the batch's positives (plus the curated map)."
    )
    seed: int = Field(0, description="Seed of every random choice; same seed, same output.")

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, names: list[str]) -> list[str]:
        cleaned = [n.strip() for n in names if n.strip()]
        unknown = [n for n in cleaned if n not in STRATEGIES]
        if unknown:
            raise ValueError(
                f"unknown strategy {', '.join(map(repr, unknown))}; known: {', '.join(STRATEGIES)}"
            )
        if not cleaned:
            raise ValueError(f"no strategy given; known: {', '.join(STRATEGIES)}")
        if "none" in cleaned and len(cleaned) > 1:
            raise ValueError("'none' cannot be combined with other strategies")
        return list(dict.fromkeys(cleaned))

    @field_validator("bucket_shares")
    @classmethod
    def _shares(cls, shares: dict[str, float]) -> dict[str, float]:
        bad = [k for k in shares if k not in BUCKETS]
        if bad:
            raise ValueError(f"unknown bucket {bad}; allowed: {', '.join(BUCKETS)}")
        if any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
            raise ValueError("each share must be >= 0 and their sum > 0")
        return shares

    @model_validator(mode="after")
    def _aug_nonempty(self) -> BalanceConfig:
        if "augment" in self.strategies and (not self.aug_fields or not self.aug_ops):
            raise ValueError("augment needs at least one of aug_fields and of aug_ops")
        return self

    @classmethod
    def from_spec(cls, spec: str | list[str], **options: Any) -> BalanceConfig:
        """Build from a CLI/flow string such as "random_under,augment"; errors name the option and range."""
        names = spec.split(",") if isinstance(spec, str) else list(spec)
        try:
            return cls(strategies=names, **options)
        except ValidationError as err:
            raise BalanceConfigError(explain(err)) from None


def explain(err: ValidationError) -> str:
    """One line per bad option: name, value, rule, and what the option does."""
    lines = []
    for e in err.errors():
        name = str(e["loc"][0]) if e["loc"] else "config"
        field = BalanceConfig.model_fields.get(name)
        rule = e["msg"].removeprefix("Value error, ")
        value = "" if e["type"] == "missing" else f"={e.get('input')!r}"
        help_text = f" [{field.description}]" if field is not None and field.description else ""
        lines.append(f"balance option {name}{value}: {rule}{help_text}")
    return "invalid balancing configuration:\n  " + "\n  ".join(lines)


# --- keys, buckets ------------------------------------------------------------------------------


def _popularity_bucket(keys: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: bucket code (0 head, 1 torso, 2 tail) and the key's row count.

    The evaluation's rule (metrics.share_buckets), so "tail" means the same thing in the balance report
    and in the gate: keys ranked by count, a tie group is never split, the most popular group is head.
    """
    from tailguard.metrics.slices import share_buckets

    codes, uniques = pd.factorize(np.asarray(keys, dtype=object), use_na_sentinel=False)
    counts = np.bincount(codes, minlength=len(uniques))
    head, torso_end = BUCKET_EDGES
    label_of_count = share_buckets(pd.Series(counts), head, torso_end - head)
    code_of_count = np.zeros(int(counts.max()) + 1 if len(counts) else 1, dtype=np.int8)
    code_of_count[label_of_count.index.to_numpy()] = pd.Categorical(
        label_of_count.to_numpy(), categories=BUCKETS
    ).codes
    return code_of_count[counts][codes], counts[codes]


class _Keys:
    """Popularity arrays of the training split, computed once, only when something needs them."""

    def __init__(self, train: pd.DataFrame):
        self._train = train
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, key: Literal["item", "query"]) -> tuple[np.ndarray, np.ndarray]:
        """(bucket code, popularity) per training row for the item_id or query key."""
        if key not in self._cache:
            self._cache[key] = _popularity_bucket(self._train["item_id" if key == "item" else "query"])
        return self._cache[key]


# --- resamplers (vectorised index sampling; every function returns positions into `labels`) ----------


def random_under_positions(labels: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Positions kept: every positive and int(n_pos * ratio) random negatives (all if fewer), input order."""
    negatives = np.flatnonzero(labels == 0)
    n_pos = len(labels) - len(negatives)
    target = int(n_pos * ratio + 1e-9)
    if target >= len(negatives):
        return np.arange(len(labels))
    keep = labels != 0
    keep[rng.choice(negatives, size=target, replace=False)] = True
    return np.flatnonzero(keep)


def random_over_positions(labels: np.ndarray, over_ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Positions: every row, then random positives (with replacement) to int(n_neg * over_ratio) in all."""
    return np.concatenate([np.arange(len(labels)), random_over_extra(labels, over_ratio, rng)])


def random_over_extra(labels: np.ndarray, over_ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Positions of the duplicated positives only: what random_over appends after every original row."""
    positives, copies = random_over_copies(labels, over_ratio, rng)
    # Repeated in position order: an 8M-row np.sort cost ~0.8 s; sorted copies keep the frame take sequential
    # in memory (trainers shuffle anyway).
    return np.repeat(positives, copies)


def random_over_copies(
    labels: np.ndarray, over_ratio: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the positives, extra copies of each) so that positives reach int(n_neg * over_ratio)."""
    positives = np.flatnonzero(labels != 0)
    target = int((len(labels) - len(positives)) * over_ratio + 1e-9)
    extra = target - len(positives)
    if extra <= 0 or len(positives) == 0:
        return positives, np.zeros(len(positives), dtype=np.int64)
    # Multinomial counts per positive = sampling with replacement (imbalanced-learn draws the same way).
    return positives, np.bincount(rng.integers(0, len(positives), size=extra), minlength=len(positives))


def _rank_within(groups: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of each row inside its group, positives first then random order."""
    order = np.lexsort((rng.random(len(groups)), labels == 0, groups))
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(sorted_groups[1:] != sorted_groups[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - run_start
    return rank


def popularity_cap_positions(
    item_codes: np.ndarray,
    query_codes: np.ndarray,
    labels: np.ndarray,
    cap_item: int,
    cap_query: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Positions kept with at most cap_item rows per item, then at most cap_query rows per query."""
    keep = np.flatnonzero(_rank_within(item_codes, labels, rng) < cap_item)
    return keep[_rank_within(query_codes[keep], labels[keep], rng) < cap_query]


def stratified_positions(
    buckets: np.ndarray,
    labels: np.ndarray,
    shares: dict[str, float],
    positive_share: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Positions sampled without replacement so bucket x label cells meet their target shares (largest n)."""
    cell = buckets.astype(np.int64) * 2 + (labels != 0)
    available = np.bincount(cell, minlength=6)
    total_share = sum(shares.get(b, 0.0) for b in BUCKETS)
    target_share = np.array(
        [
            shares.get(b, 0.0) / total_share * (positive_share if lab else 1 - positive_share)
            for b in BUCKETS
            for lab in (0, 1)
        ]
    )
    wanted = target_share > 0
    empty = wanted & (available == 0)
    if empty.any():
        cells = [f"{BUCKETS[c // 2]}/label={c % 2}" for c in np.flatnonzero(empty)]
        raise BalanceConfigError(
            f"stratified: cell(s) {', '.join(cells)} have no rows but a target share > 0; set bucket_shares "
            "for those buckets to 0 or choose another strategy"
        )
    total = int(np.min(available[wanted] / target_share[wanted]) + 1e-9)
    quota = np.floor(target_share * total + 1e-9).astype(np.int64)
    # One random key per row; the quota lowest keys of each cell are kept (one sort, no loop over rows).
    order = np.lexsort((rng.random(len(cell)), cell))
    starts = np.r_[0, np.cumsum(available)[:-1]]
    rank = np.empty(len(cell), dtype=np.int64)
    rank[order] = np.arange(len(cell)) - np.repeat(starts, available)
    return np.flatnonzero(rank < quota[cell])


# --- weights ------------------------------------------------------------------------------------


def popularity_weights(popularity: np.ndarray, alpha: float, counts: np.ndarray | None = None) -> np.ndarray:
    """popularity^-alpha normalised to mean 1 (each row counted `counts` times)."""
    w = np.power(popularity.astype(np.float64), -alpha)
    return w / np.average(w, weights=counts)


def class_balanced_weights(labels: np.ndarray, beta: float, counts: np.ndarray | None = None) -> np.ndarray:
    """Per-row (1-beta)/(1-beta^n_y) (Cui et al. 2019) normalised to mean 1 (rows counted `counts` times)."""
    y = (labels != 0).astype(np.int64)
    n_y = np.bincount(y, weights=counts, minlength=2).astype(np.float64)
    per_class = np.where(n_y > 0, (1 - beta) / np.maximum(1 - np.power(beta, n_y), 1e-300), 0.0)
    if beta == 0:
        per_class = np.ones(2)
    w = per_class[y]
    return w / np.average(w, weights=counts)


def kish_ess(weights: np.ndarray | None, n: int, counts: np.ndarray | None = None) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 (rows counted `counts` times); n without weights."""
    if weights is None or len(weights) == 0:
        return float(n)
    c = np.ones(len(weights)) if counts is None else counts.astype(np.float64)
    return float((c @ weights) ** 2 / (c @ np.square(weights)))


# --- the entry point ----------------------------------------------------------------------------------


def refuse_compact(columns: list[str]) -> None:
    """BalanceConfigError when the input is already a compact frame (a `repeats` column, as `balance
    --compact` writes it): rebalancing would count each of its rows once, losing the repeats' weight (a
    random_over file of 3,000 distinct rows counting 5,432 came out as 3,000 rows)."""
    if "repeats" in columns:
        raise BalanceConfigError(
            "training frame: it has a `repeats` column, so it is a compact frame (`balance --compact`: each "
            "row counts `repeats` times) and rebalancing would count every row once; rebalance the batch it "
            "was made from, or train on it as it is (`tailguard train --data`)"
        )


def _check_frame(train: pd.DataFrame, config: BalanceConfig) -> np.ndarray:
    missing = [c for c in REQUIRED_COLUMNS if c not in train.columns]
    if missing:
        raise BalanceConfigError(
            f"training frame: missing column(s) {missing}; rebalance expects the canonical frame "
            "(docs/ARCHITECTURE.md), e.g. from tailguard.data.load_batch"
        )
    refuse_compact(list(train.columns))
    labels = train["label"].to_numpy()
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        raise BalanceConfigError(
            "training frame: column 'label' must be 0/1; offending values "
            f"{pd.unique(labels[bad])[:5].tolist()}"
        )
    labels = labels.astype(np.int8, copy=False)
    n_pos = int(labels.sum())
    needs_positives = [s for s in ("random_under", "random_over", "stratified") if s in config.strategies]
    if n_pos == 0 and needs_positives:
        raise BalanceConfigError(
            f"{needs_positives[0]} would leave no positives: the training split ({len(train)} rows) has no "
            "rows with label == 1"
        )
    return labels


def rebalance(
    train_df: pd.DataFrame,
    config: BalanceConfig,
    *,
    back_translate: Callable[[list[str]], list[str]] | None = None,
    report: bool = True,
    compact: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """Return the training frame to learn from and the before/after report (JSON-able).

    Only the training split comes in; the input is never modified. Resampled rows keep their `row_id`;
    augmented rows get `augmented=True`, their `source_row_id` and a negative `row_id`. A `weight` column
    (mean 1) is written when a weighting strategy is on. `report=False` skips the bucket statistics (the
    benchmark measures resampling alone). `compact=True` returns each distinct row once with a `repeats`
    column (how many times it counts) instead of writing the duplicates out; rows that are all kept share the
    input's columns read-only. `expand` turns it into the written-out frame; the trainer reads it as is.

    train_df: the canonical frame (query, item_id, item_title, label 0/1, row_id; docs/ARCHITECTURE.md).
    Strategies run in ORDER whatever order config lists them. Returns (frame, report): the frame has
    train_df's columns plus `augmented`, `source_row_id`, optional `weight` (float, mean 1 over the counted
    rows) and, compact, `repeats` (int32 >= 1); its row count, counting repeats, is what training sees.
    The report holds strategies, options, notes, augmented_rows and per-bucket before/after counts, label
    shares and Kish effective sample size (rows; buckets head / torso / tail by cumulative share of
    interactions, edges 50% / 80%). Same seed, same output, compact or not (tested per strategy).
    Sources: random_under / random_over as imbalanced-learn's RandomUnderSampler / RandomOverSampler
    (checked against them in the tests); class_balanced weights (1 - beta) / (1 - beta^n_y) from Cui et al.
    2019; augment is EDA (Wei & Zou 2019) with synonyms mined from the batch.

    Raises BalanceConfigError for a missing required column, a label outside 0/1, a compact input (a
    `repeats` column: refuse_compact), or random_under / random_over / stratified on a split with no
    positives.
    """
    labels = _check_frame(train_df, config)
    rng = np.random.default_rng(config.seed)
    keys = _Keys(train_df)
    strategies = [s for s in ORDER if s in config.strategies]
    notes: list[str] = []

    draws = _Draws(config, rng, strategies, notes)
    if compact and not RESHAPING & set(strategies):
        out, src, counts = _compact_every_row(train_df, labels, draws)
    else:
        need_src = report or bool(WEIGHTING & set(strategies))
        out, src, counts = _resample_rows(train_df, labels, keys, draws, back_translate, compact, need_src)

    weights = None
    if "popularity_reweight" in strategies:
        popularity = keys.get(config.reweight_key)[1]
        weights = popularity_weights(popularity if src is None else popularity[src], config.alpha, counts)
    if "class_balanced" in strategies:
        cb = class_balanced_weights(out["label"].to_numpy(), config.beta, counts)
        weights = cb if weights is None else weights * cb
    if weights is not None:
        out["weight"] = weights / np.average(weights, weights=counts)
        weights = out["weight"].to_numpy()

    out_labels = out["label"].to_numpy()
    result: dict[str, Any] = {
        "strategies": strategies or ["none"],
        "options": config.model_dump(mode="json"),
        "augmented_rows": _count(out["augmented"].to_numpy(), counts),
        # A balanced file read back brings its augmented rows with it (contract.own_columns).
        "augmented_rows_before": int(train_df["augmented"].sum()) if "augmented" in train_df.columns else 0,
        "compact": compact,
        "notes": notes,
    }
    if report:
        result["before"] = _summary(labels, np.arange(len(train_df)), keys, None)
        result["after"] = _summary(out_labels, src, keys, weights, counts)
    else:
        result["before"] = {"rows": len(train_df), "positives": int(labels.sum())}
        result["after"] = {"rows": _count(None, counts, len(out)), "positives": _count(out_labels, counts)}
    return out, result


@dataclass
class _Draws:
    """What every resampling step reads: the options, the one generator (drawn from in ORDER, so a seed
    means one output), the strategies on, and the notes the report collects."""

    config: BalanceConfig
    rng: np.random.Generator
    strategies: list[str]
    notes: list[str]


def _resample_rows(
    train_df: pd.DataFrame,
    labels: np.ndarray,
    keys: _Keys,
    draws: _Draws,
    back_translate: Callable[[list[str]], list[str]] | None,
    compact: bool,
    need_src: bool,
) -> tuple[pd.DataFrame, np.ndarray | None, np.ndarray | None]:
    """(frame, each row's source position in train_df, repeats when compact) after caps, strata, augmentation,
    under- and over-sampling."""
    pos, augmented, aug_src = _shape_population(train_df, labels, keys, draws, back_translate)
    # Label ratio over kept rows plus augmented rows (each labelled as its source row).
    n_combined = len(pos) + len(aug_src)
    combined_labels = np.concatenate([labels[pos], labels[aug_src]]) if len(aug_src) else labels[pos]
    combined, duplicates = _label_ratio(combined_labels, draws)
    del combined_labels

    counts = None  # per output row, how many times it counts (compact only)
    if compact:
        out, src, counts = _compact(train_df, pos, combined, duplicates, augmented, aug_src, n_combined)
        del combined, duplicates
    elif augmented is None or ((combined < len(pos)).all() and (duplicates < len(pos)).all()):
        every_row = len(combined) == len(train_df)  # positions only increase: every input row, in order
        kept = None if every_row else pos[combined]
        copies = duplicates if len(pos) == len(train_df) else pos[duplicates]
        # Free what the output no longer needs before building it (80 + 80 + 64 MB at 10M rows).
        del pos, combined, duplicates
        src = None  # source positions feed only the weights and the report (18M rows at 10M input rows)
        if need_src or kept is not None:
            src = np.concatenate([np.arange(len(train_df)) if kept is None else kept, copies])
        columns = _take_columns(train_df, copies if every_row else src, keep_all=every_row)
        if "augmented" not in columns:
            columns["augmented"] = np.zeros(len(columns["row_id"]), dtype=bool)
        if "source_row_id" not in columns:
            columns["source_row_id"] = columns["row_id"].astype(np.int64, copy=True)
        out = _frame(columns)
    else:
        out, src = _merge_augmented(train_df, pos, np.concatenate([combined, duplicates]), augmented, aug_src)
    out = _ensure_markers(out)
    return out, src, counts


def _shape_population(
    train_df: pd.DataFrame,
    labels: np.ndarray,
    keys: _Keys,
    draws: _Draws,
    back_translate: Callable[[list[str]], list[str]] | None,
) -> tuple[np.ndarray, pd.DataFrame | None, np.ndarray]:
    """(positions into train_df kept by caps and strata, augmented rows | None, their source positions)."""
    config, rng, strategies = draws.config, draws.rng, draws.strategies
    pos = np.arange(len(train_df))  # positions into train_df of the rows kept so far
    if "popularity_cap" in strategies:
        item_codes = pd.factorize(train_df["item_id"])[0]
        query_codes = pd.factorize(train_df["query"])[0]
        pos = popularity_cap_positions(
            item_codes, query_codes, labels, config.cap_k, config.cap_query_k or config.cap_k, rng
        )
    if "stratified" in strategies:
        buckets = keys.get(config.strata_key)[0][pos]
        share = config.positive_share if config.positive_share is not None else float(labels[pos].mean())
        pos = pos[stratified_positions(buckets, labels[pos], config.bucket_shares, share, rng)]
    augmented, aug_src = None, np.empty(0, np.int64)
    if "augment" in strategies:
        augmented, aug_src = _augment(train_df, pos, labels, keys, config, back_translate, draws.notes)
    return pos, augmented, aug_src


def _label_ratio(combined_labels: np.ndarray, draws: _Draws) -> tuple[np.ndarray, np.ndarray]:
    """(positions kept by under-sampling, positions duplicated by over-sampling), into combined_labels.

    Under-sampling only drops negatives. Duplicates are kept apart from the rows they copy: when every input
    row survives (random_over alone) the output is the input's columns followed by the duplicates, with no
    18M-row position array.
    """
    config, rng, strategies, notes = draws.config, draws.rng, draws.strategies, draws.notes
    combined = np.arange(len(combined_labels))
    if "random_under" in strategies:
        combined = random_under_positions(combined_labels, config.ratio, rng)
        if len(combined) == len(combined_labels):
            notes.append(
                f"random_under: already at or below {config.ratio} negatives per positive; nothing dropped"
            )
    duplicates = np.empty(0, dtype=np.int64)
    if "random_over" in strategies:
        extra = random_over_extra(combined_labels[combined], config.over_ratio, rng)
        duplicates = extra if len(combined) == len(combined_labels) else combined[extra]
        if len(duplicates) == 0:
            notes.append(f"random_over: already at or above {config.over_ratio} positives per negative")
    return combined, duplicates


def _merge_augmented(
    train_df: pd.DataFrame,
    pos: np.ndarray,
    combined: np.ndarray,
    augmented: pd.DataFrame,
    aug_src: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray]:
    """(written-out frame, source positions) for `combined` positions into kept rows then augmented rows."""
    from_train = combined < len(pos)
    parts = np.flatnonzero(from_train)
    out = pd.concat(
        [
            train_df.take(pos[combined[from_train]]).assign(_order=parts),
            augmented.take(combined[~from_train] - len(pos)).assign(_order=np.flatnonzero(~from_train)),
        ],
        ignore_index=True,
    )
    out = out.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    return out, np.concatenate([pos, aug_src])[combined]


def _count(values: np.ndarray | None, counts: np.ndarray | None, n: int = 0) -> int:
    """Sum of values (all ones when None, over n rows) with each row counted `counts` times."""
    if values is None:
        return int(counts.sum()) if counts is not None else n
    values = values.astype(np.int64)
    return int(values.sum() if counts is None else values @ counts)


def _compact_every_row(
    train_df: pd.DataFrame, labels: np.ndarray, draws: _Draws
) -> tuple[pd.DataFrame, None, np.ndarray]:
    """Compact output when every input row survives: train_df's columns read-only, `repeats` from the copies.

    The same draws as the general path (same seed, same rows), without its position arrays: at 10M rows
    ~0.1 GB and ~0.2 s instead of ~0.6 GB and 0.6 s (bench/balance.py).
    """
    config, rng, strategies, notes = draws.config, draws.rng, draws.strategies, draws.notes
    repeats = np.ones(len(train_df), dtype=np.int32)
    if "random_over" in strategies:
        positives, copies = random_over_copies(labels, config.over_ratio, rng)
        if not copies.any():
            notes.append(f"random_over: already at or above {config.over_ratio} positives per negative")
        repeats[positives] += copies.astype(np.int32)
    columns = _with_markers(_shared_columns(train_df))
    columns["repeats"] = repeats
    return _ensure_markers(_frame(columns)), None, repeats


def _compact(
    train_df: pd.DataFrame,
    pos: np.ndarray,
    combined: np.ndarray,
    duplicates: np.ndarray,
    augmented: pd.DataFrame | None,
    aug_src: np.ndarray,
    n_combined: int,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(frame of the distinct rows with `repeats`, their source positions in train_df, the repeats).

    Positions index the kept rows (`pos`) followed by the augmented rows. Kept rows are taken once each; when
    every input row survives they are train_df's columns, shared read-only (random_over alone takes the
    shorter `_compact_every_row`).
    """
    counts = np.bincount(combined, minlength=n_combined)
    if len(duplicates):
        counts += np.bincount(duplicates, minlength=n_combined)
    picked = np.flatnonzero(counts)
    repeats = counts[picked].astype(np.int32)
    in_train = picked < len(pos)
    train_pos = pos[picked[in_train]]
    every_row = len(train_pos) == len(train_df)  # positions only increase: every input row, in order
    columns = _shared_columns(train_df) if every_row else _take_columns(train_df, train_pos, keep_all=False)
    out = _frame(_with_markers(columns))
    src = train_pos
    aug_idx = picked[~in_train] - len(pos)
    if augmented is not None and len(aug_idx):
        out = pd.concat([out, augmented.take(aug_idx)], ignore_index=True)
        src = np.concatenate([train_pos, aug_src[aug_idx]])
    out = _ensure_markers(out)
    out["repeats"] = repeats
    return out, src, repeats


def _with_markers(columns: dict[Any, Any]) -> dict[Any, Any]:
    """The columns plus `augmented` (False) and `source_row_id` (= row_id) where missing."""
    n = len(columns["row_id"])
    if "augmented" not in columns:
        columns["augmented"] = np.zeros(n, dtype=bool)
    if "source_row_id" not in columns:
        columns["source_row_id"] = columns["row_id"]  # shared read-only: assigning replaces, never writes
    return columns


def _shared_columns(df: pd.DataFrame) -> dict[Any, Any]:
    """df's columns without copying: numpy columns as read-only views (writing raises), others copied."""
    columns = {}
    for name, series in df.items():
        if isinstance(series.dtype, np.dtype):
            view = series.to_numpy().view()
            view.flags.writeable = False
            columns[name] = view
        else:
            columns[name] = series.array.copy()  # categoricals copy only their int codes
    return columns


def expand(df: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The written-out frame of a compact one: each row `repeats` times (consecutive), no `repeats` column."""
    if "repeats" not in df.columns:
        return df if columns is None else df[columns]
    keep = [c for c in df.columns if c != "repeats"] if columns is None else columns
    return take_rows(df[keep], np.repeat(np.arange(len(df)), df["repeats"].to_numpy()))


def take_rows(df: pd.DataFrame, positions: np.ndarray, *, keep_all: bool = False) -> pd.DataFrame:
    """Rows at positions (after every row of df, in order, when keep_all) with a fresh RangeIndex."""
    return _frame(_take_columns(df, positions, keep_all), names=df.columns)


def _take_columns(df: pd.DataFrame, positions: np.ndarray, keep_all: bool) -> dict[Any, Any]:
    """One array per column: rows at positions, after every row of df when keep_all.

    One numpy operation per column: DataFrame.take spent 8.0 s on 18M rows x 3 object columns where numpy's
    take needs 0.2-1.2 s per column, and `Series.array.to_numpy()` scanned object columns for NA (2.0 s at
    10M rows). keep_all copies the input rows sequentially and needs no position array for them.
    """
    positions = np.asarray(positions, dtype=np.intp)
    n, k = len(df), len(positions)
    if k and (positions.min() < -n or positions.max() >= n):
        raise IndexError(f"take_rows: positions must lie in [-{n}, {n}) for a frame of {n} rows")
    if keep_all and k and positions.min() < 0:
        positions = np.where(positions < 0, positions + n, positions)  # mode="clip" below would not wrap
    columns = {}
    for name, series in df.items():
        if isinstance(series.dtype, np.dtype):
            values = series.to_numpy()
            if keep_all:
                # Straight into one buffer: np.concatenate would hold a k-row temporary per column.
                column = np.empty(n + k, dtype=values.dtype)
                column[:n] = values
                # mode="clip" because mode="raise" buffers `out`; positions come from this frame, in range.
                np.take(values, positions, out=column[n:], mode="clip")
            else:
                column = values.take(positions)
        elif isinstance(series.dtype, pd.CategoricalDtype):
            # A take on the int codes; concatenating Categoricals instead re-hashed the categories (0.6 s at
            # 10M rows) to prove what the shared dtype already says.
            codes = series.array.codes
            taken = np.concatenate([codes, codes.take(positions)]) if keep_all else codes.take(positions)
            column = pd.Categorical.from_codes(taken, dtype=series.dtype, validate=False)
        else:
            column = series.array.take(np.concatenate([np.arange(n), positions]) if keep_all else positions)
        columns[name] = column
    return columns


def _frame(columns: dict[Any, Any], names: pd.Index | None = None) -> pd.DataFrame:
    """A DataFrame over these arrays without copying them (column labels from names, else the keys)."""
    n = len(next(iter(columns.values()))) if columns else 0
    # copy=False: no consolidation of same-dtype columns into 2-D blocks (a second full copy); assigning a
    # column afterwards (df[name] = array) would copy it again.
    out = pd.DataFrame(columns, index=pd.RangeIndex(n), copy=False)
    if names is not None:
        out.columns = names
    return out


def _ensure_markers(out: pd.DataFrame) -> pd.DataFrame:
    if "augmented" not in out.columns:
        out["augmented"] = np.zeros(len(out), dtype=bool)
    elif out["augmented"].dtype != bool:
        out["augmented"] = out["augmented"].eq(True).to_numpy()  # missing (rows from train_df) -> False
    if "source_row_id" not in out.columns:
        out["source_row_id"] = out["row_id"].to_numpy(dtype=np.int64, copy=True)
    else:
        # Whole-column assignments: they replace a column and never write into one (which may be read-only).
        own = out["source_row_id"].isna().to_numpy()
        if own.any():
            out["source_row_id"] = np.where(own, out["row_id"].to_numpy(), out["source_row_id"].to_numpy())
        if out["source_row_id"].dtype != np.int64:
            out["source_row_id"] = out["source_row_id"].astype(np.int64)
    return out


def _augment(
    train_df: pd.DataFrame,
    pos: np.ndarray,
    labels: np.ndarray,
    keys: _Keys,
    config: BalanceConfig,
    back_translate: Callable[[list[str]], list[str]] | None,
    notes: list[str],
) -> tuple[pd.DataFrame, np.ndarray]:
    """EDA copies of the selected rows among those kept, and each copy's source position in train_df."""
    chosen = labels[pos] == 1 if config.aug_rows != "tail_query_rows" else np.ones(len(pos), dtype=bool)
    tail = 2
    if config.aug_rows in ("tail_query_positives", "tail_positives", "tail_query_rows"):
        query_tail = keys.get("query")[0][pos] == tail
    if config.aug_rows in ("tail_item_positives", "tail_positives"):
        item_tail = keys.get("item")[0][pos] == tail
    if config.aug_rows in ("tail_query_positives", "tail_query_rows"):
        chosen &= query_tail
    elif config.aug_rows == "tail_item_positives":
        chosen &= item_tail
    elif config.aug_rows == "tail_positives":
        chosen &= query_tail | item_tail
    sources = pos[chosen]
    if config.aug_max_rows is not None and len(sources) > config.aug_max_rows:
        sub_rng = np.random.default_rng([config.seed, 1])
        sources = np.sort(sub_rng.choice(sources, size=config.aug_max_rows, replace=False))
    if len(sources) == 0:
        notes.append(f"augment: no rows matched aug_rows={config.aug_rows}; nothing augmented")
    rows = train_df.iloc[sources]
    synonyms = augment.CURATED_SYNONYMS
    if config.aug_mine_synonyms and len(sources):
        mined = augment.mine_synonyms(train_df.iloc[pos], seed=config.seed)
        synonyms = augment.merge_synonyms(augment.CURATED_SYNONYMS, mined)
        notes.append(f"augment: {len(mined)} terms with synonyms mined from the batch")
    out, within = augment.augment_rows(
        rows,
        alpha=config.aug_alpha,
        copies=config.aug_copies,
        fields=config.aug_fields,
        operations=config.aug_ops,
        synonyms=synonyms,
        seed=config.seed,
        back_translate=back_translate,
        return_positions=True,
    )
    return out, sources[within]


def _summary(
    labels: np.ndarray,
    src: np.ndarray | None,
    keys: _Keys,
    weights: np.ndarray | None,
    counts: np.ndarray | None = None,
) -> dict:
    """Label share, rows, positive rate per item and query bucket, Kish ESS; rows counted `counts` times."""
    c = np.ones(len(labels)) if counts is None else counts.astype(np.float64)
    n = int(c.sum())
    y = (labels != 0).astype(np.float64)
    share = float(c @ y / n) if n else 0.0
    summary: dict[str, Any] = {
        "rows": n,
        "positives": int(round(c @ y)),
        "label_share": {"0": 1 - share if n else 0.0, "1": share},
        "effective_sample_size": round(kish_ess(weights, n, counts), 2),
    }
    if weights is not None:
        summary["weighted_positive_share"] = float((c * weights) @ y / (c @ weights))
        summary["weight"] = {
            "min": float(weights.min()),
            "max": float(weights.max()),
            "mean": float(c @ weights / n),
        }
    for key in ("item", "query"):
        bucket = keys.get(key)[0] if src is None else keys.get(key)[0][src]
        rows = np.round(np.bincount(bucket, weights=c, minlength=3)).astype(np.int64)
        pos = np.bincount(bucket, weights=c * y, minlength=3)
        summary[f"{key}_buckets"] = {
            name: {
                "rows": int(rows[i]),
                "positives": int(pos[i]),
                "positive_rate": float(pos[i] / rows[i]) if rows[i] else None,
            }
            for i, name in enumerate(BUCKETS)
        }
    return summary


# --- presentation ---------------------------------------------------------------------------------


def report_rows(report: dict) -> list[dict]:
    """Flat before/after rows (metric, before, after) for a Prefect table artifact."""
    before, after = report["before"], report["after"]
    rows: list[dict] = [
        {"metric": "rows", "before": before["rows"], "after": after["rows"]},
        {"metric": "positives", "before": before["positives"], "after": after["positives"]},
    ]
    if "label_share" in before:
        rows.append(
            {
                "metric": "positive share",
                "before": round(before["label_share"]["1"], 4),
                "after": round(after["label_share"]["1"], 4),
            }
        )
        rows.append(
            {
                "metric": "effective sample size",
                "before": before["effective_sample_size"],
                "after": after["effective_sample_size"],
            }
        )
        if "weighted_positive_share" in after:
            rows.append(
                {
                    "metric": "weighted positive share",
                    "before": round(before["label_share"]["1"], 4),
                    "after": round(after["weighted_positive_share"], 4),
                }
            )
        for key in ("item", "query"):
            for bucket in BUCKETS:
                b, a = before[f"{key}_buckets"][bucket], after[f"{key}_buckets"][bucket]
                rows.append({"metric": f"{key} {bucket} rows", "before": b["rows"], "after": a["rows"]})
                rows.append(
                    {
                        "metric": f"{key} {bucket} positive rate",
                        "before": None if b["positive_rate"] is None else round(b["positive_rate"], 4),
                        "after": None if a["positive_rate"] is None else round(a["positive_rate"], 4),
                    }
                )
    before = report.get("augmented_rows_before", 0)  # reports stored before it was recorded: none
    rows.append({"metric": "augmented rows", "before": before, "after": report["augmented_rows"]})
    return rows


def report_table(report: dict) -> str:
    """Plain-text before/after table for the CLI."""
    rows = report_rows(report)
    cells = [("metric", "before", "after")] + [
        (
            r["metric"],
            "-" if r["before"] is None else str(r["before"]),
            "-" if r["after"] is None else str(r["after"]),
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    lines = [f"strategies: {', '.join(report['strategies'])}"]
    for i, (m, b, a) in enumerate(cells):
        lines.append(f"{m:<{widths[0]}}  {b:>{widths[1]}}  {a:>{widths[2]}}")
        if i == 0:
            lines.append("-" * (sum(widths) + 4))
    lines.extend(f"note: {n}" for n in report.get("notes", []))
    return "\n".join(lines)
