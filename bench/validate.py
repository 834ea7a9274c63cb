"""Benchmark: tailguard validate_frame (GX suites) vs plain vectorised pandas checks of the same rules.

    .venv/bin/python bench/validate.py --rows 1000000 10000000

Prints time and peak traced memory (tracemalloc, a separate pass) per method and the ratios.
`plain` is the floor the issue asks for: the idiomatic pandas check of each rule over every row.
`distinct` is the same rules in pure pandas with tailguard's trick (string rules on distinct values,
duplicates on factorized codes), so `tailguard / distinct` is what GX itself adds.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tailguard.validation import ValidationPolicy, batch_stats, load_suite_json, validate_frame  # noqa: E402


def _regex(suite: str, rule: str) -> str:
    """The exact regex a suite uses, so both floors check the same rule as GX."""
    exps = load_suite_json(suite)["expectations"]
    return next(e["kwargs"]["regex"] for e in exps if e["meta"]["rule"] == rule)


CONTROL = _regex("titles", "no_control_characters")
MARKUP = _regex("titles", "no_markup")
BLANK = _regex("queries", "query_not_blank")


def generate(rows: int, seed: int = 0) -> pd.DataFrame:
    """Long-tail batch: Zipf-ish queries and items, titles fixed per item, ~25% positives."""
    rng = np.random.default_rng(seed)
    n_items, n_queries = max(rows // 5, 100), max(rows // 20, 50)
    words = np.array(
        ["acme", "steel", "kettle", "lamp", "desk", "usb", "cable", "garden", "hose", "drill", "2 pack"]
    )
    item_names = np.array([f"I{i:08d}" for i in range(n_items)], dtype=object)
    title_words = rng.integers(0, len(words), (n_items, 4))
    titles = np.array([" ".join(words[w]) + f" model {i}" for i, w in enumerate(title_words)], dtype=object)
    queries = np.array([f"{words[i % len(words)]} {i}" for i in range(n_queries)], dtype=object)
    # Zipf-like popularity via a power of a uniform draw: rank ~ U^3 puts most rows on few ids.
    item_idx = (n_items * rng.random(rows) ** 3).astype(np.int64)
    query_idx = (n_queries * rng.random(rows) ** 2).astype(np.int64)
    return pd.DataFrame(
        {
            "query": queries[query_idx],
            "item_id": item_names[item_idx],
            "item_title": titles[item_idx],
            "label": (rng.random(rows) < 0.25).astype(np.int8),
            "price": np.round(rng.gamma(2.0, 20.0, rows), 2),
            "category": pd.Categorical(rng.integers(0, 30, rows).astype(str)),
        }
    )


def plain_checks(df: pd.DataFrame, previous: dict, p: ValidationPolicy) -> dict:
    """Every rule of the suites as idiomatic vectorised pandas over all rows (the floor)."""
    out = {}
    for col in ("query", "item_id", "item_title", "label"):
        out[f"{col}_nulls"] = int(df[col].isna().sum())
    out["label_in_0_1"] = int((~df["label"].isin([0, 1])).sum())
    out["label_type"] = pd.api.types.is_integer_dtype(df["label"])
    out["price_negative"] = int((df["price"] < 0).sum())
    out["price_type"] = pd.api.types.is_float_dtype(df["price"])
    title_len = df["item_title"].str.len()
    out["title_len"] = int(((title_len < p.title_min_length) | (title_len > p.title_max_length)).sum())
    out["title_control"] = int(df["item_title"].str.contains(CONTROL, regex=True).sum())
    out["title_markup"] = int(df["item_title"].str.contains(MARKUP, regex=True).sum())
    query_len = df["query"].str.len()
    out["query_len"] = int(((query_len < 1) | (query_len > p.query_max_length)).sum())
    out["query_blank"] = int(df["query"].str.contains(BLANK, regex=True).sum())
    out["query_control"] = int(df["query"].str.contains(CONTROL, regex=True).sum())
    rows = len(df)
    positive = float((df["label"] == 1).mean())
    out["min_rows"] = rows >= p.min_rows
    out["positive_share"] = p.positive_share_min <= positive <= p.positive_share_max
    out["duplicates"] = float(df.duplicated(["query", "item_id"]).mean()) <= p.max_duplicate_pair_share
    out["row_ratio"] = p.row_count_ratio_min <= rows / previous["rows"] <= p.row_count_ratio_max
    out["positive_shift"] = abs(positive - previous["positive_share"]) <= p.positive_share_max_shift
    digest = pd.util.hash_pandas_object(df[["query", "item_id", "item_title", "label"]], index=False)
    out["identical"] = int(digest.sum()) == previous.get("plain_digest")
    unseen = ~df["category"].isin(previous["category_values"])
    out["unseen_categories"] = float(unseen.mean()) <= p.max_unseen_category_share
    return out


def distinct_checks(df: pd.DataFrame, previous: dict, p: ValidationPolicy) -> dict:
    """The same rules in pure pandas with tailguard's shortcuts (no GX): the cost GX adds is the rest."""
    out = {}
    codes = {}
    for col in ("query", "item_id", "item_title"):
        c, u = pd.factorize(df[col])
        codes[col] = (c, pd.Series(u, dtype=object))
        out[f"{col}_nulls"] = int((c < 0).sum())
    out["label_nulls"] = int(df["label"].isna().sum())
    out["label_in_0_1"] = int((~df["label"].isin([0, 1])).sum())
    out["price_negative"] = int((df["price"] < 0).sum())
    titles = codes["item_title"][1]
    tl = titles.str.len()
    out["title_len"] = int(((tl < p.title_min_length) | (tl > p.title_max_length)).sum())
    out["title_control"] = int(titles.str.contains(CONTROL, regex=True).sum())
    out["title_markup"] = int(titles.str.contains(MARKUP, regex=True).sum())
    queries = codes["query"][1]
    ql = queries.str.len()
    out["query_len"] = int(((ql < 1) | (ql > p.query_max_length)).sum())
    out["query_blank"] = int(queries.str.contains(BLANK, regex=True).sum())
    out["query_control"] = int(queries.str.contains(CONTROL, regex=True).sum())
    pair = codes["query"][0].astype(np.int64) * (len(codes["item_id"][1]) + 1) + codes["item_id"][0]
    out["duplicates"] = float(pd.Series(pair).duplicated().mean())
    out["positive"] = float((df["label"] == 1).mean())
    out["unseen_categories"] = float((~df["category"].isin(previous["category_values"])).mean())
    return out


def measure(fn, repeat: int) -> tuple[float, float]:
    """(best wall seconds over repeat runs, peak traced MiB in one extra traced run)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    gc.collect()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per method (best is kept)")
    args = parser.parse_args()
    policy = ValidationPolicy()
    # Warm-up: importing GX and building its first context costs ~3-5 s once per process, not per batch.
    validate_frame(generate(1_000), "warmup", None, policy)
    print(f"{'rows':>11} {'method':>10} {'seconds':>8} {'peak MiB':>9} {'x plain':>8}")
    for rows in args.rows:
        df = generate(rows)
        prev_df = generate(rows, seed=1)
        previous = batch_stats(prev_df)
        previous["plain_digest"] = int(
            pd.util.hash_pandas_object(
                prev_df[["query", "item_id", "item_title", "label"]], index=False
            ).sum()
        )
        del prev_df
        result = validate_frame(df, "bench", previous, policy)
        assert result.success and not result.could_not_run, result.message()
        timings = {
            "plain": measure(lambda df=df, prev=previous: plain_checks(df, prev, policy), args.repeat),
            "distinct": measure(lambda df=df, prev=previous: distinct_checks(df, prev, policy), args.repeat),
            "tailguard": measure(
                lambda df=df, prev=previous: validate_frame(df, "bench", prev, policy), args.repeat
            ),
        }
        floor_s, floor_mb = timings["plain"]
        for method, (seconds, mib) in timings.items():
            print(f"{rows:>11,} {method:>10} {seconds:>8.2f} {mib:>9.0f} {seconds / floor_s:>7.2f}x")
        print(
            f"{rows:>11,} ratios: tailguard/plain time {timings['tailguard'][0] / floor_s:.2f}x "
            f"memory {timings['tailguard'][1] / floor_mb:.2f}x; tailguard/distinct time "
            f"{timings['tailguard'][0] / timings['distinct'][0]:.2f}x (what GX adds)",
            flush=True,
        )
        del df


if __name__ == "__main__":
    main()
