"""Where a strategy's pooled-AUC change comes from, read off the tail-quality run cache (no training).

Pooled ROC AUC mixes two things: ranking within a query and ordering queries by how many relevant results
they have. "query-level AUC" scores every row with its query's mean score, so it keeps only the second.
A pooled loss that the query-level AUC repeats is a between-query (calibration) shift, not a worse ranking.

    .venv/bin/python bench/score_shift.py                      # folds 0,1 of .tailguard/tail_quality
    .venv/bin/python bench/score_shift.py --folds 0,1,2 --seeds 0
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tail_quality import cached_runs_parser  # noqa: E402

from tailguard.data import query_folds, subsample_queries  # noqa: E402
from tailguard.metrics import per_query_auc  # noqa: E402


def main() -> int:
    parser = cached_runs_parser(__doc__)
    parser.add_argument("--eval-rows", type=int, default=0, help="as the cached runs were made (0 = all)")
    args = parser.parse_args()
    from sklearn.metrics import roc_auc_score

    from tailguard.data import load_batch

    df = load_batch(args.data)
    fold = query_folds(df["query"], args.n_folds)
    rows = []
    for f in (int(x) for x in args.folds.split(",")):
        eval_df = subsample_queries(df[fold == f], args.eval_rows, seed=100 + f)
        runs = json.loads((Path(args.work) / f"fold{f}-runs.json").read_text())
        y, queries = eval_df["label"].to_numpy(), eval_df["query"].to_numpy()
        for seed in (int(x) for x in args.seeds.split(",")):
            for key, run in runs.items():
                strategy, run_seed = key.rsplit("|", 1)
                if int(run_seed) != seed:
                    continue
                s = np.asarray(run["scores"])
                query_mean = pd.Series(s).groupby(queries).transform("mean").to_numpy()
                rows.append(
                    {
                        "strategy": strategy,
                        "runs": 1,
                        "pooled AUC": roc_auc_score(y, s),
                        "query-level AUC": roc_auc_score(y, query_mean),
                        "per-query AUC": float(per_query_auc(eval_df, s, np.ones(len(s), bool)).mean()),
                        "mean score, positives": s[y == 1].mean(),
                        "mean score, negatives": s[y == 0].mean(),
                    }
                )
    means = {c: "mean" for c in rows[0] if c not in ("strategy", "runs")}
    table = pd.DataFrame(rows).groupby("strategy").agg({"runs": "sum", **means})
    print(f"folds {args.folds}, seeds {args.seeds}: means over runs")
    print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
