"""What actually lifts the long tail? Rebalancing strategies vs none on real search data (MiniLM-L6).

Reads the Home Depot relevance file through tailguard's own loader and column mapping, splits by a
stable hash of the query into folds (tailguard.data.query_folds), fine-tunes the pretrained `minilm-l6`
cross-encoder per (strategy, seed, fold) with early stopping on a validation split of training queries,
and compares each strategy with `none` trained on the same fold and seed: per-query ROC AUC (primary)
and pooled ROC AUC, overall and on the query-tail and unseen-term slices, with paired bootstrap 95%
intervals over queries.

CPU (2 cores, ~90 min):
    python bench/tail_quality.py --strategies none,random_under,augment --seeds 0,1,2 --folds 0
GPU (full grid; N training processes share the one GPU):
    python bench/tail_quality.py --device cuda --strategies all --seeds 0,1,2 --folds 0,1,2,3,4 \
        --train-rows 0 --eval-rows 0 --workers 8
Re-render the page from the run cache without training anything (same run-defining options):
    python bench/tail_quality.py ... --budget-minutes 0

Each strategy is the recipe of that name in policies/recipes.yaml, trained as the retrain flow trains:
the compact rebalance, the flow's TrainConfig and its trainer (see run_one).

Finished runs are cached per fold in --work/fold{F}-runs.json, each with the options that define it; a
cached run whose options differ from this call's is not reused. A run is started only while the time
left in --budget-minutes covers the longest run seen so far of its strategy (or of any strategy).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tailguard.data import query_folds, subsample_queries  # noqa: E402
from tailguard.recipes import load_recipes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "homedepot" / "dev.csv.gz"

# The strategies compared, each a recipe of policies/recipes.yaml (tailguard.recipes) of the same name:
# its balancing and loss options; epochs, batch size, learning rate and base come from this script's options.
STRATEGIES: tuple[str, ...] = (
    "none",
    "random_under",
    "class_balanced",
    "focal",
    "logit_adjust",
    "query_reweight",
    "augment",
    "random_under+augment",
)
# Every other recipe is asked for by name only (`--strategies all,augment_rows`, `none,graded,distilled3`),
# so "all" keeps meaning the grid already cached.
EXTRA_STRATEGIES: tuple[str, ...] = tuple(sorted(set(load_recipes()) - set(STRATEGIES)))
NOTES_MARKER = "<!-- notes: kept across re-runs -->"
SLICES = {
    "overall": "overall",
    "query tail": "query_frequency:tail",
    "unseen-term": "query_terms:unseen-term",
}


def run_params(name: str, seed: int, args):
    """The retrain parameters of one (strategy, seed) run: recipe `name` plus this script's options.

    The recipe fills balance, balance_options and its train_options (tailguard.recipes.apply_recipe),
    exactly as `tailguard retrain --recipe NAME` does.
    """
    from tailguard.pipeline import RetrainParams

    return RetrainParams(
        data=str(args.data),
        columns=args.columns,
        recipe=name,
        base_model=args.base,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=seed,
        train_options={
            "max_length": args.max_length,
            "threads": args.threads,
            "device": args.device,
            "early_stopping_patience": args.patience,
            "valid_fraction": 0.1,
            "progress": False,
            "tensorboard": False,
        },
    )


def run_one(name: str, train: pd.DataFrame, eval_df: pd.DataFrame, seed: int, args, work: Path) -> dict:
    """Balance, fine-tune and score one (strategy, seed) through the retrain flow's own stages.

    The compact rebalance the flow trains on (pipeline.rebalance: distinct rows + `repeats`), the flow's
    TrainConfig (pipeline.train_config) and its trainer choice (recipes.train_candidate); returns the eval
    scores and training facts.
    """
    from tailguard.balance import BalanceConfig, rebalance
    from tailguard.model import predict
    from tailguard.pipeline import train_config
    from tailguard.recipes import train_candidate
    from tailguard.settings import get_settings

    params = run_params(name, seed, args)
    balance = BalanceConfig.from_spec(params.balance, seed=params.seed, **params.balance_options)
    balanced, report = rebalance(train, balance, compact=True)
    t0 = time.perf_counter()
    result = train_candidate(balanced, train_config(params, get_settings()), work / f"{name}-s{seed}")
    scores = predict(result.model_dir, eval_df, batch_size=256)
    return {
        "device": device_name(args.device),
        "scores": scores.tolist(),
        "steps": result.steps,
        "best_valid_auc": result.best_valid_auc,
        "epochs_run": len(result.history),
        "train_rows": int(balanced["repeats"].sum()),  # counted rows, as the written-out frame's length
        "augmented_rows": int(report.get("augmented_rows", 0) or 0),
        "seconds": round(time.perf_counter() - t0, 1),
        "samples_per_s": round(result.samples_per_s, 1),
    }


def device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    return f"{os.cpu_count()} CPU cores (cpu)"


def run_signature(args) -> dict:
    """The options that define a run's result: a cached run is reused only when these match."""
    return {
        "data": Path(args.data).name,
        "columns": args.columns,
        "base": args.base_label or args.base,
        "n_folds": args.n_folds,
        "epochs": args.epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_length": args.max_length,
        "train_rows": args.train_rows,
        "eval_rows": args.eval_rows,
    }


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _job(name: str, train: pd.DataFrame, eval_df: pd.DataFrame, seed: int, args, work: Path) -> dict:
    """One (strategy, seed, fold) run in a worker process; its wall time includes sharing the device."""
    t0 = time.perf_counter()
    out = run_one(name, train, eval_df, seed, args, work)
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def mean_ci(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> list[float]:
    """95% bootstrap interval of the mean of d (resampling its entries: queries); 0 resamples means 1000."""
    from tailguard.metrics import bootstrap_mean_interval

    return list(bootstrap_mean_interval(d, n_boot or 1000, rng))


def seed_mean(per_seed: dict, model: str, slice_name: str, metric: str) -> float:
    """A model's metric on a slice, averaged over seeds' Evaluations (NaN where undefined)."""
    values = [e.value(model, slice_name, metric) for e in per_seed.values()]
    return float(np.mean([np.nan if v is None else v for v in values]))


def compare(
    eval_df: pd.DataFrame, train: pd.DataFrame, runs: dict, strategy: str, seeds: list[int], n_boot: int
) -> dict:
    """Strategy − none per slice: per-seed paired bootstrap intervals, and the seed-averaged difference."""
    from tailguard.metrics import EvalConfig, Interval, SliceInfo, assign_slices, evaluate, per_query_auc

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
        info = per_seed[seeds[0]].slice_info(slice_name) or SliceInfo()
        row = {"rows": info.rows, "queries": info.queries, "positives": info.positives}
        for metric in ("roc_auc_per_query", "roc_auc"):
            diffs = [per_seed[s].diff(slice_name, metric) or Interval() for s in seeds]
            values = [d.value for d in diffs if d.value is not None]
            row[metric] = {
                "mean_diff": float(np.mean(values)) if values else None,
                "seed_sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "per_seed": [
                    {
                        "seed": s,
                        "diff": d.value,
                        "ci_low": d.ci_low,
                        "ci_high": d.ci_high,
                    }
                    for s, d in zip(seeds, diffs, strict=True)
                ],
                "candidate": seed_mean(per_seed, "candidate", slice_name, metric),
                "none": seed_mean(per_seed, "production", slice_name, metric),
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
            row["_per_query_diffs"] = d
            if d.size:
                row["roc_auc_per_query"]["seed_mean_ci"] = mean_ci(d, n_boot, rng)
        out[label] = row
    return out


def fmt_pts(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:+.1f}"


def fmt_sd(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


TARGET = {"tail_lift": 0.02, "tail_over_overall": 0.01, "pooled_floor": -0.005}


def summarize(results: dict, diffs: dict, n_boot: int) -> dict:
    """Per strategy over every compared fold: the tail and overall per-query AUC lift (seed-averaged per
    query, queries of all folds pooled; folds hold disjoint queries), a bootstrap interval over those
    queries, the fold-averaged pooled AUC lift, and whether the issue's target is met."""
    rng = np.random.default_rng(1)
    out: dict = {}
    strategies = {st for per_fold in results["comparisons"].values() for st in per_fold}
    for st in [s for s in STRATEGIES + EXTRA_STRATEGIES if s in strategies]:
        folds = [f for f, per_fold in results["comparisons"].items() if st in per_fold]
        row: dict = {"folds": folds}
        for label in ("query tail", "overall"):
            d = np.concatenate([diffs.get((f, st, label), np.zeros(0)) for f in folds])
            ci = mean_ci(d, n_boot, rng) if d.size else None
            row[label] = {"per_query": float(d.mean()) if d.size else None, "ci": ci, "queries": int(d.size)}
        pooled = [results["comparisons"][f][st]["overall"]["roc_auc"]["mean_diff"] for f in folds]
        pooled = [x for x in pooled if x is not None]
        row["overall_pooled"] = float(np.mean(pooled)) if pooled else None
        tail, overall = row["query tail"], row["overall"]
        row["target_met"] = bool(
            tail["per_query"] is not None
            and overall["per_query"] is not None
            and row["overall_pooled"] is not None
            and tail["ci"] is not None
            and tail["per_query"] >= TARGET["tail_lift"]
            and tail["per_query"] - overall["per_query"] >= TARGET["tail_over_overall"]
            and row["overall_pooled"] >= TARGET["pooled_floor"]
            and tail["ci"][0] > 0
        )
        out[st] = row
    return out


def grid_status(results: dict, strategies: list[str], seeds: list[int], folds: list[int]) -> list[str]:
    """Plain lines on what of the asked grid ran: a partial grid is reported as such."""
    have = {(r["fold"], r["strategy"], r["seed"]) for r in results["runs"]}
    asked = len(strategies) * len(seeds) * len(folds)
    lines = [
        f"Grid asked: {len(strategies)} strategies × seeds {seeds} × folds {folds} = {asked} runs; "
        f"{len(have)} finished{' (complete)' if len(have) == asked else ' (PARTIAL: the rest was not run)'}."
    ]
    for f in folds:
        complete = results["complete_seeds"].get(f, [])
        n = sum(1 for k in have if k[0] == f)
        lines.append(
            f"- fold {f}: {n}/{len(strategies) * len(seeds)} runs; seeds compared (every strategy "
            f"finished): {complete if complete else 'none'}"
        )
    return lines


def render(results: dict, args, command: str) -> str:
    """The markdown results page (table + headline) written to docs/RESULTS.md."""
    lines = render_header(results, args, command)
    if results["summary"]:
        lines += render_summary(results)
    for fold, per_fold in results["comparisons"].items():
        lines += render_fold(fold, per_fold, results["complete_seeds"][fold])
    lines += render_runs(results["runs"])
    lines += ["", results["headline"], ""]
    return "\n".join(lines)


def render_header(results: dict, args, command: str) -> list[str]:
    """The page's title, what was measured, how to reproduce it and how to read the tables."""
    return [
        "# Results: what lifts the long tail on real search data",
        "",
        f"Measured {results['date']} on {results['machine']}; base `{args.base_label or args.base}`; "
        f"folds {results['folds']}; seeds {results['seeds']}; "
        f"train rows per fold ≤ {args.train_rows or 'all'}, "
        f"eval rows ≤ {args.eval_rows or 'all'}; batch {args.batch_size}, lr {args.lr}, max length "
        f"{args.max_length}; early stopping on validation AUC (patience {args.patience}, ≤ {args.epochs} "
        "epochs).",
        "",
        *results["grid"],
        "",
        *(
            [
                "Rendered from the run cache (no training) with:",
                "",
                f"    {command}",
                "",
                "The runs themselves: these options with `--device cuda --workers N` and a run budget, e.g. "
                "`bash bench/gpu_session.sh` on a GPU machine (see the notes below).",
            ]
            if args.budget_minutes == 0
            else ["Reproduce:", "", f"    {command}"]
        ),
        "",
        "Differences are strategy − none in AUC points (×100), trained on the same fold and seed. "
        "`mean` is over seeds, `sd` the seed standard deviation, and `95% CI` a bootstrap over queries "
        "of the "
        "seed-averaged per-query AUC difference. Pooled AUC also rewards knowing which queries have more "
        "positives; per-query AUC only the ranking within a query.",
        "",
    ]


def render_summary(results: dict) -> list[str]:
    """The table over every compared fold: tail and overall per-query lift, pooled lift, target met."""
    lines = [
        f"## All compared folds ({', '.join(str(f) for f in results['comparisons'])})",
        "",
        "Per-query AUC lift over the queries of every compared fold (seed-averaged per query), with a "
        "bootstrap 95% interval over those queries; pooled lift averaged over folds. Target: tail "
        "per-query lift ≥ +2.0, tail lift ≥ overall per-query lift + 1.0, overall pooled lift ≥ −0.5, "
        "and the tail interval above zero.",
        "",
        "| strategy | folds | tail queries | tail per-query lift | 95% CI | overall per-query lift | "
        "95% CI | overall pooled lift | target met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for st, row in results["summary"].items():
        tail, overall = row["query tail"], row["overall"]
        ci = lambda c: f"[{fmt_pts(c[0])}, {fmt_pts(c[1])}]" if c else "n/a"  # noqa: E731
        lines.append(
            f"| {st} | {len(row['folds'])} | {tail['queries']} | {fmt_pts(tail['per_query'])} | "
            f"{ci(tail['ci'])} | {fmt_pts(overall['per_query'])} | {ci(overall['ci'])} | "
            f"{fmt_pts(row['overall_pooled'])} | {'yes' if row['target_met'] else 'no'} |"
        )
    return [*lines, ""]


def render_fold(fold: int, per_fold: dict, seeds: list[int]) -> list[str]:
    """One fold's table: every strategy and slice, none -> strategy, seed mean, sd and interval."""
    lines = [
        f"## Fold {fold} (seeds {seeds})",
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
    return [*lines, ""]


def render_runs(runs: list[dict]) -> list[str]:
    """The table of training runs: rows, epochs, steps, validation AUC, times and throughput."""
    lines = [
        "## Training runs",
        "",
        "`s` is the run's own time (train + score); `wall s` its time in a worker sharing the device with "
        "the other workers.",
        "",
        "| fold | strategy | seed | train rows | augmented | epochs | steps | best valid AUC | s "
        "| wall s | samples/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['fold']} | {r['strategy']} | {r['seed']} | {r['train_rows']} | {r['augmented_rows']} | "
            f"{r['epochs_run']} | {r['steps']} | {r['best_valid_auc'] or float('nan'):.3f} | "
            f"{r['seconds']} | {r.get('wall_seconds', 'n/a')} | "
            f"{r['samples_per_s']} |"
        )
    return lines


def headline(results: dict) -> str:
    """The one-line headline: the best strategy by tail per-query AUC lift (over all compared folds), with
    its overall pooled lift."""
    best = None
    for strategy, row in results["summary"].items():
        tail, pooled = row["query tail"]["per_query"], row["overall_pooled"]
        if tail is not None and (best is None or tail > best[1]):
            best = (strategy, tail, pooled)
    if best is None:
        return "tail per-query AUC lift: n/a (no strategy compared)"
    return (
        f"tail per-query AUC lift: {fmt_pts(best[1])} points (overall pooled: {fmt_pts(best[2])} points), "
        f"strategy: {best[0]}"
    )


def write_json_atomic(path: Path, payload) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def train_grid(jobs: list, frames: dict, done: dict, args, work: Path, deadline: float) -> None:
    """Run the (fold, seed, strategy) jobs in order, `args.workers` at a time, each cached when it ends.

    A job starts only while the time left covers the longest wall time seen so far for its strategy (or,
    before that, for any strategy): a budget cut leaves whole seeds, and no run is started that cannot end.
    """
    signature = run_signature(args)
    seen: dict[str, list[float]] = {}
    queue = deque(jobs)
    workers = max(1, args.workers)
    threads = args.threads or max(1, (os.cpu_count() or 1) // workers)
    pool = None
    if workers > 1:
        import multiprocessing as mp

        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),  # CUDA cannot be used in forked children
            initializer=_init_worker,
            initargs=(threads,),
        )
    job_args = argparse.Namespace(**{**vars(args), "threads": threads})
    in_flight: dict = {}

    def estimate(strategy: str) -> float:
        own = seen.get(strategy)
        every = [x for xs in seen.values() for x in xs]
        return max(own) if own else (max(every) if every else 0.0)

    def record(f: int, seed: int, strategy: str, out: dict) -> None:
        seen.setdefault(strategy, []).append(out.get("wall_seconds", out["seconds"]))
        done[f][f"{strategy}|{seed}"] = {**out, "config": signature}
        write_json_atomic(work / f"fold{f}-runs.json", done[f])
        print(
            f"fold {f}: {strategy} seed {seed} done in {out.get('wall_seconds', out['seconds'])} s "
            f"(epochs {out['epochs_run']}, steps {out['steps']}, valid AUC {out['best_valid_auc']})",
            file=sys.stderr,
            flush=True,
        )

    try:
        while queue or in_flight:
            while queue and len(in_flight) < workers:
                f, seed, strategy = queue.popleft()
                left = deadline - time.monotonic()
                if left <= 0 or estimate(strategy) > left:
                    print(
                        f"budget: not starting {strategy}|{seed} on fold {f} ({left:.0f} s left, a run "
                        f"takes ~{estimate(strategy):.0f} s)",
                        file=sys.stderr,
                    )
                    continue
                print(f"fold {f}: training {strategy} seed {seed} ...", file=sys.stderr, flush=True)
                train, eval_df = frames[f]
                job = (strategy, train, eval_df, seed, job_args, work / f"fold{f}")
                if pool is None:
                    record(f, seed, strategy, _job(*job))
                else:
                    in_flight[pool.submit(_job, *job)] = (f, seed, strategy)
            if not in_flight:
                continue
            finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for fut in finished:
                f, seed, strategy = in_flight.pop(fut)
                try:
                    record(f, seed, strategy, fut.result())
                except Exception as exc:  # one failed run must not lose the others
                    print(f"fold {f}: {strategy} seed {seed} FAILED: {exc!r}", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def cached_runs_parser(description: str) -> argparse.ArgumentParser:
    """Options shared by the scripts that read this study's run cache (score_shift.py, tail_round2.py)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--work", default=str(REPO / ".tailguard" / "tail_quality"))
    parser.add_argument("--folds", default="0,1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n-folds", type=int, default=5)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--columns", default="", help="column mapping, as `tailguard retrain --columns`")
    parser.add_argument(
        "--strategies",
        default="none,random_under,augment",
        help=f"comma-separated; 'all' = {', '.join(STRATEGIES)}; also by name: {', '.join(EXTRA_STRATEGIES)}",
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--folds", default="0", help="eval folds to run (of --n-folds), in priority order")
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--base", default="minilm-l6")
    parser.add_argument(
        "--base-label",
        default="",
        help="what the base is, for the page and the run cache (default: --base), e.g. when --base is a "
        "local copy of minilm-l6",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--epochs", type=int, default=4, help="most epochs (early stopping usually ends sooner)"
    )
    parser.add_argument("--patience", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run; 0 = cores / workers")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="training runs at a time, each in its own process (they share one GPU)",
    )
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
        help="start no run after this, nor one that would not end by then; finished runs are reported "
        "(0: only re-render the page from the cache)",
    )
    parser.add_argument("--work", default=str(REPO / ".tailguard" / "tail_quality"))
    parser.add_argument("--out", default=str(REPO / "docs" / "RESULTS.md"))
    return parser


def fold_jobs(
    df: pd.DataFrame, args, strategies: list[str], seeds: list[int], folds: list[int], work: Path
) -> tuple[dict, dict, list]:
    """(fold -> (train, eval) frames, fold -> cached runs still valid, the (fold, seed, strategy) to run)."""
    fold = query_folds(df["query"], args.n_folds)
    signature = run_signature(args)
    frames, done, jobs = {}, {}, []
    for f in folds:
        frames[f] = (
            subsample_queries(df[fold != f], args.train_rows, seed=f),
            subsample_queries(df[fold == f], args.eval_rows, seed=100 + f),
        )
        cache = work / f"fold{f}-runs.json"
        done[f] = json.loads(cache.read_text()) if cache.exists() else {}
        for key, run in list(done[f].items()):
            if run.get("config") != signature:
                print(f"fold {f}: cached {key} was made with other options; not reused", file=sys.stderr)
                del done[f][key]
        # seeds outer: a budget cut still leaves complete seeds for every strategy
        jobs += [(f, s, st) for s in seeds for st in strategies if f"{st}|{s}" not in done[f]]
    return frames, done, jobs


def collect(
    frames: dict, done: dict, strategies: list[str], seeds: list[int], folds: list[int], args
) -> dict:
    """The results of every finished run: runs table, per-fold comparisons with none, summary, headline."""
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "folds": folds,
        "seeds": seeds,
        "runs": [],
        "comparisons": {},
        "complete_seeds": {},
    }
    diffs: dict = {}
    for f in folds:
        train, eval_df = frames[f]
        runs: dict = {}
        for seed in seeds:
            for strategy in strategies:
                run = done[f].get(f"{strategy}|{seed}")
                if run is None:
                    continue
                runs[(strategy, seed)] = run
                kept = {k: v for k, v in run.items() if k not in ("scores", "config")}
                results["runs"].append({"fold": f, "strategy": strategy, "seed": seed, **kept})
        complete = [s for s in seeds if all((st, s) in runs for st in strategies)]
        results["complete_seeds"][f] = complete
        if not complete:
            continue
        results["comparisons"][f] = {}
        for st in strategies:
            if st == "none":
                continue
            rows = compare(eval_df, train, runs, st, complete, args.bootstrap)
            for label, row in rows.items():
                diffs[(f, st, label)] = row.pop("_per_query_diffs", np.zeros(0))
            results["comparisons"][f][st] = rows
    unknown_device = f"{os.cpu_count()} CPU cores, device {args.device}"
    devices = sorted({r.get("device", unknown_device) for r in results["runs"]})
    results["machine"] = "; ".join(devices) if devices else "nothing (no run finished)"
    results["summary"] = summarize(results, diffs, args.bootstrap)
    results["grid"] = grid_status(results, strategies, seeds, folds)
    results["headline"] = headline(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    started = time.monotonic()

    data = Path(args.data)
    if not data.exists():
        print(
            f"{data}: real data not found (pass --data: the Home Depot relevance CSV); nothing measured",
            file=sys.stderr,
        )
        return 2
    from tailguard.contract import parse_columns
    from tailguard.data import load_batch

    strategies = [s for name in args.strategies.split(",") for s in (STRATEGIES if name == "all" else [name])]
    unknown = [s for s in strategies if s not in STRATEGIES + EXTRA_STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES + EXTRA_STRATEGIES)}")
    if "none" not in strategies:
        strategies.insert(0, "none")
    seeds = [int(s) for s in args.seeds.split(",")]
    folds = [int(f) for f in args.folds.split(",")]
    df = load_batch(str(data), parse_columns(args.columns) if args.columns else None)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 60 * args.budget_minutes
    frames, done, jobs = fold_jobs(df, args, strategies, seeds, folds, work)
    if jobs and args.budget_minutes > 0:
        train_grid(jobs, frames, done, args, work, deadline)
    results = collect(frames, done, strategies, seeds, folds, args)
    results["seconds"] = round(time.monotonic() - started, 1)
    command = "python bench/tail_quality.py " + shlex.join(argv if argv is not None else sys.argv[1:])
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
