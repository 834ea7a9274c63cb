"""Scale benchmark: load -> validate -> rebalance -> per-query aggregation, on pandas and on Ray (1, 2 CPUs).

Prints one table row per engine: rows, seconds per stage, rows/s, rows/s per core, peak RSS of the driver
and of the largest Ray worker process. Data: demo generator, Parquet, written in chunks. The per-query
stage aggregates a synthetic score (a fixed function of row id and label, the same on both engines) into
per-query ROC AUC, nDCG@10, MRR and recall@10 (metrics.per_query_values; ray_engine.per_query_table).

    .venv/bin/python bench/scale.py --rows 1000000 --engines pandas ray1 ray2

Each engine runs in its own process (peak RSS is per process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def _worker_peak_mb() -> float:
    """Largest VmHWM among this machine's Ray worker processes (ray::* / default_worker), in MB."""
    peak = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            if b"default_worker.py" not in cmd and not cmd.startswith(b"ray::"):
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peak


def _with_score(frame):
    """A synthetic score: label signal + a hash of the row id in [0, 1) (the same on both engines)."""
    import numpy as np

    noise = (frame["row_id"].to_numpy(np.int64) * 2654435761 % 1000) / 1000.0
    return frame.assign(score=0.3 * frame["label"].to_numpy(np.float64) + 0.7 * noise)


def _pandas_per_query(df) -> int:
    import numpy as np
    import pandas as pd

    from tailguard.metrics import kernels as m

    q, names = pd.factorize(df["query"].astype(str), sort=True)
    y = df["label"].to_numpy(np.float64)
    s = df["score"].to_numpy(np.float64)
    m.per_query_values(
        q, len(names), y, m._gain(df, y), m._Ranked(q, len(names), s), np.ones(len(df), bool), 10
    )
    return len(names)


def _ray_per_query(batch) -> int:
    import ray

    from tailguard import ray_engine

    blocks = [ray.remote(_with_score).remote(b) for b in batch.block_refs()]
    scored = ray_engine.RayBatch(
        ray.data.from_pandas_refs(blocks), batch.files, batch.columns + ["score"], batch.rows, None,
        batch.block_rows,
    )  # fmt: skip
    return len(ray_engine.per_query_table(scored, {"candidate": "score"}, k=10))


def run_one(engine: str, data: Path, block_rows: int) -> dict:
    from tailguard.balance import BalanceConfig, rebalance
    from tailguard.data import load_batch
    from tailguard.validation import validate_frame

    config = BalanceConfig.from_spec("random_under", seed=0)
    times: dict[str, float] = {}
    cores = 1
    t = time.perf_counter()
    if engine == "pandas":
        df = load_batch(data)
        times["load"] = time.perf_counter() - t
        t = time.perf_counter()
        result = validate_frame(df, str(data))
        times["validate"] = time.perf_counter() - t
        t = time.perf_counter()
        rebalance(df, config, compact=True, report=False)
        times["rebalance"] = time.perf_counter() - t
        t = time.perf_counter()
        queries = _pandas_per_query(_with_score(df))
        times["per_query"] = time.perf_counter() - t
        rows, workers_mb = len(df), 0.0
    else:
        import ray

        from tailguard import ray_engine

        cores = int(engine.removeprefix("ray"))
        ray.init(num_cpus=cores, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        ray_engine._quiet_data()
        times["start"] = time.perf_counter() - t
        t = time.perf_counter()
        batch = ray_engine.load(data, block_rows=block_rows)
        times["load"] = time.perf_counter() - t
        t = time.perf_counter()
        result = ray_engine.validate(batch, str(data))
        times["validate"] = time.perf_counter() - t
        t = time.perf_counter()
        ray_engine.rebalance(batch, config)
        times["rebalance"] = time.perf_counter() - t
        t = time.perf_counter()
        queries = _ray_per_query(batch)
        times["per_query"] = time.perf_counter() - t
        rows, workers_mb = batch.rows, _worker_peak_mb()
        ray.shutdown()
    work = times["load"] + times["validate"] + times["rebalance"] + times["per_query"]
    return {
        "engine": engine,
        "rows": rows,
        "ok": result.success,
        "queries": queries,
        **{f"{k}_s": round(v, 2) for k, v in times.items()},
        "rows_per_s": round(rows / work),
        "rows_per_s_per_core": round(rows / work / cores),
        "driver_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "worker_peak_mb": round(workers_mb),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--engines", nargs="+", default=["pandas", "ray1", "ray2"])
    parser.add_argument("--block-rows", type=int, default=250_000)
    parser.add_argument("--dir", type=Path, default=Path(".tailguard/bench-scale"))
    parser.add_argument("--one", nargs=2, metavar=("ENGINE", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], Path(args.one[1]), args.block_rows)))
        return
    from tailguard.demo import DemoConfig, generate_batches

    header = "| rows | engine | load s | validate s | rebalance s | per-query s | rows/s | rows/s/core | driver MB | worker MB |"  # noqa: E501
    print(header)
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rows in args.rows:
        folder = args.dir / f"rows-{rows}"
        if not folder.exists():
            generate_batches(DemoConfig(rows=rows, batches=1, seed=0), folder, "parquet")
        data = next(folder.glob("*.parquet"))
        for engine in args.engines:
            env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
            cmd = [sys.executable, __file__, "--block-rows", str(args.block_rows), "--one", engine, str(data)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(
                f"| {rows:,} | {engine} | {r['load_s']} | {r['validate_s']} | {r['rebalance_s']} | "
                f"{r['per_query_s']} | "
                f"{r['rows_per_s']:,} | {r['rows_per_s_per_core']:,} | {r['driver_peak_mb']} | "
                f"{r['worker_peak_mb']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
