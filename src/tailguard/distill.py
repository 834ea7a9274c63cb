"""Distillation (issue #18): one student cross-encoder trained on gold labels plus a seed ensemble's soft
labels on extra (query, title) pairs mined by BM25 from the batch's own titles.

Why: a seed ensemble (recipes.train_ensemble) costs K times the scoring of one model at serving time; the
student is one cross-encoder of the base's size. The mined pairs are the unjudged titles a shopper's query
retrieves lexically from the same batch, so the student sees K teachers' graded opinion on far more
(query, title) pairs than the judged rows: on Home Depot, 67% of tail queries (<= 5 judged rows) have no
two binary classes (docs/RESULTS.md), and a soft label gives within-query signal on every mined pair.
Recipe of Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network": the student's
loss is BCE against the teachers' mean probability (temperature 1) beside BCE on the gold labels.

The student folder is a plain cross-encoder (model.safetensors, no ensemble.json) plus `distill.json`
(JSON, provenance: teacher seeds, mined rows); the teachers are trained beside it and removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DISTILL_FILE = "distill.json"
DISTILL_FORMAT = "tailguard.distill/1"


class DistillError(ValueError):
    """A batch distillation cannot use (no titles to mine, no teacher); the message is one line."""


def mine_pairs(train_df: pd.DataFrame, per_query: int, max_rows: int = 200_000) -> pd.DataFrame:
    """Up to `per_query` unjudged (query, item) pairs per training query, by BM25 over the batch's titles.

    train_df: rows with `query`, `item_id`, `item_title` (a compact frame works: only distinct values are
    used). The corpus is the distinct items (sorted by item_id), the queries are the distinct queries
    (sorted), so the result does not depend on row order. A query's judged items are never mined; a title
    with BM25 score 0 (no shared word) is never mined. Returns a frame with columns query, item_id,
    item_title, bm25 (float, descending within a query), at most `max_rows` rows (queries in sorted order).
    BM25 via bm25s (k1 1.5, b 0.75: Robertson & Zaragoza 2009's usual values).
    """
    import bm25s

    from tailguard.hybrid import words as _words

    if per_query < 1:
        return pd.DataFrame(columns=["query", "item_id", "item_title", "bm25"])
    items = train_df[["item_id", "item_title"]].astype(str).drop_duplicates("item_id").sort_values("item_id")
    if items.empty:
        raise DistillError("distillation: the training frame has no titles to mine pairs from")
    retriever = bm25s.BM25(k1=1.5, b=0.75)
    # bm25s refuses an empty document; a title without words becomes one placeholder token
    retriever.index([_words(t) or ["\x00"] for t in items["item_title"]], show_progress=False)
    vocab = set(retriever.vocab_dict)
    judged = train_df.groupby(train_df["query"].astype(str))["item_id"].agg(lambda s: set(s.astype(str)))
    queries = [q for q in sorted(judged.index) if any(t in vocab for t in _words(q))]
    rows: list[tuple[str, str, str, float]] = []
    for query in queries:
        known = [t for t in _words(query) if t in vocab]
        k = min(len(items), per_query + len(judged[query]))
        docs, scores = retriever.retrieve([known], k=k, show_progress=False, n_threads=0)
        picked = [
            (query, items["item_id"].iat[d], items["item_title"].iat[d], float(s))
            for d, s in zip(docs[0], scores[0], strict=True)
            if s > 0 and items["item_id"].iat[d] not in judged[query]
        ][:per_query]
        rows += picked
        if len(rows) >= max_rows:
            break
    return pd.DataFrame(rows[:max_rows], columns=["query", "item_id", "item_title", "bm25"])


def student_frame(train_df: pd.DataFrame, mined: pd.DataFrame, soft: np.ndarray, config: Any) -> pd.DataFrame:
    """The student's training frame: gold rows with their target in `relevance`, then the mined rows.

    Gold targets are the labels (0/1), or for config.target 'graded' the batch's `relevance` rescaled to
    [0, 1] as model.train does (losses.graded_targets); mined rows carry the teachers' mean probability
    `soft` (shape (len(mined),), in [0, 1]) as `relevance`, label = soft >= 0.5, `augmented=True` (kept
    out of the validation split, so the epoch is still chosen on gold rows) and repeats/weight 1.
    """
    from tailguard.losses import graded_targets

    gold = train_df.copy()
    if getattr(config, "target", "binary") == "graded":
        rel = pd.to_numeric(gold["relevance"], errors="coerce").to_numpy(dtype=np.float64)
        gold["relevance"] = graded_targets(rel, float(np.nanmin(rel)), float(np.nanmax(rel)))
    else:
        gold["relevance"] = gold["label"].astype(float)
    extra = mined[["query", "item_id", "item_title"]].copy()
    extra["relevance"] = np.clip(np.asarray(soft, dtype=np.float64), 0.0, 1.0)
    extra["label"] = (extra["relevance"] >= 0.5).astype(gold["label"].dtype)
    extra["augmented"] = True
    for column, value in (("repeats", 1), ("weight", 1.0)):
        if column in gold.columns:
            extra[column] = value
    if "augmented" in gold.columns:
        gold["augmented"] = gold["augmented"].fillna(False).astype(bool)
    else:
        gold["augmented"] = False
    return pd.concat([gold, extra], ignore_index=True)


def train_distilled(
    train_df: pd.DataFrame,
    config: Any,
    out_dir: Path,
    teachers: int = 3,
    mined_per_query: int = 4,
    **train_kwargs: Any,
) -> Any:
    """Train `teachers` seeds (recipes.train_ensemble), mine pairs, then the student into out_dir.

    config: a model.TrainConfig; the student trains on soft targets (target 'graded', graded_loss 'bce',
    the pairwise weight kept). Returns the student's model.TrainResult with steps summed over teachers
    and student. Raises DistillError for teachers < 2 or a frame without titles, and what model.train
    raises (e.g. a loss other than bce / weighted_bce with soft targets).
    """
    from tailguard import model as M
    from tailguard.recipes import train_ensemble

    if teachers < 2:
        raise DistillError(f"distillation needs at least 2 teachers (an ensemble), got {teachers}")
    out_dir = Path(out_dir)
    teacher_dir = out_dir.parent / f"{out_dir.name}.teachers"
    try:  # the teachers are only a means: removed whatever happens (their checkpoints stay for a rerun)
        ensemble = train_ensemble(train_df, config, teacher_dir, teachers, **train_kwargs)
        mined = mine_pairs(train_df, mined_per_query)
        soft = M.predict(teacher_dir, mined) if len(mined) else np.zeros(0, dtype=np.float32)
        student = config.model_copy(update={"target": "graded", "graded_loss": "bce"})
        kwargs = dict(train_kwargs)
        if kwargs.get("checkpoint_dir"):
            kwargs["checkpoint_dir"] = Path(kwargs["checkpoint_dir"]) / "student"
        result = M.train(student_frame(train_df, mined, soft, config), student, out_dir, **kwargs)
    finally:
        shutil.rmtree(teacher_dir, ignore_errors=True)
    record = {
        "format": DISTILL_FORMAT,
        "teachers": teachers,
        "teacher_seeds": [config.seed + i for i in range(teachers)],
        "mined_per_query": mined_per_query,
        "mined_rows": len(mined),
        "gold_rows": len(train_df),
        "teacher_mean_probability": round(float(np.mean(soft)), 6) if len(mined) else None,
    }
    (out_dir / DISTILL_FILE).write_text(json.dumps(record, indent=1))
    return result.model_copy(update={"steps": result.steps + ensemble.steps})
