"""The demo generator's long tail and determinism, and the split by query."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tailguard.data import split_by_query
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
