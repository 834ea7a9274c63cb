"""A lexical–neural hybrid: the cross-encoder's score combined with lexical features by logistic regression.

Issue #18: tail queries are lexically harder (more digits, rarer tokens, lower word overlap) and word overlap
alone reached per-query AUC 0.57 on Home Depot against the model's 0.61, so the two carry different signal.

A hybrid model is a folder: the cross-encoder's own files plus `hybrid.json` (feature definitions,
standardisation, coefficients; JSON, never pickle). `model.Scorer` / `model.predict` detect `hybrid.json`
and return the hybrid's probabilities, so `tailguard predict`, evaluation and the gate need nothing new.

BM25 corpus: the titles of the frame being scored, per query (its candidate set). That is what a reranker
sees at serving time (the candidates of one query, not the catalogue), and it keeps a row's score a function
of its query's candidates only: scoring a frame in chunks that keep queries whole gives the same numbers.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

HYBRID_FILE = "hybrid.json"
FORMAT = "tailguard.hybrid/1"
_WORD = re.compile(r"[^\W_]+")
_NUMBER = re.compile(r"\d+(?:[./]\d+)?")
# Units as written in product titles ("3/4 in.", "12-gauge", "5 gal"): a query's unit found in the title.
_UNITS = re.compile(
    r"\b(in|inch|inches|ft|feet|foot|gal|gallon|gallons|lb|lbs|oz|mm|cm|volt|v|watt|w|amp|gauge|ga|sq|cu)\b"
)
FEATURES: dict[str, str] = {
    "ce_logit": "cross-encoder logit, log(p / (1 - p)) with p clipped to [1e-6, 1 - 1e-6]",
    "bm25": "BM25 (bm25s, Lucene variant, k1 1.5, b 0.75) of the query against its candidates' titles",
    "bm25_rel": "bm25 / the query's largest bm25 (0 when every candidate scores 0)",
    "word_overlap": "share of the query's distinct words present in the title (lowercased)",
    "char3_overlap": "share of the query's character 3-grams present in the title (spaces kept)",
    "number_match": "share of the query's numbers present in the title; 0 when the query has none",
    "unit_match": "share of the query's units present in the title; 0 when the query has none",
    "query_words": "log(1 + number of query words)",
    "query_digits": "1 when the query has a digit",
    "title_digits": "1 when the title has a digit",
}


class HybridError(ValueError):
    """A hybrid.json that cannot be used, or a frame the hybrid cannot score."""


class HybridModel(BaseModel):
    """The saved combiner: sigmoid(((x - mean) / scale) . coef + intercept) over FEATURES, in order."""

    model_config = ConfigDict(extra="forbid")

    format: str = Field(FORMAT, description="File format tag; other values are refused.")
    features: list[str] = Field(description="Feature names, the order of mean / scale / coef.")
    definitions: dict[str, str] = Field(
        default_factory=dict, description="What each feature is (for readers)."
    )
    mean: list[float] = Field(description="Per-feature mean of the fitting rows.")
    scale: list[float] = Field(description="Per-feature standard deviation of the fitting rows (0 -> 1).")
    coef: list[float] = Field(description="Logistic-regression coefficients on standardised features.")
    intercept: float = Field(description="Logistic-regression intercept.")
    fit: dict[str, Any] = Field(default_factory=dict, description="How it was fitted: rows, queries, C.")

    def combine(self, df: pd.DataFrame, ce_scores: np.ndarray) -> np.ndarray:
        """Hybrid probabilities, float32 of shape (len(df),), from the frame and cross-encoder scores."""
        x = lexical_features(df, ce_scores)[self.features].to_numpy(dtype=np.float64)
        z = ((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.coef) + self.intercept
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def words(text: str) -> list[str]:
    """Lower-cased letter/digit runs: the tokens of BM25 and the overlap features (also distill's mining)."""
    return _WORD.findall(text.lower())


def _char3(text: str) -> set[str]:
    t = " ".join(words(text))
    return {t[i : i + 3] for i in range(len(t) - 2)}


def _share(needles: set[str], hay: set[str]) -> float:
    return len(needles & hay) / len(needles) if needles else 0.0


def _bm25_per_query(queries: list[str], titles: list[str]) -> np.ndarray:
    """BM25 of each row's query against the titles of its query's rows (the candidate set), via bm25s."""
    import bm25s

    out = np.zeros(len(queries))
    rows_of = pd.Series(np.arange(len(queries))).groupby(pd.Series(queries)).indices
    for query, idx in rows_of.items():
        q_tokens = words(query)
        docs = [words(titles[i]) for i in idx]
        if not q_tokens or not any(docs):
            continue
        retriever = bm25s.BM25(k1=1.5, b=0.75)
        # bm25s refuses an empty document list entry; a title without words becomes one placeholder token
        retriever.index([d or ["\x00"] for d in docs], show_progress=False)
        vocab = set(retriever.vocab_dict)
        known = [t for t in q_tokens if t in vocab]
        if known:
            out[idx] = retriever.get_scores(known)
    return out


def lexical_features(df: pd.DataFrame, ce_scores: np.ndarray) -> pd.DataFrame:
    """The FEATURES of every row, a float64 frame of shape (len(df), len(FEATURES)), index 0..n-1.

    df needs `query` and `item_title` (read as strings, exactly as given); ce_scores are the cross-encoder's
    probabilities aligned with df. Raises HybridError on a length mismatch or non-finite scores.
    """
    missing = [c for c in ("query", "item_title") if c not in df.columns]
    if missing:
        raise HybridError(f"frame to score: missing column(s) {missing}; have {list(df.columns)[:12]}")
    p = np.asarray(ce_scores, dtype=np.float64).reshape(-1)
    if len(p) != len(df):
        raise HybridError(f"cross-encoder scores: {len(p)} values for {len(df)} rows")
    if not np.isfinite(p).all():
        raise HybridError(
            f"cross-encoder scores: non-finite values at rows {np.flatnonzero(~np.isfinite(p))[:5]}"
        )
    queries, titles = df["query"].astype(str).tolist(), df["item_title"].astype(str).tolist()
    p = np.clip(p, 1e-6, 1 - 1e-6)
    bm25 = _bm25_per_query(queries, titles)
    top = pd.Series(bm25).groupby(pd.Series(queries)).transform("max").to_numpy()
    rows = []
    for q, t in zip(queries, titles, strict=True):
        qw, tw = set(words(q)), set(words(t))
        q_lower, t_lower = q.lower(), t.lower()
        rows.append(
            (
                _share(qw, tw),
                _share(_char3(q), _char3(t)),
                _share(set(_NUMBER.findall(q)), set(_NUMBER.findall(t))),
                _share(set(_UNITS.findall(q_lower)), set(_UNITS.findall(t_lower))),
                math.log1p(len(words(q))),
                float(any(c.isdigit() for c in q)),
                float(any(c.isdigit() for c in t)),
            )
        )
    lexical = np.asarray(rows, dtype=np.float64).reshape(len(df), 7)
    names = list(FEATURES)
    with np.errstate(invalid="ignore", divide="ignore"):
        bm25_rel = np.where(top > 0, bm25 / np.where(top > 0, top, 1.0), 0.0)
    data = np.column_stack([np.log(p / (1 - p)), bm25, bm25_rel, lexical])
    return pd.DataFrame(data, columns=names)


def fit_hybrid(df: pd.DataFrame, ce_scores: np.ndarray, c: float = 1.0) -> HybridModel:
    """Fit the combiner on rows the cross-encoder did NOT train on (held-out training queries).

    df: rows with `query`, `item_title`, `label` (0/1, both present); ce_scores aligned with df.
    L2-regularised logistic regression (scikit-learn, lbfgs, C = c) on standardised features.
    """
    from sklearn.linear_model import LogisticRegression

    y = pd.to_numeric(df["label"], errors="coerce").to_numpy()
    if not np.isin(y, (0, 1)).all() or len(np.unique(y)) < 2:
        raise HybridError("hybrid fit: column 'label' must be 0/1 with both classes present")
    x = lexical_features(df, ce_scores)
    mean, scale = x.mean().to_numpy(), x.std(ddof=0).to_numpy()
    scale = np.where(scale > 0, scale, 1.0)  # a constant feature (e.g. no digits anywhere) gets weight 0
    lr = LogisticRegression(C=c, max_iter=2000).fit((x.to_numpy() - mean) / scale, y.astype(int))
    return HybridModel(
        features=list(x.columns),
        definitions=dict(FEATURES),
        mean=mean.tolist(),
        scale=scale.tolist(),
        coef=lr.coef_[0].tolist(),
        intercept=float(lr.intercept_[0]),
        fit={"rows": len(df), "queries": int(df["query"].nunique()), "C": c, "solver": "lbfgs"},
    )


def save_hybrid(ce_dir: Path, hybrid: HybridModel, out_dir: Path) -> Path:
    """A promotable model folder: a copy of the cross-encoder folder `ce_dir` plus hybrid.json."""
    ce_dir, out_dir = Path(ce_dir), Path(out_dir)
    if out_dir.resolve() != ce_dir.resolve():
        shutil.copytree(ce_dir, out_dir, dirs_exist_ok=True)
    (out_dir / HYBRID_FILE).write_text(json.dumps(hybrid.model_dump(), indent=1))
    return out_dir


def load_hybrid(model_dir: Path) -> HybridModel | None:
    """The folder's hybrid.json, or None when it has none. HybridError names the file and the problem."""
    path = Path(model_dir) / HYBRID_FILE
    if not path.exists():
        return None
    try:
        model = HybridModel.model_validate_json(path.read_text())
    except (ValidationError, UnicodeDecodeError) as err:
        raise HybridError(f"{path}: not a valid hybrid model: {str(err)[:300]}") from None
    n = len(model.features)
    unknown = [f for f in model.features if f not in FEATURES]
    bad_scale = [v for v in model.scale if not (math.isfinite(v) and v > 0)]
    numbers = [*model.mean, *model.coef, model.intercept]
    if model.format != FORMAT:
        raise HybridError(f"{path}: format {model.format!r}, expected {FORMAT!r}")
    if unknown or {len(model.mean), len(model.scale), len(model.coef)} != {n} or bad_scale:
        raise HybridError(
            f"{path}: features {unknown or model.features[:5]} / lengths mean {len(model.mean)}, scale "
            f"{len(model.scale)}, coef {len(model.coef)} for {n} features / bad scales {bad_scale[:3]}"
        )
    if not all(math.isfinite(v) for v in numbers):
        raise HybridError(f"{path}: non-finite mean, coefficient or intercept")
    return model


def train_hybrid(
    train_df: pd.DataFrame, config: Any, out_dir: Path, holdout_fraction: float = 0.2, c: float = 1.0
) -> tuple[HybridModel, Path]:
    """The recipe: train the cross-encoder on most training queries, fit the combiner on the rest.

    `holdout_fraction` of the training QUERIES (seeded by config.seed) are held out of fine-tuning and
    scored by the trained cross-encoder; the combiner is fitted on those rows, so its weight on the
    cross-encoder reflects unseen queries. Returns (hybrid, model folder with hybrid.json).
    """
    from tailguard import model as M

    ce_train, held = M.split_valid_queries(train_df, holdout_fraction, config.seed)
    if not len(held):
        raise HybridError(
            f"hybrid: holding out {holdout_fraction:.0%} of {train_df['query'].nunique()} training queries "
            "leaves no held-out rows with both classes to fit the combiner on"
        )
    out_dir = Path(out_dir)
    M.train(ce_train, config, out_dir)
    hybrid = fit_hybrid(held, M.Scorer(out_dir, plain=True)(held), c=c)
    return hybrid, save_hybrid(out_dir, hybrid, out_dir)
