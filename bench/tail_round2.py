"""What lifts the tail, round two (#18): seed ensemble and lexical–neural hybrid, from the cached GPU scores.

No training: reads the eval scores the GPU runs cached (docs/results/tail_quality_runs.tar.gz, strategy
`none`, i.e. the converged MiniLM baseline) and the eval rows' text from the data file, folds as
bench/tail_quality.py makes them. Recipes, each against the same fold's baseline seeds:

- `ensemble`: the average of the K seeds' scores (one candidate), vs each seed's baseline.
- `hybrid`: tailguard.hybrid (fit_hybrid + HybridModel.combine) on each seed's scores. The cached scores
  cover eval queries only, so the combiner is cross-fitted: eval queries split in two halves by a stable
  hash, fitted on one half and applied to the other (queries the cross-encoder never trained on either
  way, as the product recipe's held-out training queries are).
- `ensemble+hybrid`: the hybrid on the ensemble's scores.
- `--trained NAME,...`: recipes trained by tail_quality.py (e.g. graded, graded_pairwise, hybrid,
  distilled3 on the GPU: bench/gpu_round2.sh), read from the same run cache as `NAME|seed`; a fold
  missing any of their runs is left out and named.

Pre-registered statistic: tail lift minus overall lift of per-query ROC AUC; per-query differences are
seed-averaged per query, queries of every fold pooled, paired bootstrap over queries (one draw serves the
tail mean and the overall mean). Also the graded pair accuracy (metrics.graded_pair_accuracy, relevance as
gain) and the pooled AUC lift (mean over folds and seeds).

    mkdir -p .tailguard/tail_quality
    tar xzf docs/results/tail_quality_runs.tar.gz -C .tailguard/tail_quality
    .venv/bin/python bench/tail_round2.py --folds 0,1 --seeds 0,1,2
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tail_quality import TARGET, cached_runs_parser  # noqa: E402

from tailguard.data import query_folds, subsample_queries  # noqa: E402

RECIPES = ("ensemble", "hybrid", "ensemble+hybrid")


def cross_fitted_hybrid(eval_df: pd.DataFrame, scores: np.ndarray) -> np.ndarray:
    """Hybrid scores for every eval row, each half's combiner fitted on the other half's queries."""
    from tailguard.data import stable_hash
    from tailguard.hybrid import fit_hybrid

    half = (stable_hash(eval_df["query"].astype(str), salt="hybrid:") % np.uint64(2)).astype(int)
    out = np.empty(len(eval_df), dtype=np.float64)
    for h in (0, 1):
        fit_rows, apply_rows = half != h, half == h
        model = fit_hybrid(eval_df[fit_rows].reset_index(drop=True), scores[fit_rows])
        out[apply_rows] = model.combine(eval_df[apply_rows].reset_index(drop=True), scores[apply_rows])
    return out


def per_query(eval_df: pd.DataFrame, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per-query ROC AUC on `label`, graded pair accuracy on `relevance`): (n_queries,) each, NaN = none."""
    from tailguard.metrics import graded_pair_accuracy, grouped_auc

    q, names = pd.factorize(eval_df["query"].astype(str), sort=True)
    y = eval_df["label"].to_numpy(dtype=float)
    return (
        grouped_auc(q, scores, y, len(names)),
        graded_pair_accuracy(q, scores, eval_df["relevance"].to_numpy(dtype=float), len(names)),
    )


def lift_stats(d_auc: np.ndarray, tail: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict:
    """Tail / overall mean per-query lift and their difference, with a paired bootstrap over queries."""
    ok = np.isfinite(d_auc)
    d, t = d_auc[ok], tail[ok]
    stat = lambda w: (  # noqa: E731 - weights are multiplicities of a resample
        (w * d * t).sum() / (w * t).sum(),
        (w * d).sum() / w.sum(),
    )
    point_tail, point_all = stat(np.ones(d.size))
    boots = np.array(
        [stat(np.bincount(rng.integers(0, d.size, d.size), minlength=d.size)) for _ in range(n_boot)]
    )
    qs = lambda a: [float(x) for x in np.quantile(a, [0.025, 0.975])]  # noqa: E731
    return {
        "tail": point_tail,
        "tail_ci": qs(boots[:, 0]),
        "overall": point_all,
        "overall_ci": qs(boots[:, 1]),
        "tail_minus_overall": point_tail - point_all,
        "tail_minus_overall_ci": qs(boots[:, 0] - boots[:, 1]),
        "queries": int(d.size),
        "tail_queries": int(t.sum()),
    }


def fold_rows(args, df: pd.DataFrame, fold: np.ndarray, f: int, seeds: list[int], trained: list[str]) -> dict:
    """Per query of one fold: baseline and recipe per-query values (seed-averaged) and pooled AUCs."""
    from sklearn.metrics import roc_auc_score

    from tailguard.metrics import EvalConfig, assign_slices

    train = subsample_queries(df[fold != f], args.train_rows, seed=f)
    eval_df = subsample_queries(df[fold == f], args.eval_rows, seed=100 + f)
    runs = json.loads((Path(args.work) / f"fold{f}-runs.json").read_text())
    base = {s: np.asarray(runs[f"none|{s}"]["scores"], dtype=np.float64) for s in seeds}
    ensemble = np.mean([base[s] for s in seeds], axis=0)
    recipe_scores = {
        "ensemble": {s: ensemble for s in seeds},
        "hybrid": {s: cross_fitted_hybrid(eval_df, base[s]) for s in seeds},
    }
    ens_hybrid = cross_fitted_hybrid(eval_df, ensemble)
    recipe_scores["ensemble+hybrid"] = {s: ens_hybrid for s in seeds}
    for name in trained:  # the trained recipe itself: its own scores, named "<recipe> (trained)"
        recipe_scores[f"{name} (trained)"] = {
            s: np.asarray(runs[f"{name}|{s}"]["scores"], dtype=np.float64) for s in seeds
        }
    slices = assign_slices(eval_df, train, EvalConfig(min_positives=30))
    names = pd.factorize(eval_df["query"].astype(str), sort=True)[1]
    is_tail = (
        pd.Series(slices["query_frequency"].astype(str).to_numpy() == "tail")
        .groupby(eval_df["query"].astype(str).to_numpy())
        .any()
        .reindex(names)
        .to_numpy()
    )
    y = eval_df["label"].to_numpy()
    base_pq = {s: per_query(eval_df, base[s]) for s in seeds}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {"tail": is_tail, "recipes": {}, "base_gpa": np.nanmean([base_pq[s][1] for s in seeds], axis=0)}
    for r, per_seed in recipe_scores.items():
        pq = {s: per_query(eval_df, per_seed[s]) for s in seeds}
        with np.errstate(invalid="ignore"):
            d_auc = np.mean([pq[s][0] - base_pq[s][0] for s in seeds], axis=0)
            d_gpa = np.mean([pq[s][1] - base_pq[s][1] for s in seeds], axis=0)
        pooled = [roc_auc_score(y, per_seed[s]) - roc_auc_score(y, base[s]) for s in seeds]
        with warnings.catch_warnings():  # a query with one relevance grade: NaN for every seed, on purpose
            warnings.simplefilter("ignore", RuntimeWarning)
            gpa = np.nanmean([pq[s][1] for s in seeds], axis=0)
        out["recipes"][r] = {"d_auc": d_auc, "d_gpa": d_gpa, "pooled": float(np.mean(pooled)), "gpa": gpa}
    return out


def complete_folds(folds: list[int], seeds: list[int], trained: list[str], work: Path) -> list[int]:
    """The folds whose run cache holds `none` and every trained recipe for every seed (others named)."""
    usable = []
    for f in folds:
        path = work / f"fold{f}-runs.json"
        runs = json.loads(path.read_text()) if path.exists() else {}
        missing = [f"{n}|{s}" for n in ["none", *trained] for s in seeds if f"{n}|{s}" not in runs]
        if missing:
            print(f"fold {f}: left out, runs missing: {', '.join(missing[:6])}")
        else:
            usable.append(f)
    return usable


def main() -> int:
    parser = cached_runs_parser(__doc__)
    parser.add_argument("--train-rows", type=int, default=0, help="as the cached runs were made (0 = all)")
    parser.add_argument("--eval-rows", type=int, default=0, help="as the cached runs were made (0 = all)")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--json", default="", help="also write the numbers here")
    parser.add_argument("--trained", default="", help="recipes trained by tail_quality.py, comma-separated")
    args = parser.parse_args()
    from tailguard.data import load_batch

    t0 = time.perf_counter()
    df = load_batch(args.data)
    fold = query_folds(df["query"], args.n_folds)
    seeds = [int(s) for s in args.seeds.split(",")]
    trained = [t for t in args.trained.split(",") if t]
    usable = complete_folds([int(f) for f in args.folds.split(",")], seeds, trained, Path(args.work))
    if not usable:
        print(f"no fold of {args.folds} has every run of none and {trained} for seeds {seeds}")
        return 1
    folds = [fold_rows(args, df, fold, f, seeds, trained) for f in usable]
    tail = np.concatenate([f["tail"] for f in folds])
    rng = np.random.default_rng(0)
    report = {"folds": ",".join(map(str, usable)), "seeds": seeds, "recipes": {}}
    base_gpa = np.concatenate([f["base_gpa"] for f in folds])
    for r in [*RECIPES, *(f"{t} (trained)" for t in trained)]:
        d_auc = np.concatenate([f["recipes"][r]["d_auc"] for f in folds])
        d_gpa = np.concatenate([f["recipes"][r]["d_gpa"] for f in folds])
        gpa = np.concatenate([f["recipes"][r]["gpa"] for f in folds])
        stats = lift_stats(d_auc, tail, args.bootstrap, rng)
        stats["pooled"] = float(np.mean([f["recipes"][r]["pooled"] for f in folds]))
        g = lift_stats(d_gpa, tail, args.bootstrap, rng)
        stats["gpa"] = {
            "none_overall": float(np.nanmean(base_gpa)),
            "recipe_overall": float(np.nanmean(gpa)),
            "none_tail": float(np.nanmean(base_gpa[tail])),
            "recipe_tail": float(np.nanmean(gpa[tail])),
            "lift_tail": g["tail"],
            "lift_tail_ci": g["tail_ci"],
            "lift_overall": g["overall"],
            "lift_overall_ci": g["overall_ci"],
            "tail_queries": g["tail_queries"],
        }
        stats["target_met"] = bool(
            stats["tail"] >= TARGET["tail_lift"]
            and stats["tail_minus_overall"] >= TARGET["tail_over_overall"]
            and stats["pooled"] >= TARGET["pooled_floor"]
            and stats["tail_ci"][0] > 0
        )
        report["recipes"][r] = stats
    pts = lambda x: f"{100 * x:+.1f}"  # noqa: E731
    ci = lambda c: f"[{100 * c[0]:+.1f}, {100 * c[1]:+.1f}]"  # noqa: E731
    took = time.perf_counter() - t0
    print(f"folds {report['folds']} (asked {args.folds}), seeds {args.seeds}, {took:.0f} s")
    print(
        "| recipe | tail queries | tail per-query AUC lift | 95% CI | overall lift | 95% CI | tail − overall "
        "| 95% CI | pooled AUC lift | graded pair acc. tail (none → recipe) | lift, 95% CI | target met |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r, s in report["recipes"].items():
        g = s["gpa"]
        print(
            f"| {r} | {s['tail_queries']} | {pts(s['tail'])} | {ci(s['tail_ci'])} | {pts(s['overall'])} | "
            f"{ci(s['overall_ci'])} | {pts(s['tail_minus_overall'])} | {ci(s['tail_minus_overall_ci'])} | "
            f"{pts(s['pooled'])} | {g['none_tail']:.3f} → {g['recipe_tail']:.3f} | {pts(g['lift_tail'])} "
            f"{ci(g['lift_tail_ci'])} | {'yes' if s['target_met'] else 'no'} |"
        )
    best = max(report["recipes"].items(), key=lambda kv: kv[1]["tail"])
    print(
        f"\ntail per-query AUC lift: {pts(best[1]['tail'])} points (overall pooled: {pts(best[1]['pooled'])} "
        f"points), recipe: {best[0]}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
