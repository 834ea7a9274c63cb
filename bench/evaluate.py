"""Benchmark: metrics.evaluate (vectorised, paired bootstrap) vs a plain per-slice scikit-learn loop.

    .venv/bin/python bench/evaluate.py --rows 1000000 --queries 50000 --bootstrap 1000 --baseline-resamples 3

Prints wall time and peak memory of evaluate() (candidate + production, every slice, every interval).
The baseline resamples queries and calls scikit-learn per slice (pooled ROC AUC, PR AUC, log loss,
F1, popularity and query-frequency buckets only, so it does less work); it runs a few resamples and
its time is extrapolated linearly to the full count (marked "extrapolated").
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tailguard.metrics import EvalConfig, assign_slices, evaluate  # noqa: E402


def reference_loop(
    eval_df: pd.DataFrame,
    slices: pd.DataFrame,
    scores: dict[str, np.ndarray],
    n_bootstrap: int,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """A straightforward per-slice scikit-learn bootstrap loop (the benchmark's baseline; slow on purpose)."""
    from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score

    rng = np.random.default_rng(seed)
    q, names = pd.factorize(eval_df["query"].astype(str))
    rows_of = pd.Series(np.arange(len(q))).groupby(q).indices
    y = eval_df["label"].to_numpy()
    out: dict[str, list] = {}
    for i in range(n_bootstrap):
        pick = rng.integers(0, len(names), size=len(names))
        idx = np.concatenate([rows_of[j] for j in pick])
        for dim in ("popularity", "query_frequency"):
            sl = slices[dim].astype(str).to_numpy()[idx]
            for value in np.unique(sl):
                m = sl == value
                yy = y[idx][m]
                if yy.min() == yy.max():
                    continue
                diff = []
                for model in ("candidate", "production"):
                    s = scores[model][idx][m]
                    diff.append(
                        (
                            roc_auc_score(yy, s),
                            average_precision_score(yy, s),
                            log_loss(yy, s, labels=[0, 1]),
                            f1_score(yy, s >= 0.5),
                        )
                    )
                out.setdefault(f"{dim}:{value}", []).append(np.subtract(*diff))
        if progress:
            progress(i)
    return {k: np.asarray(v) for k, v in out.items()}


def generate(rows: int, queries: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Eval and train frames with Zipf item popularity, ~30% positives, a category, and two models' scores."""
    rng = np.random.default_rng(seed)
    n_items = max(rows // 5, 100)
    words = np.array(["drill", "saw", "paint", "hammer", "ladder", "tile", "glue", "brush", "hose", "lamp"])

    def frame(n_rows: int, n_q: int, prefix: str) -> pd.DataFrame:
        q = np.sort(rng.integers(0, n_q, n_rows))
        names = np.array(
            [f"{prefix}{i} {words[i % 10]} {words[(i // 10) % 10]}" for i in range(n_q)], dtype=object
        )
        items = (rng.zipf(1.2, n_rows) % n_items).astype(np.int64)
        return pd.DataFrame(
            {
                "query": names[q],
                "item_id": pd.Series(items).map("I{:07d}".format),
                "label": (rng.random(n_rows) < 0.3).astype(np.int8),
                "category": np.array(["tools", "paint", "garden", "kitchen", "lighting"])[items % 5],
            }
        )

    ev = frame(rows, queries, "q")
    train = frame(rows, queries, "t")
    y = ev["label"].to_numpy()
    noise = rng.random(rows)
    scores = {
        "candidate": np.clip(0.30 * y + 0.70 * noise, 0, 1),
        "production": np.clip(0.25 * y + 0.75 * rng.random(rows), 0, 1),
    }
    return ev, train, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=50_000)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--baseline-resamples", type=int, default=3, help="0 skips the scikit-learn loop")
    ap.add_argument("--memory", action="store_true", help="Also a tracemalloc pass (slower) for peak memory")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t = time.perf_counter()
    ev, train, scores = generate(args.rows, args.queries, args.seed)
    print(f"generated {len(ev):,} eval rows / {ev['query'].nunique():,} queries")
    config = EvalConfig(n_bootstrap=args.bootstrap)

    t, c = time.perf_counter(), time.process_time()
    slices = assign_slices(ev, train, config)
    t_slices, c_slices = time.perf_counter() - t, time.process_time() - c
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    no_boot = config.model_copy(update={"n_bootstrap": 0})
    t, c = time.perf_counter(), time.process_time()
    evaluate(ev, train, scores, no_boot, slices=slices)
    t_point, c_point = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    result = evaluate(ev, train, scores, config, slices=slices)
    t_full, c_full = time.perf_counter() - t, time.process_time() - c
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n_slices = len(result.slice_names())
    n_intervals = sum(1 for s in result.comparison_slices().values() for d in s.values() if d.has_interval)

    rows = [
        ("assign_slices", t_slices, c_slices, ""),
        ("evaluate, point estimates only", t_point, c_point, f"{n_slices} slices x 2 models"),
        (f"evaluate, + {args.bootstrap} paired resamples", t_full, c_full, f"{n_intervals} intervals"),
    ]
    if args.memory:
        tracemalloc.start()
        evaluate(ev, train, scores, config, slices=slices)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append(
            ("  peak traced memory", float("nan"), float("nan"), f"{peak / 2**20:,.0f} MiB (tracemalloc)")
        )
    if args.baseline_resamples:
        t, c = time.perf_counter(), time.process_time()
        reference_loop(ev, slices, scores, args.baseline_resamples, seed=args.seed)
        t_base, c_base = time.perf_counter() - t, time.process_time() - c
        n = args.baseline_resamples
        rows.append(
            (f"sklearn loop, {n} resamples (measured)", t_base, c_base, f"{c_base / n:.2f} CPU s/resample")
        )
        rows.append(
            (
                f"sklearn loop, {args.bootstrap} resamples (extrapolated)",
                t_base / n * args.bootstrap,
                c_base / n * args.bootstrap,
                f"{c_base / n * args.bootstrap / c_full:.0f}x evaluate (CPU)",
            )
        )

    # CPU seconds matter on a shared machine: wall time there includes waiting for a core.
    print(f"\n{'step':<48} {'wall s':>9} {'CPU s':>9}  note")
    for name, sec, cpu, note in rows:
        if sec == sec:
            print(f"{name:<48} {sec:>9.2f} {cpu:>9.2f}  {note}")
        else:
            print(f"{name:<48} {'':>9} {'':>9}  {note}")
    print(f"\npeak RSS after evaluate: {rss1 / 1024:,.0f} MiB (before it: {rss0 / 1024:,.0f} MiB)")
    cmp = result.diff("overall", "roc_auc")
    print(f"overall roc_auc difference {cmp.value:+.4f} [{cmp.ci_low:+.4f}, {cmp.ci_high:+.4f}]")


if __name__ == "__main__":
    main()
