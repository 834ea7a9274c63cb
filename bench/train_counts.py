"""What evaluation reads of the training batch: counts summed on Ray vs its rows collected to the driver.

metrics.evaluate needs, of the training batch, only its rows per item and per query (metrics.TrainCounts:
the popularity and query-frequency cut-offs, the unseen-term vocabulary, train_rows). Three ways, each in
its own process (peak memory is per process), on bench/scale.py's Parquet folders:

- `cluster`: ray_engine.train_counts, per-block counts merged on the cluster (what ray_engine.evaluate does);
- `collect`: the training batch's query and item_id collected to the driver, then TrainCounts.of (what
  ray_engine.evaluate did before);
- `pandas`: data.load_batch, then TrainCounts.of (the pandas engine).

    .venv/bin/python bench/train_counts.py --rows 10000000 30000000 --cpus 2

Prints seconds to count (after the load), the driver's private peak (RssAnon) and a digest of the counts,
which must be the same on every line of one size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scale import _PrivatePeak  # noqa: E402


def _digest(counts) -> str:
    h = hashlib.sha256()
    for series in (counts.items, counts.queries):
        h.update(json.dumps([series.index.tolist(), series.tolist()], ensure_ascii=False).encode())
    h.update(str(counts.rows).encode())
    return h.hexdigest()[:12]


def run_one(way: str, data: Path, cpus: int) -> dict:
    from tailguard.metrics import TrainCounts

    private = _PrivatePeak()
    t = time.perf_counter()
    if way == "pandas":
        from tailguard.data import load_batch

        frame = load_batch(data)
        loaded = time.perf_counter()
        counts = TrainCounts.of(frame)
    else:
        import ray

        from tailguard import ray_engine

        ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        ray_engine._quiet_data()
        t = time.perf_counter()
        batch = ray_engine.load(data)
        loaded = time.perf_counter()
        if way == "cluster":
            counts = ray_engine.train_counts(batch)
        else:
            counts = TrainCounts.of(ray_engine._collect(batch, ["query", "item_id"]))
    done = time.perf_counter()
    private.stop()
    return {
        "way": way,
        "rows": counts.rows,
        "items": len(counts.items),
        "queries": len(counts.queries),
        "load_s": round(loaded - t, 2),
        "count_s": round(done - loaded, 2),
        "driver_private_mb": round(private.driver),
        "worker_private_mb": round(private.worker),
        "digest": _digest(counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000])
    parser.add_argument("--ways", nargs="+", default=["cluster", "collect", "pandas"])
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs (one local node)")
    parser.add_argument("--dir", type=Path, default=Path(".tailguard/bench-scale"))
    parser.add_argument("--one", nargs=2, metavar=("WAY", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], Path(args.one[1]), args.cpus)))
        return
    print("| rows | way | distinct items | distinct queries | load s | count s | driver private MB | "
          "worker private MB | digest |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for rows in args.rows:
        data = args.dir / f"parts-{rows}"
        if not data.exists():
            sys.exit(f"{data}: no such folder; write it with bench/scale.py --rows {rows} --generate-only")
        for way in args.ways:
            env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
            cmd = [sys.executable, __file__, "--cpus", str(args.cpus), "--one", way, str(data)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or [""])[-1][:120]
                print(f"| {rows:,} | {way} | did not finish: exit {done.returncode} {tail} |", flush=True)
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"| {rows:,} | {way} | {r['items']:,} | {r['queries']:,} | {r['load_s']} | {r['count_s']} | "
                f"{r['driver_private_mb']:,} | {r['worker_private_mb']:,} | {r['digest']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
