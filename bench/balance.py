"""Benchmark: tailguard's vectorised resamplers vs imbalanced-learn, and augmentation throughput.

Each measurement runs in its own subprocess, the same way for both libraries: the child imports its
library, builds the same frame, resets its peak-RSS counter (/proc/self/clear_refs), runs one method and
reports wall and CPU time (user + system of the process, less disturbed by other jobs on shared cores), the
process peak RSS (VmHWM, which includes the input frame) and that peak minus the RSS just before the call
("+GB": what the method itself adds). Also the time tailguard spends choosing row positions, before any
frame is built ("index s"). tailguard's rows time `rebalance(..., report=False, compact=True)`: the
representation the retrain pipeline trains on (each distinct row once with a `repeats` count; "out rows"
counts repeats, "distinct" the frame's rows); `tailguard_over_full` writes the duplicates out (compact=False,
what `tailguard balance --out` writes without --compact); `tailguard_over_report` is the pipeline's exact call
(compact, report=True: bucket statistics before and after).

    .venv/bin/python bench/balance.py --rows 1000000            # one size
    .venv/bin/python bench/balance.py --rows 1000000 10000000   # both sizes (10M needs ~15 GB free)
    .venv/bin/python bench/balance.py --text category           # text columns as pandas category, both sides
    .venv/bin/python bench/balance.py --augment-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

METHODS = (
    "tailguard_under",
    "imblearn_under",
    "tailguard_over",
    "imblearn_over",
    "tailguard_over_full",
    "tailguard_over_report",
)


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def make_frame(n: int, seed: int = 0, text: str = "object"):
    """n rows of the canonical frame: Zipf items and queries, ~10% positives, object (or category) text."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_items, n_queries = max(n // 3, 10), max(n // 4, 10)
    items = (rng.zipf(1.3, n) - 1) % n_items
    queries = (rng.zipf(1.2, n) - 1) % n_queries
    # Strings through a categorical: one object per distinct value, like a parquet read with dictionary pages.
    item_ids = pd.Categorical.from_codes(items, [f"I{i:08d}" for i in range(n_items)]).astype(object)
    titles = pd.Categorical.from_codes(items, [f"brand{i % 97} product {i}" for i in range(n_items)]).astype(
        object
    )
    query = pd.Categorical.from_codes(queries, [f"query words {q}" for q in range(n_queries)]).astype(object)
    if text == "category":  # what-if: the contract coerces text to object (contract.py), so not the product
        query, item_ids, titles = (pd.Categorical(c) for c in (query, item_ids, titles))
    return pd.DataFrame(
        {
            "query": query,
            "item_id": item_ids,
            "item_title": titles,
            "label": (rng.random(n) < 0.1).astype(np.int8),
            "row_id": np.arange(n, dtype=np.int64),
        }
    )


def child(method: str, rows: int, text: str) -> dict:
    """Run one method once in this process; return time and memory."""
    frame = make_frame(rows, text=text)
    if method.startswith("imblearn"):
        from imblearn.over_sampling import RandomOverSampler
        from imblearn.under_sampling import RandomUnderSampler

        x, y = frame.drop(columns="label"), frame["label"]
        del frame
        sampler = (
            RandomUnderSampler(sampling_strategy=1.0, random_state=0)
            if method == "imblearn_under"
            else RandomOverSampler(sampling_strategy=1.0, random_state=0)
        )
        run = lambda: sampler.fit_resample(x, y)  # noqa: E731
    else:
        from tailguard.balance import BalanceConfig, rebalance

        config = BalanceConfig.from_spec("random_under" if method == "tailguard_under" else "random_over")
        with_report = method == "tailguard_over_report"
        compact = method != "tailguard_over_full"  # the retrain pipeline's call is compact
        run = lambda: rebalance(frame, config, report=with_report, compact=compact)  # noqa: E731
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM so frame building does not count
    rss_before = _status("VmRSS")
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = run()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    out = result[0]
    out_rows = int(out["repeats"].sum()) if "repeats" in out.columns else len(out)
    index_seconds = None
    if method.startswith("tailguard"):
        import numpy as np

        from tailguard.balance import random_over_extra, random_under_positions

        # What rebalance computes: kept positions (under), or only the duplicated positives (over).
        sample = random_under_positions if method == "tailguard_under" else random_over_extra
        labels = frame["label"].to_numpy()
        t0 = time.perf_counter()
        sample(labels, 1.0, np.random.default_rng(0))
        index_seconds = time.perf_counter() - t0
    return {
        "index_seconds": index_seconds,
        "method": method,
        "rows": rows,
        "out_rows": out_rows,
        "distinct_rows": len(out),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss": _status("VmHWM"),
        "rss_before": rss_before,
    }


def measure(method: str, rows: int, text: str) -> dict:
    """Run one method in a fresh subprocess."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", method, "--rows", str(rows), "--text", text],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{method} at {rows} rows failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def resampling(rows_list: list[int], text: str) -> None:
    """Print the side-by-side table and ratios."""
    gb = 1024**3
    print(f"text columns: {text}")
    print(
        f"{'rows':>10}  {'method':<22} {'out rows':>10} {'distinct':>10} {'seconds':>8} {'cpu s':>7} "
        f"{'peak GB':>8} {'+GB':>6}  index s"
    )
    for rows in rows_list:
        results = {}
        for method in METHODS:
            r = measure(method, rows, text)
            results[method] = r
            print(
                f"{rows:>10}  {method:<22} {r['out_rows']:>10} {r['distinct_rows']:>10} {r['seconds']:>8.2f} "
                f"{r['cpu_seconds']:>7.2f} "
                f"{r['peak_rss'] / gb:>8.2f} {(r['peak_rss'] - r['rss_before']) / gb:>6.2f}  "
                + ("" if r["index_seconds"] is None else f"{r['index_seconds']:.2f}"),
                flush=True,
            )
        for kind, mine in (("under", "under"), ("over", "over"), ("over", "over_full")):
            ours, theirs = results[f"tailguard_{mine}"], results[f"imblearn_{kind}"]
            inc_ours = max(ours["peak_rss"] - ours["rss_before"], 1)
            inc_theirs = max(theirs["peak_rss"] - theirs["rss_before"], 1)
            print(
                f"{rows:>10}  {mine}: speed-up {theirs['seconds'] / ours['seconds']:.1f}x wall, "
                f"{theirs['cpu_seconds'] / ours['cpu_seconds']:.1f}x cpu; "
                f"peak RSS {ours['peak_rss'] / theirs['peak_rss']:.2f} of imbalanced-learn's, "
                f"increase {inc_ours / inc_theirs:.2f} of its increase; same rows: "
                f"{ours['out_rows'] == theirs['out_rows']}"
            )


def augmentation(rows: int = 100_000, sources: int = 5_000) -> None:
    """Rows per second of EDA augmentation (2 copies, query + title) on demo data, and mining time."""
    import tempfile

    import pandas as pd

    from tailguard import augment
    from tailguard.demo import DemoConfig, generate_batches

    with tempfile.TemporaryDirectory() as tmp:
        path = generate_batches(DemoConfig(rows=rows, batches=1), Path(tmp), "parquet")[0]
        frame = pd.read_parquet(path)
    frame["row_id"] = range(len(frame))
    augment.tokenize("预热")  # load jieba's dictionary outside the timing (~1 s, once per process)
    t0 = time.perf_counter()
    synonyms = augment.merge_synonyms(augment.CURATED_SYNONYMS, augment.mine_synonyms(frame))
    mining = time.perf_counter() - t0
    picked = frame[frame["label"] == 1].head(sources)
    augment.tokenize.cache_clear()
    t0 = time.perf_counter()
    out = augment.augment_rows(picked, alpha=0.1, copies=2, synonyms=synonyms, seed=0)
    seconds = time.perf_counter() - t0
    print(
        f"augmentation: {len(picked)} source rows -> {len(out)} augmented rows in {seconds:.2f} s "
        f"({len(picked) / seconds:,.0f} source rows/s, {len(out) / seconds:,.0f} augmented rows/s); "
        f"synonym mining on {rows:,} rows: {mining:.2f} s, {len(synonyms)} terms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--child", choices=METHODS)
    parser.add_argument("--text", choices=("object", "category"), default="object")
    parser.add_argument("--augment-only", action="store_true")
    parser.add_argument("--skip-augment", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rows[0], args.text)))
        return
    if not args.augment_only:
        resampling(args.rows, args.text)
    if not args.skip_augment:
        augmentation()


if __name__ == "__main__":
    main()
