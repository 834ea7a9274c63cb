"""What actually lifts the long tail? Rebalancing strategies vs none on real search data (MiniLM-L6).

Reads the Home Depot relevance file through tailguard's own loader and column mapping, splits by a
stable hash of the query into folds, fine-tunes the pretrained `minilm-l6` cross-encoder per
(strategy, seed, fold) with early stopping on a validation split of training queries, and compares
each strategy with `none` trained on the same fold and seed: per-query ROC AUC (primary) and pooled
ROC AUC, overall and on the query-tail and unseen-term slices, with paired bootstrap 95% intervals
over queries.

CPU (2 cores, ~90 min):
    python bench/tail_quality.py --strategies none,random_under,augment --seeds 0,1,2 --folds 0
GPU (full grid):
    python bench/tail_quality.py --device cuda --strategies all --seeds 0,1,2 --folds 0,1,2,3,4 \
        --train-rows 0 --eval-rows 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "homedepot" / "dev.csv.gz"

# name -> (balance spec, balance options, train options)
STRATEGIES: dict[str, tuple[str, dict, dict]] = {
    "none": ("none", {}, {}),
    "random_under": ("random_under", {"ratio": 1.0}, {}),
    "class_balanced": ("class_balanced", {"beta": 0.9999}, {"loss": "weighted_bce"}),
    "focal": ("none", {}, {"loss": "focal", "loss_params": {"gamma": 2.0}}),
    "logit_adjust": ("none", {}, {"loss": "logit_adjust", "loss_params": {"tau": 1.0}}),
    "query_reweight": (
        "popularity_reweight",
        {"reweight_key": "query", "alpha": 0.5},
        {"loss": "weighted_bce"},
    ),
    "augment": ("augment", {"aug_copies": 4}, {}),
    "random_under+augment": ("augment,random_under", {"ratio": 1.0, "aug_copies": 4}, {}),
}
NOTES_MARKER = "<!-- notes: kept across re-runs -->"
SLICES = {
    "overall": "overall",
    "query tail": "query_frequency:tail",
    "unseen-term": "query_terms:unseen-term",
}


def fold_of(queries: pd.Series, n_folds: int) -> np.ndarray:
    """Fold of each row by a stable hash of its query (rotating the eval fold keeps queries disjoint)."""
    from tailguard.data import stable_hash

    return (stable_hash(queries.astype(str), salt="fold:") % np.uint64(n_folds)).astype(int)


def subsample_queries(df: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """Keep whole queries, in a seeded random order, until max_rows rows (0 keeps everything)."""
    if not max_rows or len(df) <= max_rows:
        return df.reset_index(drop=True)
    queries = df["query"].drop_duplicates().sample(frac=1.0, random_state=seed)
    sizes = df.groupby("query").size().reindex(queries)
    keep = set(sizes.index[np.cumsum(sizes.to_numpy()) <= max_rows])
    return df[df["query"].isin(keep)].reset_index(drop=True)


def run_one(name: str, train: pd.DataFrame, eval_df: pd.DataFrame, seed: int, args, work: Path) -> dict:
    """Balance, fine-tune and score one (strategy, seed); returns scores and training facts."""
    from tailguard.balance import BalanceConfig, rebalance
    from tailguard.model import TrainConfig, predict
    from tailguard.model import train as fit

    spec, balance_options, train_options = STRATEGIES[name]
    balanced, report = rebalance(train, BalanceConfig.from_spec(spec, seed=seed, **balance_options))
    config = TrainConfig(
        base=args.base,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=seed,
        threads=args.threads,
        device=args.device,
        early_stopping_patience=args.patience,
        valid_fraction=0.1,
        progress=False,
        tensorboard=False,
        lr=args.lr,
        **train_options,
    )
    t0 = time.perf_counter()
    result = fit(balanced, config, work / f"{name}-s{seed}")
    scores = predict(result.model_dir, eval_df, batch_size=256)
    return {
        "scores": scores.tolist(),
        "steps": result.steps,
        "best_valid_auc": result.best_valid_auc,
        "epochs_run": len(result.history),
        "train_rows": len(balanced),
        "augmented_rows": int(report.get("augmented_rows", 0) or 0),
        "seconds": round(time.perf_counter() - t0, 1),
        "samples_per_s": round(result.samples_per_s, 1),
    }


def per_query_auc(eval_df: pd.DataFrame, scores: np.ndarray, mask: np.ndarray) -> pd.Series:
    """Per-query ROC AUC on the rows in mask, indexed by query (NaN where a query lacks a class)."""
    from tailguard.metrics import grouped_auc

    sub = eval_df[mask]
    q, names = pd.factorize(sub["query"])
    auc = grouped_auc(q, scores[mask], sub["label"].to_numpy(dtype=float), len(names))
    return pd.Series(auc, index=names)


def compare(
    eval_df: pd.DataFrame, train: pd.DataFrame, runs: dict, strategy: str, seeds: list[int], n_boot: int
) -> dict:
    """Strategy − none per slice: per-seed paired bootstrap intervals, and the seed-averaged difference."""
    from tailguard.metrics import EvalConfig, assign_slices, evaluate

    config = EvalConfig(n_bootstrap=n_boot, seed=0, min_positives=30)
    slices = assign_slices(eval_df, train, config)
    out: dict = {}
    per_seed = {}
    for seed in seeds:
        cand, base = np.asarray(runs[(strategy, seed)]["scores"]), np.asarray(runs[("none", seed)]["scores"])
        ev = evaluate(eval_df, train, {"candidate": cand, "production": base}, config, slices=slices)
        per_seed[seed] = ev
    rng = np.random.default_rng(0)
    for label, slice_name in SLICES.items():
        info = per_seed[seeds[0]]["slices"].get(slice_name, {})
        row = {"rows": info.get("rows"), "queries": info.get("queries"), "positives": info.get("positives")}
        for metric in ("roc_auc_per_query", "roc_auc"):
            diffs = [per_seed[s]["comparison"]["slices"].get(slice_name, {}).get(metric, {}) for s in seeds]
            values = [d.get("value") for d in diffs if d.get("value") is not None]
            row[metric] = {
                "mean_diff": float(np.mean(values)) if values else None,
                "seed_sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "per_seed": [
                    {
                        "seed": s,
                        "diff": d.get("value"),
                        "ci_low": d.get("ci_low"),
                        "ci_high": d.get("ci_high"),
                    }
                    for s, d in zip(seeds, diffs, strict=True)
                ],
                "candidate": float(
                    np.mean(
                        [
                            per_seed[s]["metrics"]["candidate"]
                            .get(slice_name, {})
                            .get(metric, {})
                            .get("value")
                            or np.nan
                            for s in seeds
                        ]
                    )
                ),
                "none": float(
                    np.mean(
                        [
                            per_seed[s]["metrics"]["production"]
                            .get(slice_name, {})
                            .get(metric, {})
                            .get("value")
                            or np.nan
                            for s in seeds
                        ]
                    )
                ),
            }
        # Seed-averaged per-query AUC difference, bootstrapped over queries (seeds averaged per query first).
        mask = (
            np.ones(len(eval_df), bool)
            if slice_name == "overall"
            else (slices[slice_name.split(":")[0]].astype(str).to_numpy() == slice_name.split(":")[1])
        )
        if mask.any():
            d = (
                pd.concat(
                    [
                        per_query_auc(eval_df, np.asarray(runs[(strategy, s)]["scores"]), mask)
                        - per_query_auc(eval_df, np.asarray(runs[("none", s)]["scores"]), mask)
                        for s in seeds
                    ],
                    axis=1,
                )
                .mean(axis=1)
                .dropna()
                .to_numpy()
            )
            if d.size:
                boots = d[rng.integers(0, d.size, size=(n_boot or 1000, d.size))].mean(axis=1)
                row["roc_auc_per_query"]["seed_mean_ci"] = [
                    float(np.quantile(boots, 0.025)),
                    float(np.quantile(boots, 0.975)),
                ]
        out[label] = row
    return out


def fmt_pts(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:+.1f}"


def fmt_sd(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def render(results: dict, args, command: str) -> str:
    """The markdown results page (table + headline) written to docs/RESULTS.md."""
    lines = [
        "# Results: what lifts the long tail on real search data",
        "",
        f"Measured {results['date']} on {results['machine']}; base `{args.base}`; folds {results['folds']}; "
        f"seeds {results['seeds']}; train rows per fold ≤ {args.train_rows or 'all'}, "
        f"eval rows ≤ {args.eval_rows or 'all'}; "
        f"early stopping on validation AUC (patience {args.patience}, ≤ {args.epochs} epochs).",
        "",
        "Reproduce:",
        "",
        f"    {command}",
        "",
        "Differences are strategy − none in AUC points (×100), trained on the same fold and seed. "
        "`mean` is over seeds, `sd` the seed standard deviation, and `95% CI` a bootstrap over queries "
        "of the "
        "seed-averaged per-query AUC difference. Pooled AUC also rewards knowing which queries have more "
        "positives; per-query AUC only the ranking within a query.",
        "",
    ]
    for fold, per_fold in results["comparisons"].items():
        lines += [
            f"## Fold {fold}",
            "",
            "| strategy | slice | rows | pos | per-query AUC (none → strategy) | diff mean | sd | 95% CI | "
            "pooled AUC (none → strategy) | pooled diff | sd |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for strategy, rows in per_fold.items():
            for label, row in rows.items():
                pq, pooled = row["roc_auc_per_query"], row["roc_auc"]
                ci = pq.get("seed_mean_ci")
                ci_txt = f"[{fmt_pts(ci[0])}, {fmt_pts(ci[1])}]" if ci else "n/a"
                lines.append(
                    f"| {strategy} | {label} | {row['rows']} | {row['positives']} | {pq['none']:.3f} → "
                    f"{pq['candidate']:.3f} | {fmt_pts(pq['mean_diff'])} | {fmt_sd(pq['seed_sd'])} | "
                    f"{ci_txt} | "
                    f"{pooled['none']:.3f} → {pooled['candidate']:.3f} | {fmt_pts(pooled['mean_diff'])} | "
                    f"{fmt_sd(pooled['seed_sd'])} |"
                )
        lines.append("")
    lines += [
        "## Training runs",
        "",
        "| fold | strategy | seed | train rows | augmented | epochs | steps | best valid AUC | s "
        "| samples/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['fold']} | {r['strategy']} | {r['seed']} | {r['train_rows']} | {r['augmented_rows']} | "
            f"{r['epochs_run']} | {r['steps']} | {r['best_valid_auc'] or float('nan'):.3f} | "
            f"{r['seconds']} | "
            f"{r['samples_per_s']} |"
        )
    lines += ["", results["headline"], ""]
    return "\n".join(lines)


def headline(results: dict) -> str:
    """The one-line headline: the best strategy by tail per-query AUC lift, with the overall pooled lift."""
    best = None
    for per_fold in results["comparisons"].values():
        for strategy, rows in per_fold.items():
            tail = rows["query tail"]["roc_auc_per_query"]["mean_diff"]
            pooled = rows["overall"]["roc_auc"]["mean_diff"]
            if tail is not None and (best is None or tail > best[1]):
                best = (strategy, tail, pooled)
    if best is None:
        return "tail per-query AUC lift: n/a (no strategy compared)"
    return (
        f"tail per-query AUC lift: {fmt_pts(best[1])} points (overall pooled: {fmt_pts(best[2])} points), "
        f"strategy: {best[0]}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--columns", default="", help="column mapping, as `tailguard retrain --columns`")
    parser.add_argument(
        "--strategies",
        default="none,random_under,augment",
        help=f"comma-separated, or 'all': {', '.join(STRATEGIES)}",
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--folds", default="0", help="eval folds to run (of --n-folds)")
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--base", default="minilm-l6")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--epochs", type=int, default=4, help="most epochs (early stopping usually ends sooner)"
    )
    parser.add_argument("--patience", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--train-rows", type=int, default=6000, help="cap training rows per fold (whole queries); 0 = all"
    )
    parser.add_argument(
        "--eval-rows", type=int, default=5000, help="cap eval rows per fold (whole queries); 0 = all"
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=90.0,
        help="stop starting new runs after this; finished runs are reported",
    )
    parser.add_argument("--work", default=str(REPO / ".tailguard" / "tail_quality"))
    parser.add_argument("--out", default=str(REPO / "docs" / "RESULTS.md"))
    args = parser.parse_args(argv)

    data = Path(args.data)
    if not data.exists():
        print(
            f"{data}: real data not found (see ../shared/data/README.md); nothing measured", file=sys.stderr
        )
        return 2
    from tailguard.contract import parse_columns
    from tailguard.data import load_batch

    strategies = list(STRATEGIES) if args.strategies == "all" else args.strategies.split(",")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    if "none" not in strategies:
        strategies.insert(0, "none")
    seeds = [int(s) for s in args.seeds.split(",")]
    folds = [int(f) for f in args.folds.split(",")]
    df = load_batch(str(data), parse_columns(args.columns) if args.columns else None)
    fold = fold_of(df["query"], args.n_folds)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 60 * args.budget_minutes
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPU cores, device {args.device}",
        "folds": folds,
        "seeds": seeds,
        "runs": [],
        "comparisons": {},
    }
    for f in folds:
        train = subsample_queries(df[fold != f], args.train_rows, seed=f)
        eval_df = subsample_queries(df[fold == f], args.eval_rows, seed=100 + f)
        cache = work / f"fold{f}-runs.json"
        done = json.loads(cache.read_text()) if cache.exists() else {}
        runs: dict = {}
        for seed in seeds:  # seeds outer: a budget cut still leaves complete seeds for every strategy
            for strategy in strategies:
                key = f"{strategy}|{seed}"
                if key not in done:
                    if time.monotonic() > deadline:
                        print(f"budget reached: skipping {key} on fold {f}", file=sys.stderr)
                        continue
                    print(f"fold {f}: training {strategy} seed {seed} ...", file=sys.stderr, flush=True)
                    done[key] = run_one(strategy, train, eval_df, seed, args, work / f"fold{f}")
                    cache.write_text(json.dumps(done))
                runs[(strategy, seed)] = done[key]
                results["runs"].append(
                    {
                        "fold": f,
                        "strategy": strategy,
                        "seed": seed,
                        **{k: v for k, v in done[key].items() if k != "scores"},
                    }
                )
        complete = [s for s in seeds if all((st, s) in runs for st in strategies)]
        if not complete:
            continue
        results["comparisons"][f] = {
            st: compare(eval_df, train, runs, st, complete, args.bootstrap)
            for st in strategies
            if st != "none"
        }
    results["headline"] = headline(results)
    command = "python bench/tail_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    page = render(results, args, command)
    print(page)
    out = Path(args.out)
    # Hand-written interpretation below the marker survives a re-run; the tables above it are regenerated.
    notes = out.read_text().partition(NOTES_MARKER)[2] if out.exists() else ""
    out.write_text(page + (f"\n{NOTES_MARKER}{notes}" if notes else ""))
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
