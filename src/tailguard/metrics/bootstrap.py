"""Paired bootstrap over queries (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13:
percentile intervals): candidate and production are resampled with the same query draws.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tailguard.metrics.definitions import PROBABILITY_METRICS, SLICE_METRICS, EvalConfig, _undefined
from tailguard.metrics.kernels import (
    _Curve,
    _lane_weights,
    _submit_pooled_sums,
    _thread_count,
)


class _SliceStats:
    """Per-query sums for one slice; resampled metrics are ratios of their multiplicity-weighted totals.

    Pooled ROC and PR AUC are not ratios of per-query sums (they compare rows across queries); they come from
    the slice's `slot` of the one weighted pass per model over all rows by descending score.
    """

    def __init__(self, name: str, qidx: np.ndarray, columns: dict[str, np.ndarray], slot: int):
        self.name = name
        self.qidx = qidx
        self.slot = slot
        self.columns = {key: arr.reshape(len(qidx), -1) for key, arr in columns.items()}
        self.slices: dict[str, slice] = {}
        at = 0
        for key, a in self.columns.items():
            self.slices[key] = slice(at, at + a.shape[1])
            at += a.shape[1]
        self.width = at


def _paired_totals(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Resampled totals with the candidate's rebuilt as production's + the paired differences' totals."""
    out = {key: arr for key, arr in t.items() if not key.startswith("diff.")}
    for key, arr in t.items():
        if key.startswith("diff."):
            name = key.removeprefix("diff.")
            out[f"candidate.{name}"] = t[f"production.{name}"] + arr
    return out


def _metrics_from_sums(
    t: dict[str, np.ndarray], models: list[str], probs_ok: dict[str, bool], curves: dict[str, np.ndarray]
) -> dict:
    """Metric values (arrays over resamples) from summed statistics; NaN where undefined.

    curves[m] is one slice's (4, resamples) slot of _pooled_slot_sums: exact weighted pooled ROC/PR sums.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    n, p = t["n"][:, 0], t["pos"][:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        for m in models:
            r: dict[str, np.ndarray] = {}
            u, ap, w_pos, w_neg = curves[m]
            r["roc_auc"] = np.where((w_pos > 0) & (w_neg > 0), u / (w_pos * w_neg), np.nan)
            r["pr_auc"] = np.where(w_pos > 0, ap / w_pos, np.nan)
            if probs_ok[m]:
                tp, fp = t[f"{m}.tp"][:, 0], t[f"{m}.fp"][:, 0]
                r["log_loss"] = t[f"{m}.ll"][:, 0] / n
                r["ece"] = np.abs(t[f"{m}.ece"]).sum(1) / n
                r["f1"] = 2 * tp / (tp + fp + p)
                r["recall"] = tp / p
                r["precision"] = tp / (tp + fp)
            r["roc_auc_per_query"] = t[f"{m}.auc_q"][:, 0] / t["auc_def"][:, 0]
            r["ndcg_at_k"] = t[f"{m}.ndcg"][:, 0] / t["ndcg_def"][:, 0]
            r["mrr"] = t[f"{m}.mrr"][:, 0] / t["pos_def"][:, 0]
            r["recall_at_k"] = t[f"{m}.reck"][:, 0] / t["pos_def"][:, 0]
            r["graded_pair_accuracy"] = t[f"{m}.gpa"][:, 0] / t["gpa_def"][:, 0]
            out[m] = r
    return out


def _interval(diffs: np.ndarray, point: float | None, level: float) -> dict[str, Any]:
    ok = np.isfinite(diffs)
    if point is None or not np.isfinite(point):
        return _undefined("difference undefined (a model's metric is undefined)")
    if ok.sum() < max(10, 0.5 * len(diffs)):
        return {
            "value": point,
            "ci_low": None,
            "ci_high": None,
            "undefined": "too few defined resamples",
            "resamples_defined": int(ok.sum()),
        }
    d = diffs[ok]
    a = (1 - level) / 2
    lo, hi = np.quantile(d, [a, 1 - a])
    return {"value": point, "ci_low": float(lo), "ci_high": float(hi), "resamples_defined": int(ok.sum())}


def _compare(
    result: dict,
    boot_stats: list[_SliceStats],
    curves: dict[str, _Curve],
    n_queries: int,
    probs_ok: dict[str, bool],
    judged_buckets: list[str],
    config: EvalConfig,
) -> dict:
    """Candidate − production differences with paired bootstrap intervals (queries resampled, shared)."""
    models = ["candidate", "production"]
    B = config.n_bootstrap
    rng = np.random.default_rng(config.seed)
    resampled: dict[str, dict[str, dict[str, np.ndarray]]] = {
        st.name: {m: {k: np.empty(B) for k in SLICE_METRICS} for m in models} for st in boot_stats
    }
    gap_buckets = [f"popularity:{b}" for b in judged_buckets]
    recall_by = {name: {m: np.empty(B) for m in models} for name in gap_buckets}
    # One BLAS thread: on these 2 shared cores a 2-thread OpenBLAS dgemm ran 13x slower in CPU time
    # (2.5 vs 33 GFLOP/s) whenever another process held a core.
    from threadpoolctl import threadpool_limits

    # Every slice's per-query sums side by side over all queries (zeros where a query is absent): one
    # matrix product per chunk, no per-slice gathers (those copies cost more than the zero padding).
    dtype = np.dtype(config.bootstrap_dtype)
    offsets, at = {}, 0
    for st in boot_stats:
        offsets[st.name] = at
        at += st.width
    big = np.zeros((n_queries, at), dtype=dtype)
    for st in boot_stats:
        for key, a in st.columns.items():
            sl = st.slices[key]
            big[st.qidx, offsets[st.name] + sl.start : offsets[st.name] + sl.stop] = a
        st.columns = {}  # free as we go
    with threadpool_limits(limits=config.blas_threads, user_api="blas"):
        _resample(boot_stats, curves, big, offsets, resampled, recall_by, probs_ok, config, rng, models)
    del big

    comparison: dict[str, Any] = {
        "method": {
            "resamples": B,
            "unit": "query",
            "paired": True,
            "ci_level": config.ci_level,
            "interval": "percentile",
            "roc_auc": "exact: Mann-Whitney U of the resampled rows (each row weighted by its query's "
            "multiplicity, ties half) over one descending-score pass per model serving every slice",
            "pr_auc": "exact: average precision of the resampled rows, same weighted pass",
            "others": "exact: ratios of per-query sums, the same as recomputing on the resampled queries",
        },
        "slices": {},
    }
    comparison["slices"] = _slice_intervals(result, resampled, probs_ok, config)

    gaps = {m: result["fairness"][m]["recall_gap"]["value"] for m in models}
    if len(gap_buckets) >= 2 and None not in gaps.values():
        per = {m: np.vstack([recall_by[nm][m] for nm in gap_buckets]) for m in models}
        with np.errstate(invalid="ignore"):
            g = {m: np.nanmax(per[m], 0) - np.nanmin(per[m], 0) for m in models}
        comparison["fairness"] = {
            "recall_gap": _interval(
                g["candidate"] - g["production"],
                gaps["candidate"] - gaps["production"],
                config.ci_level,
            )
        }
    else:
        comparison["fairness"] = {"recall_gap": _undefined("recall gap undefined for a model")}
    return comparison


def _slice_intervals(result: dict, resampled: dict, probs_ok: dict[str, bool], config: EvalConfig) -> dict:
    """Per slice and metric: the candidate − production point difference and its percentile interval."""
    out: dict[str, Any] = {}
    for name in result["slices"]:
        entry: dict[str, Any] = {}
        for metric in SLICE_METRICS:
            c = result["metrics"]["candidate"][name][metric]["value"]
            p = result["metrics"]["production"][name][metric]["value"]
            point = None if c is None or p is None else c - p
            if name not in resampled or metric not in resampled[name]["candidate"]:
                entry[metric] = (
                    _undefined("empty slice")
                    if point is None
                    else {"value": point, "ci_low": None, "ci_high": None, "undefined": "no bootstrap"}
                )
                continue
            diffs = resampled[name]["candidate"][metric] - resampled[name]["production"][metric]
            if metric in PROBABILITY_METRICS and not all(probs_ok.values()):
                entry[metric] = _undefined("scores are not probabilities in [0, 1]")
                continue
            entry[metric] = _interval(diffs, point, config.ci_level)
        out[name] = entry
    return out


def _resample(boot_stats, curves, big, offsets, resampled, recall_by, probs_ok, config, rng, models) -> None:
    """Fill the resampled metric arrays, one chunk of multiplicity rows (resamples x queries) at a time.

    With threads the chunks are pipelined: while the pooled ROC/PR pass of a chunk runs on the pool, this
    thread draws the next chunk (multiplicities, matrix product) and turns the previous one into metrics.
    Draws come from rng in chunk order either way, so the result does not depend on the thread count.
    """
    B = config.n_bootstrap
    n_queries = big.shape[0]
    threads = _thread_count(config)
    model_curves = {m: curves[m] for m in models}
    # Probability sums are resampled only when both models' scores are probabilities (see evaluate).
    probs_paired = dict.fromkeys(models, all(probs_ok.values()))

    def draw(b: int) -> tuple[np.ndarray, np.ndarray]:
        draws = rng.integers(0, n_queries, size=(b, n_queries))
        mult = (
            np.bincount((draws + np.arange(b)[:, None] * n_queries).ravel(), minlength=b * n_queries)
            .reshape(b, n_queries)
            .astype(big.dtype)
        )
        return (mult @ big).astype(np.float64), _lane_weights(mult)

    def finish(done: int, b: int, totals: np.ndarray, collect: Callable[[], dict[str, np.ndarray]]) -> None:
        pooled = collect()
        for st in boot_stats:
            at = offsets[st.name]
            t = _paired_totals(
                {key: totals[:, at + sl.start : at + sl.stop] for key, sl in st.slices.items()}
            )
            vals = _metrics_from_sums(t, models, probs_paired, {m: pooled[m][:, st.slot, :b] for m in models})
            for m in models:
                for key, arr in vals[m].items():
                    resampled[st.name][m][key][done : done + b] = arr
            if st.name in recall_by:
                for m in models:
                    recall_by[st.name][m][done : done + b] = vals[m].get("recall", np.full(b, np.nan))

    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    try:
        pending = None
        done = 0
        while done < B or pending is not None:
            started = None
            if done < B:
                b = min(config.bootstrap_chunk, B - done)
                totals, weights = draw(b)  # overlaps the previous chunk's pass
                started = (done, b, totals, _submit_pooled_sums(pool, model_curves, weights, threads))
                done += b
            if pending is not None:
                finish(*pending)  # overlaps this chunk's pass
            pending = started
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def bootstrap_mean_interval(
    values: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of values (Efron & Tibshirani 1993, ch. 13).

    values: (n,) finite floats, one per query (e.g. per-query AUC differences); each of n_boot resamples
    draws n entries with replacement from rng (one (n_boot, n) integer draw). Returns (low, high) at the
    (1 - level) / 2 and 1 - (1 - level) / 2 quantiles of the resampled means, in the units of values.
    Raises ValueError when values is empty, n_boot < 1 or level is not in (0, 1).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0 or n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"bootstrap_mean_interval: need values, n_boot >= 1, 0 < level < 1; got {v.size}, "
                         f"{n_boot}, {level}")  # fmt: skip
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    a = round((1 - level) / 2, 12)  # (1 - 0.95) / 2 is 0.025000000000000022; 0.025 is what a reader means
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))
