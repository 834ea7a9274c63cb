"""Evidently reports (classification per popularity bucket, drift, class balance) and the summary page."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The summary page is built in tailguard.summary (one place for the review material's wording and layout).
from tailguard.metrics import Evaluation
from tailguard.summary import SUMMARY_METRICS as SUMMARY_METRICS
from tailguard.summary import summary_html

# Columns never fed to drift: identifiers and bookkeeping (a 43k-unique item_id column alone took 74 s).
ID_COLUMNS = ("item_id", "user_id", "row_id", "source_row_id", "augmented", "weight", "ts")
TEXT_COLUMNS = ("query", "item_title")
CATEGORICAL_COLUMNS = ("label", "category")
NUMERICAL_COLUMNS = ("price", "relevance", "position")


def _evidently():
    """Import Evidently lazily (it costs seconds) and quiet its sklearn/scipy warnings."""
    warnings.filterwarnings("ignore", module="sklearn")
    warnings.filterwarnings("ignore", module="scipy")
    import evidently
    from evidently import presets

    return evidently, presets


def _save_html(snapshot: Any, out: Path) -> Path:
    """Save an Evidently page with its embedded data escaped: 0.7.23 writes cell text raw into <script>."""
    from tailguard.safe_text import neutralise_evidently_html

    Path(out).write_text(neutralise_evidently_html(snapshot.get_html_str(as_iframe=False)), encoding="utf-8")
    return Path(out)


def _classification_page(
    labels: np.ndarray, candidate: np.ndarray, production: np.ndarray | None, out: Path, threshold: float
) -> Path:
    """One Evidently classification report: the candidate as current data, production as reference."""
    ev, presets = _evidently()
    definition = ev.DataDefinition(
        numerical_columns=["prediction"],
        categorical_columns=["target"],
        classification=[
            ev.BinaryClassification(target="target", prediction_probas="prediction", pos_label=1)
        ],
    )
    cand = ev.Dataset.from_pandas(
        pd.DataFrame({"target": labels, "prediction": candidate}), data_definition=definition
    )
    ref = None
    if production is not None:
        ref = ev.Dataset.from_pandas(
            pd.DataFrame({"target": labels, "prediction": production}), data_definition=definition
        )
    snapshot = ev.Report([presets.ClassificationPreset(probas_threshold=threshold)]).run(cand, ref)
    _save_html(snapshot, out)
    return out


def _probabilities(scores: np.ndarray) -> bool:
    return bool(np.all((scores >= 0) & (scores <= 1)))


def evaluation_reports(
    eval_df: pd.DataFrame,
    scores: dict[str, np.ndarray],
    evaluation: Evaluation | dict,
    decision: Any,
    out_dir: Path,
    *,
    train_df: pd.DataFrame | None = None,
    slices: pd.DataFrame | None = None,
    title: str = "tailguard evaluation",
) -> dict[str, Path]:
    """Evidently classification pages (overall + one per judged popularity bucket) and summary.html.

    Per-bucket pages need the row's bucket: pass `slices` (from metrics.assign_slices), or `train_df`,
    or an eval_df with a `popularity` column; otherwise only the overall page is rendered.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pages: dict[str, Path] = {}
    labels = eval_df["label"].to_numpy().astype(int)
    cand = np.asarray(scores["candidate"], dtype=float)
    prod = np.asarray(scores["production"], dtype=float) if "production" in scores else None
    evaluation = Evaluation.coerce(evaluation)
    threshold = float(evaluation.config.threshold)
    skipped: dict[str, str] = {}
    if not (_probabilities(cand) and (prod is None or _probabilities(prod))):
        skipped["classification"] = "scores are not probabilities in [0, 1]; Evidently pages not rendered"
    elif len(np.unique(labels)) < 2:
        # Evidently 0.7.23 raises KeyError '1' on a one-class target (ROC AUC per class): no page, a reason.
        skipped["classification_overall"] = _one_class(labels)
    else:
        pages["classification_overall"] = _classification_page(
            labels, cand, prod, out_dir / "classification_overall.html", threshold
        )
        bucket = _popularity(eval_df, evaluation, train_df, slices)
        if bucket is None:
            skipped["popularity"] = "no popularity buckets (pass slices= or train_df=)"
        else:
            for name in ("head", "torso", "tail", "cold"):
                info = evaluation.slice_info(f"popularity:{name}")
                mask = bucket == name
                if len(np.unique(labels[mask])) < 2:
                    skipped[f"popularity:{name}"] = _one_class(labels[mask])
                    continue
                if info is None or info.too_small:
                    skipped[f"popularity:{name}"] = (info and info.reason) or "too small to judge"
                    continue
                pages[f"classification_popularity_{name}"] = _classification_page(
                    labels[mask],
                    cand[mask],
                    None if prod is None else prod[mask],
                    out_dir / f"classification_popularity_{name}.html",
                    threshold,
                )
    summary = out_dir / "summary.html"
    links = {k: p.name for k, p in pages.items()}
    links |= {name: f"{name}.html" for name in SIBLING_PAGES if (out_dir / f"{name}.html").is_file()}
    summary.write_text(
        summary_html(
            evaluation,
            decision,
            links,
            skipped,
            examples=_examples(
                eval_df, cand, prod, bucket=_popularity(eval_df, evaluation, train_df, slices)
            ),
            title=title,
        ),
        encoding="utf-8",
    )
    pages["summary"] = summary
    return pages


def _one_class(labels: np.ndarray) -> str:
    """Why a classification page is not rendered for these labels (only one class, or no rows)."""
    if len(labels) == 0:
        return "undefined (no rows)"
    return f"undefined (one class: all {len(labels)} rows have label {int(labels[0])})"


def _popularity(
    eval_df: pd.DataFrame, evaluation: Evaluation, train_df: pd.DataFrame | None, slices: pd.DataFrame | None
) -> np.ndarray | None:
    if slices is not None:
        return slices["popularity"].astype(str).to_numpy()
    if "popularity" in eval_df.columns:
        return eval_df["popularity"].astype(str).to_numpy()
    if train_df is not None:
        from tailguard.metrics import assign_slices

        return assign_slices(eval_df, train_df, evaluation.config)["popularity"].astype(str).to_numpy()
    return None


def _examples(
    eval_df: pd.DataFrame, cand: np.ndarray, prod: np.ndarray | None, bucket: np.ndarray | None, n: int = 10
) -> pd.DataFrame | None:
    """The tail/cold rows where the two models disagree most (what a reviewer should look at)."""
    if prod is None or bucket is None:
        return None
    mask = np.isin(bucket, ("tail", "cold"))
    if not mask.any():
        return None
    cols = [c for c in ("query", "item_id", "item_title", "label") if c in eval_df.columns]
    df = eval_df.loc[mask, cols].copy()
    df["bucket"] = bucket[mask]
    df["candidate"], df["production"] = cand[mask], prod[mask]
    df["difference"] = df["candidate"] - df["production"]
    return df.reindex(df["difference"].abs().sort_values(ascending=False).index).head(n)


# ----------------------------------------------------------------------------------------------
# summary page: built in tailguard.summary (one place for the review material's wording and layout)

# Pages of the same version folder that the summary links when they were rendered before it (the retrain
# writes drift.html and class_balance.html first): the summary must reach every page by a link.
SIBLING_PAGES = ("drift", "class_balance")


# ----------------------------------------------------------------------------------------------
# drift and class balance


def _drift_definition(df: pd.DataFrame):
    ev, _ = _evidently()
    text = [c for c in TEXT_COLUMNS if c in df.columns]
    cat = [c for c in CATEGORICAL_COLUMNS if c in df.columns]
    num = [c for c in NUMERICAL_COLUMNS if c in df.columns and pd.api.types.is_numeric_dtype(df[c])]
    return ev.DataDefinition(
        text_columns=text, categorical_columns=cat, numerical_columns=num
    ), text + cat + num


def _drifted(method: str, value: float, threshold: float) -> bool:
    """Evidently's rule: p-value tests drift below the threshold, distances/scores above it."""
    return value < threshold if "p_value" in method else value >= threshold


def _run_drift(ev, presets, reference, current, columns, definition):
    # The default text method for small batches (percentile, permutations) took ~20 s on 400 rows;
    # the absolute domain-classifier score took ~0.8 s.
    preset = presets.DataDriftPreset(columns=columns, text_method="abs_text_content_drift")
    return ev.Report([preset]).run(
        ev.Dataset.from_pandas(current[columns].reset_index(drop=True), data_definition=definition),
        ev.Dataset.from_pandas(reference[columns].reset_index(drop=True), data_definition=definition),
    )


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, out_html: Path) -> dict:
    """Evidently data drift with an explicit DataDefinition; returns a JSON-able summary."""
    ev, presets = _evidently()
    definition, columns = _drift_definition(reference)
    columns = [c for c in columns if c in current.columns]
    if not columns:
        raise ValueError(f"drift: no comparable columns; reference has {list(reference.columns)[:12]}")
    failed_text: dict[str, str] = {}
    try:
        snapshot = _run_drift(ev, presets, reference, current, columns, definition)
    except ValueError as exc:
        # Text drift fits a TF-IDF classifier, which refuses degenerate text (e.g. one constant title);
        # judge the other columns and say which text columns could not be judged.
        text = [c for c in TEXT_COLUMNS if c in columns]
        if not text:
            raise
        failed_text = {c: f"text drift failed: {exc}" for c in text}
        columns = [c for c in columns if c not in text]
        definition = ev.DataDefinition(
            categorical_columns=[c for c in CATEGORICAL_COLUMNS if c in columns],
            numerical_columns=[c for c in NUMERICAL_COLUMNS if c in columns],
        )
        snapshot = _run_drift(ev, presets, reference, current, columns, definition)
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    _save_html(snapshot, out_html)
    per_column: dict[str, dict] = {}
    share = None
    for metric in snapshot.dict().get("metrics", []):
        cfg = metric.get("config", {})
        if cfg.get("type", "").endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif cfg.get("type", "").endswith("ValueDrift"):
            value = float(metric["value"])
            per_column[cfg["column"]] = {
                "method": cfg.get("method"),
                "threshold": cfg.get("threshold"),
                "value": value,
                "drifted": _drifted(str(cfg.get("method")), value, float(cfg.get("threshold"))),
            }
    for col, why in failed_text.items():
        per_column[col] = {
            "method": "abs_text_content_drift",
            "threshold": None,
            "value": None,
            "drifted": None,
            "undefined": why,
        }
    drifted = sorted(c for c, v in per_column.items() if v["drifted"])
    if share is None:
        share = len(drifted) / max(len(per_column), 1)
    return {
        "share_drifted_columns": share,
        "drifted_columns": drifted,
        "columns": per_column,
        "html": str(out_html),
    }


def class_balance_report(before: pd.DataFrame, after: pd.DataFrame, out_html: Path) -> Path:
    """Evidently value counts of the label (and popularity bucket if present): before vs after rebalancing."""
    ev, _ = _evidently()
    from evidently.metrics import RowCount, UniqueValueCount

    columns = [
        c for c in ("label", "popularity", "popularity_bucket") if c in before.columns and c in after.columns
    ]
    if "label" not in columns:
        raise ValueError(f"class balance: 'label' missing; before has {list(before.columns)[:12]}")
    definition = ev.DataDefinition(categorical_columns=columns)

    def frame(df: pd.DataFrame) -> pd.DataFrame:
        return df[columns].astype(str).reset_index(drop=True)

    snapshot = ev.Report([RowCount(), *[UniqueValueCount(column=c) for c in columns]]).run(
        ev.Dataset.from_pandas(frame(after), data_definition=definition),
        ev.Dataset.from_pandas(frame(before), data_definition=definition),
    )
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    _save_html(snapshot, out_html)
    return out_html
