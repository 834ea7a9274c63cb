"""Popularity buckets on the real Home Depot dev file, and the protected-tail gate on a seen-once regression.

    .venv/bin/python bench/popularity_buckets.py [--data PATH] [--bootstrap 1000]

(default data: ../shared/data/homedepot/dev.csv.gz next to the checkout)

Splits the file as `retrain` does (tailguard.data.split_by_query(df, 0.2, 0)), prints the training
item-count distribution, the bucket cut-offs (metrics.slice_cutoffs) and the eval slice sizes, then scores
a production model of known quality (true relevance + noise) and a candidate equal to it except random on
the eval rows whose item was seen exactly once in training, and prints the gate's protected-tail checks.
Not a test: it needs the shared data file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tailguard.data import split_by_query  # noqa: E402
from tailguard.gate import decide_evaluation, load_policy  # noqa: E402
from tailguard.metrics import EvalConfig, assign_slices, evaluate, slice_cutoffs  # noqa: E402


def load(path: Path) -> pd.DataFrame:
    """The dev file with ids and text as the exact strings in it (no NA coercion)."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return df.assign(label=df["label"].astype(int), relevance=df["relevance"].astype(float))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/homedepot/dev.csv.gz")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    df = load(args.data)
    train, held = split_by_query(df, 0.2, 0)
    counts = train["item_id"].value_counts()
    once = counts == 1
    print(f"{args.data.name}: {len(df):,} rows; train {len(train):,} rows / {counts.size:,} items")
    print(f"eval {len(held):,} rows; train items seen once: {once.mean():.1%} of items,")
    print(f"  {counts[once].sum() / counts.sum():.1%} of training rows")

    config = EvalConfig(n_bootstrap=args.bootstrap, seed=args.seed)
    cut = slice_cutoffs(train, config)["popularity"]
    print(f"\npopularity cut-offs (rule: {cut['rule']})")
    print(f"{'bucket':<8} {'train counts':>14} {'items':>8} {'train rows':>11} {'share':>7}")
    for bucket in ("head", "torso", "tail"):
        if bucket in cut:
            c = cut[bucket]
            span = f"{c['min_train_count']}-{c['max_train_count']}"
            print(f"{bucket:<8} {span:>14} {c['keys']:>8,} {c['train_rows']:>11,} {c['train_share']:>7.1%}")

    slices = assign_slices(held, train, config)
    pop = slices["popularity"].astype(str)
    print(f"\n{'eval slice':<18} {'rows':>7} {'positives':>10}")
    for bucket in ("head", "torso", "tail", "cold"):
        sel = (pop == bucket).to_numpy()
        print(f"popularity:{bucket:<7} {sel.sum():>7,} {int(held['label'][sel].sum()):>10,}")

    rng = np.random.default_rng(args.seed)
    truth = held["relevance"].to_numpy()
    production = 1 / (1 + np.exp(-(2.0 * (truth - 2.0) + rng.normal(0, 1.0, truth.size))))
    seen_once = (slices["item_train_count"] == 1).to_numpy()
    candidate = np.where(seen_once, rng.random(truth.size), production)  # random only on items seen once
    print(f"\ncandidate = production except random on {seen_once.sum():,} eval rows of items seen once")
    res = evaluate(held, train, {"candidate": candidate, "production": production}, config, slices=slices)
    decision = decide_evaluation(res, load_policy())
    for c in decision.checks:
        if c.name.startswith(("protected:popularity:tail", "regression:popularity:tail:roc_auc")):
            print(f"  {c.verdict.upper():<7} {c.name:<40} {c.reason}")
    head = res.diff("popularity:head", "roc_auc")
    print(f"  popularity:head roc_auc difference {head.value:+.4f}")
    print(f"gate: {'PROMOTE' if decision.promote else 'REFUSE'} ({len(decision.failed())} failed checks)")


if __name__ == "__main__":
    main()
