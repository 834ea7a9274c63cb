"""The demo generator's long tail and determinism, and the split by query."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tailguard.data import query_folds, split_by_query, subsample_queries
from tailguard.demo import DemoConfig, generate_batches


def test_demo_is_deterministic_and_long_tailed(tmp_path):
    config = DemoConfig(rows=20_000, batches=2, seed=3)
    first = generate_batches(config, tmp_path / "a")
    second = generate_batches(config, tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    df = pd.read_csv(first[0])
    assert set(df.columns) >= {"query", "item_id", "item_title", "label", "category", "price", "relevance"}
    assert 0.06 < df["label"].mean() < 0.14
    counts = df["item_id"].value_counts()
    # Zipf: the top 1% of items hold far more than 1% of rows, and most items are rare.
    top = counts.iloc[: max(1, len(counts) // 100)].sum() / len(df)
    assert top > 0.2
    assert (counts <= 2).mean() > 0.5
    assert df["item_title"].str.contains("[\u4e00-\u9fff]").mean() > 0.1  # Chinese titles present
    # Tail items have few positives: the rarest half of the catalogue holds a small share of them.
    pos = df.groupby("item_id")["label"].sum().reindex(counts.index)
    assert pos.iloc[len(pos) // 2 :].sum() < 0.25 * pos.sum()


def test_demo_streams_in_chunks_identically_to_one_chunk_sizes(tmp_path):
    chunked = generate_batches(DemoConfig(rows=5_000, batches=1, chunk_rows=1_000), tmp_path / "c", "parquet")
    df = pd.read_parquet(chunked[0])
    assert len(df) == 5_000
    assert df["label"].isin([0, 1]).all()


def test_later_batches_hold_cold_items(tmp_path):
    paths = generate_batches(DemoConfig(rows=5_000, batches=2, seed=1), tmp_path)
    first, second = (pd.read_csv(p) for p in paths)
    cold = ~second["item_id"].isin(first["item_id"])
    assert cold.sum() > 0


def test_split_by_query_never_splits_a_query_and_is_stable():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {"query": rng.choice([f"q{i}" for i in range(500)], 5_000), "label": rng.integers(0, 2, 5_000)}
    )
    train, held = split_by_query(df, 0.2, seed=0)
    assert set(train["query"]).isdisjoint(held["query"])
    assert len(train) + len(held) == len(df)
    assert 0.1 < held["query"].nunique() / df["query"].nunique() < 0.3
    again_train, _ = split_by_query(df.sample(frac=1, random_state=1), 0.2, seed=0)
    assert set(again_train["query"]) == set(train["query"])  # order of rows does not matter


def _queries_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 12, 200)
    queries = np.repeat([f"q{i:03d}" for i in range(200)], sizes)
    return pd.DataFrame({"query": queries, "label": rng.integers(0, 2, len(queries))}).sample(
        frac=1.0, random_state=1
    )


def test_query_folds_keep_queries_whole_and_are_stable():
    df = _queries_frame()
    folds = query_folds(df["query"], 5)
    assert folds.dtype.kind == "i" and set(folds) == set(range(5)) and len(folds) == len(df)
    assert (pd.Series(folds).groupby(df["query"].to_numpy()).nunique() == 1).all()  # a query, one fold
    # A function of the query alone: another row order gives each row the same fold.
    reordered = df.iloc[::-1]
    np.testing.assert_array_equal(query_folds(reordered["query"], 5), folds[::-1])
    # Roughly even: 200 queries over 5 folds, each fold 40 +- 20 queries.
    per_fold = pd.Series(folds).groupby(df["query"].to_numpy()).first().value_counts()
    assert per_fold.between(20, 60).all()
    assert (query_folds(df["query"], 1) == 0).all()
    with pytest.raises(ValueError, match="n_folds"):
        query_folds(df["query"], 0)


def test_subsample_queries_takes_whole_queries_up_to_the_cap_seeded():
    df = _queries_frame()
    sub = subsample_queries(df, 300, seed=4)
    assert 0 < len(sub) <= 300 and list(sub.index) == list(range(len(sub)))
    sizes = df.groupby("query").size()
    got = sub.groupby("query").size()
    assert (got == sizes.reindex(got.index)).all()  # a query is never cut
    # Rows keep their order in the input.
    kept = df[df["query"].isin(set(sub["query"]))]
    pd.testing.assert_frame_equal(sub, kept.reset_index(drop=True))
    pd.testing.assert_frame_equal(subsample_queries(df, 300, seed=4), sub)  # same seed, same rows
    assert set(subsample_queries(df, 300, seed=5)["query"]) != set(sub["query"])
    pd.testing.assert_frame_equal(subsample_queries(df, 0, seed=4), df.reset_index(drop=True))
    pd.testing.assert_frame_equal(subsample_queries(df, len(df), seed=4), df.reset_index(drop=True))
