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


def _ray_processes() -> list[Path]:
    """/proc entries of this machine's Ray worker processes (ray::* / default_worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"default_worker.py" in cmd or cmd.startswith(b"ray::"):
            found.append(entry)
    return found


def _status_mb(entry: Path, field: str) -> float:
    try:
        for line in (entry / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class _PrivatePeak:
    """Samples RssAnon (private memory, without the object store's shared pages that VmHWM also counts)
    of this process and of every Ray worker every 0.2 s; keeps the largest of each."""

    def __init__(self) -> None:
        import threading

        self.driver = self.worker = 0.0
        self.by_title: dict[str, float] = {}  # process title (ray::IDLE, ray::_block_facts, ...) -> largest
        self.cpu_ticks: dict[str, int] = {}  # worker pid -> its latest utime + stime
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = Path("/proc/self")
        while not self._stop.wait(0.2):
            self.driver = max(self.driver, _status_mb(me, "RssAnon"))
            for entry in _ray_processes():
                private = _status_mb(entry, "RssAnon")
                self.worker = max(self.worker, private)
                try:
                    title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")[:40]
                except OSError:
                    continue
                self.by_title[title] = max(self.by_title.get(title, 0.0), private)
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    self.cpu_ticks[entry.name] = int(fields[11]) + int(fields[12])
                except (OSError, IndexError, ValueError):
                    pass

    def cpu_s(self) -> float:
        """CPU seconds of this process (resource.getrusage) plus the Ray workers' last sampled ticks."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_utime + own.ru_stime + sum(self.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _worker_peak_mb() -> float:
    """Largest VmHWM (peak RSS, shared object-store pages included) among the Ray worker processes, in MB."""
    return max((_status_mb(e, "VmHWM") for e in _ray_processes()), default=0.0)


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
        blocks, batch.files, batch.columns + ["score"], batch.rows, None,
        batch.block_rows,
    )  # fmt: skip
    return len(ray_engine.per_query_table(scored, {"candidate": "score"}, k=10))


def run_one(engine: str, data: Path, block_rows: int, object_store_mb: int = 0) -> dict:
    from tailguard.balance import BalanceConfig, rebalance
    from tailguard.data import load_batch
    from tailguard.validation import validate_frame

    config = BalanceConfig.from_spec("random_under", seed=0)
    private = _PrivatePeak()
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
        store = {"object_store_memory": object_store_mb << 20} if object_store_mb else {}
        ray.init(num_cpus=cores, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 **store)  # fmt: skip
        ray_engine._quiet_data()
        times["start"] = time.perf_counter() - t
        t = time.perf_counter()
        batch = ray_engine.load(data, block_rows=block_rows or None)
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
        time.sleep(0.5)  # one more sample of the workers' CPU time before they exit
        ray.shutdown()
    private.stop()
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
        "driver_private_mb": round(private.driver),
        "cpu_s": round(private.cpu_s(), 1),
        "rows_per_cpu_s": round(rows / private.cpu_s()),
        "worker_private_mb": round(private.worker),
        "worker_private_by_title_mb": {
            t: round(mb) for t, mb in sorted(private.by_title.items(), key=lambda kv: -kv[1])[:6]
        },
    }


def write_parts(rows: int, folder: Path, part_rows: int) -> None:
    """The demo batch of `rows` rows as a folder of Parquet part files of `part_rows` rows each (the shape a
    warehouse export has), generated chunk by chunk with the demo generator's catalogue and sampler."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tailguard.demo import DemoConfig, _Catalogue, _chunk

    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    cat = _Catalogue(DemoConfig(rows=rows, batches=1, seed=0))
    rng, t0 = np.random.default_rng([0, 1]), pd.Timestamp("2026-01-05")
    for part, start in enumerate(range(0, rows, part_rows)):
        n = min(part_rows, rows - start)
        with pq.ParquetWriter(
            partial / f"part-{part:05d}.parquet",
            _chunk(cat, 0, 1, rng, t0).pipe(lambda f: pa.Schema.from_pandas(f, preserve_index=False)),
        ) as writer:
            for offset in range(0, n, 500_000):
                chunk = _chunk(cat, 0, min(500_000, n - offset), rng, t0)
                writer.write_table(pa.Table.from_pandas(chunk, preserve_index=False))
    partial.rename(folder)  # a folder that exists is complete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--engines", nargs="+", default=["pandas", "ray1", "ray2"])
    parser.add_argument(
        "--block-rows", type=int, default=0, help="rows per Ray block (0: the engine's choice)"
    )
    parser.add_argument("--part-rows", type=int, default=2_500_000, help="rows per Parquet part file")
    parser.add_argument("--generate-only", action="store_true", help="write the data folders and stop")
    parser.add_argument("--object-store-mb", type=int, default=0, help="object store MB (0: default)")
    parser.add_argument("--titles", action="store_true", help="also print each Ray process title's peak")
    parser.add_argument("--dir", type=Path, default=Path(".tailguard/bench-scale"))
    parser.add_argument("--one", nargs=2, metavar=("ENGINE", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], Path(args.one[1]), args.block_rows, args.object_store_mb)))
        return
    for rows in args.rows:
        folder = args.dir / f"parts-{rows}"
        if not folder.exists():
            write_parts(rows, folder, args.part_rows)
    if args.generate_only:
        return
    header = "| rows | engine | load s | validate s | rebalance s | per-query s | rows/s | rows/s/core | driver MB | worker MB | driver private MB | worker private MB | CPU s | rows/CPU s |"  # noqa: E501
    print(header)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rows in args.rows:
        data = args.dir / f"parts-{rows}"
        for engine in args.engines:
            env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
            cmd = [sys.executable, __file__, "--block-rows", str(args.block_rows), "--object-store-mb",
                   str(args.object_store_mb), "--one", engine, str(data)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:  # e.g. the kernel's OOM killer: say so and go on with the next engine
                print(
                    f"| {rows:,} | {engine} | did not finish: exit {done.returncode} "
                    f"{(done.stderr.strip().splitlines() or [''])[-1][:120]} |",
                    flush=True,
                )
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"| {rows:,} | {engine} | {r['load_s']} | {r['validate_s']} | {r['rebalance_s']} | "
                f"{r['per_query_s']} | "
                f"{r['rows_per_s']:,} | {r['rows_per_s_per_core']:,} | {r['driver_peak_mb']} | "
                f"{r['worker_peak_mb']} | {r['driver_private_mb']} | {r['worker_private_mb']} | "
                f"{r['cpu_s']} | {r['rows_per_cpu_s']:,} |",
                flush=True,
            )
            if args.titles and r["worker_private_by_title_mb"]:
                print(f"  private MB by Ray process title: {r['worker_private_by_title_mb']}", flush=True)


if __name__ == "__main__":
    main()
