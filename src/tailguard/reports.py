"""Evidently reports (classification per popularity bucket, drift, class balance) and the summary page."""

from __future__ import annotations

import html
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Columns never fed to drift: identifiers and bookkeeping (a 43k-unique item_id column alone took 74 s).
ID_COLUMNS = ("item_id", "user_id", "row_id", "source_row_id", "augmented", "weight", "ts")
TEXT_COLUMNS = ("query", "item_title")
CATEGORICAL_COLUMNS = ("label", "category")
NUMERICAL_COLUMNS = ("price", "relevance", "position")
SUMMARY_METRICS = (
    "roc_auc",
    "roc_auc_per_query",
    "pr_auc",
    "ndcg_at_k",
    "recall_at_k",
    "mrr",
    "log_loss",
    "f1",
)


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
    evaluation: dict,
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
    threshold = float(evaluation.get("config", {}).get("threshold", 0.5))
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
                info = evaluation.get("slices", {}).get(f"popularity:{name}", {})
                mask = bucket == name
                if len(np.unique(labels[mask])) < 2:
                    skipped[f"popularity:{name}"] = _one_class(labels[mask])
                    continue
                if info.get("too_small", True):
                    skipped[f"popularity:{name}"] = info.get("reason") or "too small to judge"
                    continue
                pages[f"classification_popularity_{name}"] = _classification_page(
                    labels[mask],
                    cand[mask],
                    None if prod is None else prod[mask],
                    out_dir / f"classification_popularity_{name}.html",
                    threshold,
                )
    summary = out_dir / "summary.html"
    summary.write_text(
        summary_html(
            evaluation,
            decision,
            {k: p.name for k, p in pages.items()},
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
    eval_df: pd.DataFrame, evaluation: dict, train_df: pd.DataFrame | None, slices: pd.DataFrame | None
) -> np.ndarray | None:
    if slices is not None:
        return slices["popularity"].astype(str).to_numpy()
    if "popularity" in eval_df.columns:
        return eval_df["popularity"].astype(str).to_numpy()
    if train_df is not None:
        from tailguard.metrics import EvalConfig, assign_slices

        cfg = EvalConfig(**evaluation.get("config", {}))
        return assign_slices(eval_df, train_df, cfg)["popularity"].astype(str).to_numpy()
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
# summary page (self-contained, offline)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1b1f24;
max-width:1200px}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;
text-align:right}th{background:#f6f8fa}td.l,th.l{text-align:left}.pass{background:#dafbe1}.fail{background:#ffebe9}
.skipped{background:#f6f8fa;color:#57606a}.small{color:#8c959f}.banner{padding:.8rem 1rem;border-radius:6px;
font-weight:600}.banner.pass{border:1px solid #2da44e}.banner.fail{border:1px solid #cf222e}.up{color:#1a7f37}
.down{color:#cf222e}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(entry: Any) -> float | None:
    v = entry.get("value") if isinstance(entry, dict) else entry
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else float(v)


def _cell(entry: Any, digits: int = 3) -> str:
    v = _num(entry)
    if v is None:
        why = entry.get("undefined", "undefined") if isinstance(entry, dict) else "undefined"
        return f'<td class="small" title="{_e(why)}">—</td>'
    return f"<td>{v:.{digits}f}</td>"


def _diff_cell(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        why = (entry or {}).get("undefined", "no comparison")
        return f'<td class="small" title="{_e(why)}">—</td>'
    v, lo, hi = entry["value"], entry.get("ci_low"), entry.get("ci_high")
    cls = "up" if lo is not None and lo > 0 else ("down" if hi is not None and hi < 0 else "")
    ci = f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else ""
    return f'<td class="{cls}">{v:+.3f}<span class="small">{ci}</span></td>'


def _chart(evaluation: dict, metric: str = "roc_auc") -> str:
    """Inline SVG: per popularity bucket, candidate and production bars of one metric."""
    models = evaluation.get("models", [])
    buckets = ("head", "torso", "tail", "cold")
    colours = {"candidate": "#0969da", "production": "#8c959f"}
    width, height, pad, group = 560, 240, 40, 120
    bars = []
    for i, b in enumerate(buckets):
        x0 = pad + i * group + 10
        for j, m in enumerate(models):
            v = _num(evaluation["metrics"][m].get(f"popularity:{b}", {}).get(metric))
            x = x0 + j * 40
            if v is None:
                bars.append(
                    f'<text x="{x + 4}" y="{height - pad - 4}" font-size="10" fill="#8c959f">n/a</text>'
                )
                continue
            h = max(0.0, min(1.0, v)) * (height - 2 * pad)
            bars.append(
                f'<rect x="{x}" y="{height - pad - h:.1f}" width="34" height="{h:.1f}" fill="{colours[m]}">'
                f"<title>{_e(m)} {_e(b)} {metric} {v:.3f}</title></rect>"
                f'<text x="{x + 2}" y="{height - pad - h - 3:.1f}" font-size="10">{v:.2f}</text>'
            )
        too_small = evaluation.get("slices", {}).get(f"popularity:{b}", {}).get("too_small")
        label = f"{b}{' (too small)' if too_small else ''}"
        bars.append(f'<text x="{x0}" y="{height - pad + 16}" font-size="11">{_e(label)}</text>')
    legend = "".join(
        f'<rect x="{pad + 300 + k * 110}" y="8" width="10" height="10" fill="{colours[m]}"/>'
        f'<text x="{pad + 314 + k * 110}" y="17" font-size="11">{_e(m)}</text>'
        for k, m in enumerate(models)
    )
    axis = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - 10}" y2="{height - pad}" stroke="#57606a"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#57606a"/>'
        f'<text x="4" y="{pad + 4}" font-size="10">1.0</text>'
        f'<text x="4" y="{height - pad}" font-size="10">0.0</text>'
    )
    return (
        f'<svg role="img" aria-label="{_e(metric)} per popularity bucket" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<text x="{pad}" y="17" font-size="12" font-weight="600">{_e(metric)} per popularity bucket</text>'
        f"{legend}{axis}{''.join(bars)}</svg>"
    )


def summary_html(
    evaluation: dict,
    decision: Any,
    links: dict[str, str],
    skipped: dict[str, str] | None = None,
    examples: pd.DataFrame | None = None,
    title: str = "tailguard evaluation",
) -> str:
    """tailguard's own page: decision, checks, slice table with intervals, chart, links (offline)."""
    from tailguard.safe_text import escape_script_json

    dec = decision.to_dict() if hasattr(decision, "to_dict") else (decision or {})
    models = evaluation.get("models", [])
    comparison = evaluation.get("comparison", {}).get("slices", {})
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"
    ]
    if dec:
        ok = bool(dec.get("promote"))
        parts.append(
            f'<div class="banner {"pass" if ok else "fail"}">Gate: {"PROMOTE" if ok else "DO NOT PROMOTE"}'
            f"</div><ul>{''.join(f'<li>{_e(r)}</li>' for r in dec.get('reasons', []))}</ul>"
        )
    d = evaluation.get("data", {})
    parts.append(
        f"<p>{_e(d.get('rows'))} rows, {_e(d.get('queries'))} queries, {_e(d.get('positives'))} positives, "
        f"{_e(d.get('items'))} items; k = {_e(evaluation.get('config', {}).get('k'))}; models: "
        f"{_e(', '.join(models))}.</p>"
    )

    parts.append(
        "<h2>Reports</h2><p class='small'>Evidently pages: <b>current</b> = candidate, <b>reference</b> = "
        "production, scored on the same rows.</p><ul>"
    )
    for key, href in links.items():
        parts.append(f'<li><a href="{_e(href)}">{_e(key.replace("_", " "))}</a></li>')
    for key, why in (skipped or {}).items():
        parts.append(f'<li class="small">{_e(key)}: not rendered ({_e(why)})</li>')
    parts.append("</ul>")

    parts.append("<h2>Per popularity bucket</h2>" + _chart(evaluation))

    parts.append(
        "<h2>Slices</h2><table><tr><th class='l'>slice</th><th>rows</th><th>queries</th><th>positives</th>"
    )
    for m in SUMMARY_METRICS:
        parts.append("".join(f"<th>{_e(m)}<br><span class='small'>{_e(x)}</span></th>" for x in models))
        if len(models) == 2:
            parts.append(f"<th>{_e(m)}<br><span class='small'>Δ [95% CI]</span></th>")
    parts.append("</tr>")
    for name, info in evaluation.get("slices", {}).items():
        small = info.get("too_small")
        reason = f' title="{_e(info.get("reason"))}"' if small else ""
        parts.append(
            f"<tr{' class=small' if small else ''}><td class='l'{reason}>{_e(name)}"
            f"{' (too small)' if small else ''}</td><td>{info.get('rows')}</td><td>{info.get('queries')}</td>"
            f"<td>{info.get('positives')}</td>"
        )
        for metric in SUMMARY_METRICS:
            parts.extend(_cell(evaluation["metrics"][m].get(name, {}).get(metric)) for m in models)
            if len(models) == 2:
                parts.append(_diff_cell(comparison.get(name, {}).get(metric)))
        parts.append("</tr>")
    parts.append("</table>")

    if dec.get("checks"):
        parts.append(
            "<h2>Gate checks</h2><table><tr><th class='l'>check</th><th>verdict</th><th>observed</th>"
            "<th>threshold</th><th class='l'>reason</th></tr>"
        )
        for c in dec["checks"]:
            obs = "—" if c.get("observed") is None else f"{c['observed']:.4f}"
            thr = "—" if c.get("threshold") is None else f"{c['threshold']:.4f}"
            parts.append(
                f"<tr class='{_e(c['verdict'])}'><td class='l'>{_e(c['name'])}</td>"
                f"<td>{_e(c['verdict'])}</td>"
                f"<td>{obs}</td><td>{thr}</td><td class='l'>{_e(c['reason'])}</td></tr>"
            )
        parts.append("</table>")

    fairness = evaluation.get("fairness", {})
    bias = evaluation.get("popularity_bias", {})
    if fairness:
        parts.append(
            "<h2>Fairness and popularity bias</h2><table><tr><th class='l'>measure</th>"
            + "".join(f"<th>{_e(m)}</th>" for m in models)
            + "</tr>"
        )
        rows = [
            ("recall gap (max − min over buckets)", lambda m: fairness[m]["recall_gap"]),
            ("tail/head exposure ratio", lambda m: fairness[m]["exposure"]["tail_head_ratio"]),
        ]
        rows += [
            (f"exposure share: {b}", lambda m, b=b: fairness[m]["exposure"]["share"][b])
            for b in ("head", "torso", "tail", "cold")
        ]
        rows += [(k, lambda m, k=k: bias[m][k]) for k in ("arp", "aplt", "gini", "item_coverage")]
        for label, get in rows:
            parts.append(
                f"<tr><td class='l'>{_e(label)}</td>" + "".join(_cell(get(m)) for m in models) + "</tr>"
            )
        parts.append("</table>")

    if examples is not None and len(examples):
        parts.append(
            "<h2>Tail and cold rows where the models disagree most</h2><table><tr>"
            + "".join(f"<th class='l'>{_e(c)}</th>" for c in examples.columns)
            + "</tr>"
        )
        for _, row in examples.iterrows():
            cells = "".join(
                f"<td>{v:.3f}</td>" if isinstance(v, float) else f"<td class='l'>{_e(v)}</td>"
                for v in row.tolist()
            )
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    parts.append(
        "<script type='application/json' id='metrics'>"
        # Script content is not entity-decoded: \u escapes keep the JSON parseable and the element closed.
        + escape_script_json(json.dumps({"decision": dec.get("promote")}))
        + "</script>"
    )
    parts.append("</body></html>")
    return "".join(parts)


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
