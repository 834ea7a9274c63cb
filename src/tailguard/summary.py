"""Human-readable summaries of a run: console text, markdown for Prefect artifacts, and summary.html.

Pure formatting: every function takes the dicts a run stores (metrics.json, decision.json) and returns
text. One verdict vocabulary everywhere (`verdict`): PROMOTE, DO NOT PROMOTE, NEEDS REVIEW.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tailguard.gate import Decision
from tailguard.metrics import Evaluation, Interval, MetricEntry
from tailguard.metrics import finite_value as _value
from tailguard.registry import DecisionRecord
from tailguard.safe_text import escape_script_json, html_text, markdown_code, markdown_text

if TYPE_CHECKING:
    import pandas as pd

# The slices shown in the console and the review table, in this order (metrics.json holds them all).
SHOWN_DIMENSIONS = ("overall", "popularity", "query_frequency", "query_terms")
SHOWN_METRICS = ("roc_auc", "roc_auc_per_query")


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def slice_rows(evaluation: Evaluation | dict, metrics: tuple[str, ...] = SHOWN_METRICS) -> list[dict]:
    """One row per (slice, metric): size, candidate, production, difference and its 95% interval."""
    ev = Evaluation.coerce(evaluation)
    rows = []
    for name in ev.slice_names():
        info = ev.slice_info(name)
        if (info.dimension or name) not in SHOWN_DIMENSIONS:
            continue
        for metric in metrics:
            cand = ev.entry("candidate", name, metric) or MetricEntry()
            diff = ev.diff(name, metric) or Interval()
            rows.append(
                {
                    "slice": name,
                    "metric": metric,
                    "rows": info.rows,
                    "positives": info.positives,
                    "judged": not info.too_small,
                    "note": info.reason or cand.undefined or "",
                    "candidate": cand.value,
                    "production": ev.value("production", name, metric),
                    "diff": diff.value,
                    "ci_low": diff.ci_low,
                    "ci_high": diff.ci_high,
                }
            )
    return rows


# What `tailguard models` shows per version (kept in the manifest, so listing needs no metrics.json reads).
HEADLINE = (
    ("overall", "roc_auc"),
    ("overall", "roc_auc_per_query"),
    ("query_frequency:tail", "roc_auc_per_query"),
    ("popularity:cold", "roc_auc"),
)


def headline_metrics(evaluation: Evaluation | dict) -> dict:
    """{"slice/metric": {"candidate": v, "production": v or None}} for the HEADLINE slices present."""
    ev = Evaluation.coerce(evaluation)
    out = {}
    for slice_name, metric in HEADLINE:
        cand = ev.value("candidate", slice_name, metric)
        prod = ev.value("production", slice_name, metric)
        if cand is not None or prod is not None:
            out[f"{slice_name}/{metric}"] = {"candidate": cand, "production": prod}
    return out


def slice_table(rows: list[dict]) -> str:
    """Plain-text table of slice rows for the console."""
    header = f"{'slice':<26}{'metric':<19}{'rows':>6}{'pos':>6}{'cand':>8}{'prod':>8}{'diff':>8}  95% CI"
    lines = [header, "-" * len(header)]
    for r in rows:
        ci = "" if r["ci_low"] is None else f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        note = "" if r["judged"] else f"  (not judged: {r['note']})"
        lines.append(
            f"{r['slice']:<26}{r['metric']:<19}{r['rows']:>6}{r['positives']:>6}"
            f"{_fmt(r['candidate']):>8}{_fmt(r['production']):>8}{_fmt(r['diff'], True):>8}  {ci}{note}"
        )
    return "\n".join(lines)


def stated_checks(decision: Any, evaluation: Evaluation | dict) -> list[dict]:
    """Every gate check, failing first, as {name, verdict, measured, rule} in the review's words.

    decision: a gate.Decision or its decision.json dict."""
    dec = decision.to_dict() if hasattr(decision, "to_dict") else decision
    policy = (dec.get("policy") or {}).get("values") or {}
    failing, skipped, passing = _ordered_checks(dec)
    evaluation = Evaluation.coerce(evaluation)
    rows = []
    for c in [*failing, *skipped, *passing]:
        measured, rule = check_statement(c, evaluation, policy)
        rows.append({"name": c.get("name"), "verdict": c.get("verdict"), "measured": measured, "rule": rule})
    return rows


def checks_text(checks: list[dict]) -> str:
    """Console lines of `stated_checks` rows: result, check, what was measured, the rule applied."""
    lines = [
        f"  [{str(c.get('verdict', '')).upper():<7}] {c.get('name')}: {c.get('measured')} — {c.get('rule')}"
        for c in checks
    ]
    return "\n".join(lines) or "  (no checks)"


def outcome_text(outcome: dict) -> str:
    """What a retrain did, for the console: decision, reasons, metrics, and the paths to open."""
    decision = outcome.get("decision", {})
    result = "PROMOTED" if outcome.get("promoted") else "NOT PROMOTED"
    paths = outcome.get("paths", {})
    parts = [
        f"candidate {outcome.get('version')}: {result} ({outcome.get('why')})",
        "gate: " + ": ".join(verdict(decision)),
        checks_text(outcome.get("checks", [])),
        "",
        slice_table(outcome.get("slices", [])),
        "",
        f"production is now: {outcome.get('production_version')}",
        f"model version:     {paths.get('version')}",
        f"production pointer: {paths.get('production_pointer')}",
        "reports:",
        *[f"  {p}" for p in paths.get("reports", [])],
        "stage timings (s): " + ", ".join(f"{k} {v}" for k, v in outcome.get("timings_s", {}).items()),
    ]
    return "\n".join(parts)


def _md_table(rows: list[dict], columns: list[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(_md_cell(r.get(c)) for c in columns) + " |\n" for r in rows)
    return head + body


def _md_cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return markdown_text(value)  # cell text is shopper/seller text: no links, images, rows or HTML


def cutoff_rows(evaluation: Evaluation | dict) -> list[dict]:
    """One row per (dimension, bucket) of metrics.json's slice cut-offs: training counts, keys, row share."""
    ev = Evaluation.coerce(evaluation)
    rows = []
    for dim in ev.slice_definitions.cutoffs:
        buckets = ev.cutoffs(dim)
        for bucket, c in buckets.items():
            if not isinstance(c, dict):  # the "rule" entry
                continue
            low, high = c.get("min_train_count"), c.get("max_train_count", "")
            rows.append(
                {
                    "dimension": dim,
                    "bucket": bucket,
                    "train counts": f"{low}-{high}" if high != "" else f">= {low}",
                    "keys": c.get("keys"),
                    "train share": c.get("train_share"),
                    "rule": buckets.get("rule", "shares"),
                }
            )
    return rows


def review_markdown(evaluation: Evaluation | dict, decision: Any, version: str, store_uri: str) -> str:
    """The reviewer's artifact: verdict first, then the slice table, failing checks, the rest last.

    decision: a gate.Decision or its decision.json dict. Each check is stated in words
    (`check_statement`): point estimate, 95% interval, and the rule.
    """
    evaluation = Evaluation.coerce(evaluation)
    dec = decision.to_dict() if hasattr(decision, "to_dict") else decision
    word, why = verdict(dec)
    failing, skipped, passing = _ordered_checks(dec)
    policy = (dec.get("policy") or {}).get("values") or {}

    def checks_table(checks: list[dict]) -> str:
        rows = []
        for c in checks:
            measured, rule = check_statement(c, evaluation, policy)
            rows.append(
                {"check": c.get("name"), "result": c.get("verdict"), "measured": measured, "rule": rule}
            )
        return _md_table(rows, ["check", "result", "measured", "rule"])

    columns = ["slice", "metric", "rows", "positives", "candidate", "production", "diff", "ci_low", "ci_high"]
    parts = [
        f"# {_VERDICT_DOT[word]} {word}: candidate {markdown_code(version)}\n\n",
        f"**{word}** — {markdown_text(why)}\n\n",
        "Open `summary.html` from the report links below (or `tailguard reports serve`).\n",
        "\n## Slices (candidate − production, paired bootstrap 95% CI over queries)\n\n",
        _md_table(slice_rows(evaluation), [*columns, "note"]),
        f"\n## Failing checks ({len(failing)})\n\n",
        checks_table(failing) if failing else "No check failed.\n",
    ]
    if skipped:
        parts += [f"\n## Not judged ({len(skipped)})\n\n", checks_table(skipped)]
    if passing:
        parts += [f"\n## Passing checks ({len(passing)})\n\n", checks_table(passing)]
    parts += [
        "\n## Bucket cut-offs (training counts; docs/METRICS.md)\n\n",
        _md_table(
            cutoff_rows(evaluation), ["dimension", "bucket", "train counts", "keys", "train share", "rule"]
        ),
        f"\nStore: {markdown_code(store_uri)}\n",
    ]
    return "".join(parts)


def validation_text(result: dict, quarantine_uri: str) -> str:
    """Why a batch was refused: one line per failed rule, then where it was quarantined."""
    lines = [f"batch {result.get('batch_id', '?')} refused; quarantined at {quarantine_uri}"]
    if result.get("could_not_run"):
        lines.append("validation could not run for:")
        lines += [f"  - {item}" for item in result["could_not_run"]]
    for f in result.get("failures", []):
        if f.get("severity", "error") != "error":
            continue
        examples = ", ".join(repr(e) for e in (f.get("examples") or [])[:5])
        lines.append(
            f"  - {f.get('file')}: column '{f.get('column')}' broke rule {f.get('rule')}: "
            f"{f.get('observed')}" + (f" (e.g. {examples})" if examples else "")
        )
    return "\n".join(lines)


def validation_markdown(result: dict, quarantine_uri: str) -> str:
    """The refused batch's artifact."""
    rows = [
        {k: f.get(k) for k in ("file", "column", "rule", "observed", "severity")}
        | {"examples": ", ".join(map(str, (f.get("examples") or [])[:5]))}
        for f in result.get("failures", [])
    ]
    could = "".join(
        f"- validation could not run: {markdown_text(x)}\n" for x in result.get("could_not_run", [])
    )
    return (
        f"# Batch {markdown_text(result.get('batch_id', '?'))} refused\n\n"
        f"Quarantined at {markdown_code(quarantine_uri)}; "
        "production was not touched.\n\n"
        + could
        + "\n"
        + _md_table(rows, ["file", "column", "rule", "observed", "severity", "examples"])
    )


def outcome_markdown(outcome: dict) -> str:
    """The run's outcome artifact."""
    paths = outcome.get("paths", {})
    return (
        f"# Retrain outcome\n\nCandidate {markdown_code(outcome.get('version'))}: "
        f"**{'promoted' if outcome.get('promoted') else 'not promoted'}** — "
        f"{markdown_text(outcome.get('why'))}\n\n"
        f"- production: {markdown_code(outcome.get('production_version'))}\n"
        f"- version folder: {markdown_code(paths.get('version'))}\n"
        f"- pointer: {markdown_code(paths.get('production_pointer'))}\n"
        + "".join(f"- report: {markdown_code(p)}\n" for p in paths.get("reports", []))
    )


# ----------------------------------------------------------------------------------------------
# one verdict vocabulary, and every gate check stated in words from the Decision's structured fields

PROMOTE, DO_NOT_PROMOTE, NEEDS_REVIEW = "PROMOTE", "DO NOT PROMOTE", "NEEDS REVIEW"
_VERDICT_CLASS = {PROMOTE: "promote", DO_NOT_PROMOTE: "block", NEEDS_REVIEW: "review"}
# Colour for markdown, where no CSS reaches the Prefect UI: the word carries the meaning, the dot the glance.
_VERDICT_DOT = {PROMOTE: "🟢", DO_NOT_PROMOTE: "🔴", NEEDS_REVIEW: "🟡"}


def as_decision(decision: Decision | Mapping[str, Any] | None) -> Decision:
    """The boundary where a stored decision becomes a gate.Decision: one as is, decision.json's dict, an
    old manifest's summary (no checks; its verdict named promote, passed or approved, read by
    registry.DecisionRecord.of) or None (never judged: promote False, no checks). A policy record missing
    its digest or default flag (hand-built) is left out. Raises pydantic.ValidationError for a malformed
    check."""
    if isinstance(decision, Decision):
        return decision
    raw = dict(decision or {})
    policy = raw.get("policy")
    if not (isinstance(policy, Mapping) and {"source", "sha256", "is_default"} <= policy.keys()):
        policy = None
    return Decision.model_validate(
        {**raw, "promote": bool(DecisionRecord.of(raw).promote), "checks": raw.get("checks") or [],
         "reasons": raw.get("reasons") or [], "policy": policy}
    )  # fmt: skip


def verdict(decision: Decision | Mapping[str, Any] | None) -> tuple[str, str]:
    """(word, why) for a gate decision (a gate.Decision; a dict is converted by as_decision).

    PROMOTE: every check passed, not under a policy known to differ from the reviewed default
    (DecisionRecord.gate_status; a decision not yet stamped with its policy, as decide() returns it, reads
    as the default). NEEDS REVIEW: the checks passed under a policy that is not the reviewed default, or
    the only failure is that nothing could be compared with production (`regression:nothing_judged`): a
    person must decide, with an override. DO NOT PROMOTE: any other failing check.
    """
    dec = as_decision(decision)
    failed = [c.name for c in dec.checks if c.verdict == "fail"]
    counts = f"{sum(c.verdict == 'pass' for c in dec.checks)} passed, {len(failed)} failed, " + (
        f"{sum(c.verdict == 'skipped' for c in dec.checks)} skipped"
    )
    if DecisionRecord.of(dec).gate_status == "pass-non-default-policy":
        source = dec.policy.source if dec.policy is not None else "changed"
        return NEEDS_REVIEW, f"{counts}; the gate policy is not the reviewed default ({source})"
    if dec.promote:
        return PROMOTE, f"{counts}; every applicable check passed"
    if failed and set(failed) == {"regression:nothing_judged"}:
        return NEEDS_REVIEW, f"{counts}; no slice could be compared with production"
    if not dec.checks:
        return DO_NOT_PROMOTE, "; ".join(map(str, dec.reasons)) or "the gate did not pass"
    return DO_NOT_PROMOTE, counts


def _higher_is_better(metric: str) -> bool:
    from tailguard.metrics import HIGHER_IS_BETTER

    return HIGHER_IS_BETTER.get(metric, True)


def _n(x: Any, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "undefined"
    return f"{float(x):+.4f}" if signed else f"{float(x):.4f}"


def _interval(entry: Interval, sign: float) -> tuple[float | None, float | None, float | None]:
    """(point, low, high) of a comparison entry, multiplied by sign (so + is better), interval sorted."""
    point, lo, hi = entry.value, entry.ci_low, entry.ci_high
    point = None if point is None else sign * point
    if lo is None or hi is None:
        return point, None, None
    lo, hi = sorted((sign * lo, sign * hi))
    return point, lo, hi


def _comparison_statement(check: dict, evaluation: Evaluation, policy: dict) -> tuple[str, str]:
    """Measured and rule text of a regression:/protected: check on one slice and metric."""
    kind, rest = check["name"].split(":", 1)
    slice_name, metric = rest.rsplit(":", 1)
    entry = evaluation.diff(slice_name, metric) or Interval()
    higher = _higher_is_better(metric)
    point, lo, hi = _interval(entry, 1.0 if higher else -1.0)
    what = "candidate − production" if higher else "production − candidate (lower is better)"
    measured = f"{slice_name} {metric}: {what} = {_n(point, True)}"
    if lo is not None:
        measured += f", 95% CI [{_n(lo, True)}, {_n(hi, True)}]"
    margin = -(check.get("threshold") or 0.0)
    bound = policy.get("protected_bound" if kind == "protected" else "regression_bound", "upper")
    loss = "any loss" if margin == 0 else f"a loss of more than {margin:g}"
    if lo is None:
        rule = f"no interval: the point estimate {_n(check.get('observed'), True)} must be ≥ {-margin:+g}"
    elif bound == "upper":
        rule = (
            f"fails only when {loss} is established: the interval's upper end "
            f"{_n(check.get('observed'), True)} must be ≥ {-margin:+g}"
        )
    else:
        rule = (
            f"non-inferiority: the whole interval must stay above {-margin:+g}; its lower end is "
            f"{_n(check.get('observed'), True)}"
        )
    if kind == "protected":
        rule = f"protected slice, must not regress: {rule}"
    return measured, rule


def check_statement(
    check: dict, evaluation: Evaluation | dict, policy: dict | None = None
) -> tuple[str, str]:
    """(measured, rule) in words for one gate check, built from its structured fields.

    measured states the point estimate and, where the evaluation has one, the paired bootstrap 95%
    interval (metrics.json `comparison`); rule states the policy's rule and the number it was applied to.
    A skipped check gives ("not judged", its reason). Unknown check kinds fall back to the check's reason.
    """
    policy = policy or {}
    evaluation = Evaluation.coerce(evaluation)
    name, observed, threshold = check.get("name", ""), check.get("observed"), check.get("threshold")
    if check.get("verdict") == "skipped":
        return "not judged", str(check.get("reason", ""))
    kind, _, metric = name.partition(":")
    compares = name.count(":") >= 2 and not name.endswith(":*") and name != "regression:nothing_judged"
    if kind in ("regression", "protected") and compares:
        return _comparison_statement(check, evaluation, policy)
    if kind == "floor" and metric.startswith("overall:"):
        m = metric.split(":", 1)[1]
        rel = "≥" if _higher_is_better(m) else "≤"
        return f"candidate {m} = {_n(observed)} (overall)", f"floor: must be {rel} {_n(threshold)}"
    if name == "fairness:recall_gap_growth":
        entry = evaluation.fairness_diff("recall_gap") or Interval()
        point, lo, hi = _interval(entry, 1.0)
        measured = f"growth of the recall gap between popularity buckets = {_n(point, True)}"
        if lo is not None:
            measured += f", 95% CI [{_n(lo, True)}, {_n(hi, True)}]"
        bound = policy.get("fairness_bound", "lower")
        return measured, f"the interval's {bound} end {_n(observed, True)} must be ≤ {_n(threshold)}"
    if name == "drift:share_drifted_columns":
        return (
            f"share of drifted columns = {_n(observed)}",
            f"must be ≤ {_n(threshold)}; {check.get('reason')}",
        )
    return ("—" if observed is None else _n(observed)), str(check.get("reason", ""))


def _ordered_checks(dec: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """(failing, skipped, passing) checks, each in the gate's order."""
    checks = dec.get("checks") or []
    return tuple([c for c in checks if c.get("verdict") == v] for v in ("fail", "skipped", "pass"))  # type: ignore[return-value]


def file_link(path: str) -> str:
    """A browser link for a report: the report viewer's URL when TAILGUARD_REPORTS_URL is set (e.g.
    http://127.0.0.1:8765 from `tailguard reports serve`), else file:// for local paths, else the URI."""
    base = os.environ.get("TAILGUARD_REPORTS_URL", "").rstrip("/")
    match = re.search(r"(?:^|/)(models/[^/]+/versions/[^/]+/.+)$", path) if base else None
    if match:
        return f"{base}/{match.group(1)}"
    return path if "://" in path else Path(path).resolve().as_uri()


# ----------------------------------------------------------------------------------------------
# summary.html: tailguard's own page (self-contained, offline, no script; the viewer serves it with a CSP
# that allows exactly this stylesheet, by hash)

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
# The slice table a reviewer scans first; the rest sit in a collapsed table below it.
GLANCE_METRICS = ("roc_auc", "roc_auc_per_query", "ndcg_at_k", "recall_at_k")

# Wide tables scroll inside their own box (.scroll) instead of running under the next element: the old page
# (max-width 1200px, 24 metric columns ~1,900 px wide) overlapped its neighbours at 1280-1440 px.
SUMMARY_CSS = """
*{box-sizing:border-box}body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;
color:#1b1f24;max-width:100%}main{max-width:1400px}h1{font-size:1.4rem;margin:.2rem 0 .8rem}
h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.verdict{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:baseline;padding:.8rem 1rem;border-radius:8px;
border:2px solid;margin:0 0 1rem}.verdict .word{font-size:1.6rem;font-weight:800;letter-spacing:.02em}
.verdict.promote{background:#dafbe1;border-color:#1a7f37;color:#0f5323}
.verdict.block{background:#ffebe9;border-color:#cf222e;color:#82071e}
.verdict.review{background:#fff8c5;border-color:#9a6700;color:#633c01}
.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:.82rem;margin:.4rem 0}
th,td{border:1px solid #d0d7de;padding:.2rem .45rem;text-align:right;vertical-align:top}th{background:#f6f8fa}
td.l,th.l{text-align:left}td.w{text-align:left;min-width:16rem;max-width:40rem;overflow-wrap:anywhere}
tr.fail td.v{background:#ffebe9;color:#82071e;font-weight:700}tr.pass td.v{background:#dafbe1;color:#0f5323}
tr.skipped td{color:#57606a}.small{color:#6e7781}.up{color:#1a7f37}.down{color:#cf222e}
nav.reports ul{display:flex;flex-wrap:wrap;gap:.3rem 1.2rem;list-style:none;padding-left:0;margin:.3rem 0}
table.slices td{white-space:nowrap}
details{margin:.6rem 0}summary{cursor:pointer;font-weight:600}svg{max-width:100%;height:auto}
"""


def summary_css_sha256() -> str:
    """The CSP source of SUMMARY_CSS ('sha256-<base64>'), as the report viewer sends it."""
    import base64

    return "'sha256-" + base64.b64encode(hashlib.sha256(SUMMARY_CSS.encode()).digest()).decode() + "'"


_e = html_text


def _cell(entry: Any, digits: int = 3) -> str:
    v = _value(entry)
    if v is None:
        why = (entry.undefined if isinstance(entry, MetricEntry) else None) or "undefined"
        return f'<td class="small" title="{_e(why)}">—</td>'
    return f"<td>{v:.{digits}f}</td>"


def _diff_cell(entry: Interval | None) -> str:
    if entry is None or _value(entry) is None:
        why = "no comparison" if entry is None else (entry.undefined or "undefined")
        return f'<td class="small" title="{_e(why)}">—</td>'
    v, lo, hi = entry.value, entry.ci_low, entry.ci_high
    cls = "up" if lo is not None and lo > 0 else ("down" if hi is not None and hi < 0 else "")
    ci = f"<br>[{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else ""
    return f'<td class="{cls}">{v:+.3f}<span class="small">{ci}</span></td>'


def _slice_table(ev: Evaluation, metrics: tuple[str, ...], table_id: str) -> str:
    """HTML table: one row per slice; per metric each model's value, then Δ [95% CI] with two models."""
    models = ev.models
    two = len(models) == 2
    fixed = (("slice", " class='l'"), ("rows", ""), ("queries", ""), ("positives", ""))
    head = "<tr>" + "".join(f"<th rowspan='2'{cls}>{text}</th>" for text, cls in fixed)
    head += "".join(f"<th colspan='{len(models) + two}'>{_e(m)}</th>" for m in metrics) + "</tr><tr>"
    for _ in metrics:
        head += "".join(f"<th class='small'>{_e(x)}</th>" for x in models)
        head += "<th class='small'>Δ [95% CI]</th>" if two else ""
    rows = [head + "</tr>"]
    for name, info in ev.slices.items():
        small = info.too_small
        reason = f' title="{_e(info.reason)}"' if small else ""
        row = (
            f"<tr{' class=small' if small else ''}><td class='l'{reason}>{_e(name)}"
            f"{' (too small)' if small else ''}</td><td>{_e(info.rows)}</td>"
            f"<td>{_e(info.queries)}</td><td>{_e(info.positives)}</td>"
        )
        for metric in metrics:
            row += "".join(_cell(ev.entry(m, name, metric)) for m in models)
            if len(models) == 2:
                row += _diff_cell(ev.diff(name, metric))
        rows.append(row + "</tr>")
    return f"<div class='scroll'><table class='slices' id='{table_id}'>{''.join(rows)}</table></div>"


def _checks_table(checks: list[dict], evaluation: dict, policy: dict) -> str:
    rows = ["<tr><th class='l'>check</th><th class='l'>result</th><th class='l'>measured</th>"
            "<th class='l'>rule</th></tr>"]  # fmt: skip
    for c in checks:
        measured, rule = check_statement(c, evaluation, policy)
        word = {"fail": "FAIL", "pass": "pass", "skipped": "skipped"}.get(c.get("verdict"), c.get("verdict"))
        rows.append(
            f"<tr class='{_e(c.get('verdict'))}'><td class='l'>{_e(c.get('name'))}</td>"
            f"<td class='l v'>{_e(word)}</td><td class='w'>{_e(measured)}</td>"
            f"<td class='w'>{_e(rule)}</td></tr>"
        )
    return f"<div class='scroll'><table class='checks'>{''.join(rows)}</table></div>"


def _gate_section(dec: dict, evaluation: dict) -> str:
    """Failing checks first (open), then skipped and passing ones collapsed."""
    failing, skipped, passing = _ordered_checks(dec)
    policy = (dec.get("policy") or {}).get("values") or {}
    source = (dec.get("policy") or {}).get("source")
    parts = ["<h2 id='gate'>Gate checks</h2>"]
    if source:
        parts.append(f"<p class='small'>Policy: {_e(source)}; sha256 {_e(dec.get('policy_sha256'))}</p>")
    if failing:
        parts.append(f"<h3>Failing ({len(failing)})</h3>" + _checks_table(failing, evaluation, policy))
    else:
        parts.append("<p>No check failed.</p>")
    for title, group in (("Not judged", skipped), ("Passing", passing)):
        if group:
            parts.append(
                f"<details class='{title.split()[0].lower()}'><summary>{title} ({len(group)})</summary>"
                + _checks_table(group, evaluation, policy)
                + "</details>"
            )
    return "".join(parts)


def _chart(ev: Evaluation, metric: str = "roc_auc") -> str:
    """Inline SVG: per popularity bucket, candidate and production bars of one metric."""
    models = ev.models
    buckets = ("head", "torso", "tail", "cold")
    colours = {"candidate": "#0969da", "production": "#8c959f"}
    width, height, pad, group = 560, 240, 40, 120
    bars = []
    for i, b in enumerate(buckets):
        x0 = pad + i * group + 10
        for j, m in enumerate(models):
            v = ev.value(m, f"popularity:{b}", metric)
            x = x0 + j * 40
            if v is None:
                bars.append(
                    f'<text x="{x + 4}" y="{height - pad - 4}" font-size="10" fill="#8c959f">n/a</text>'
                )
                continue
            h = max(0.0, min(1.0, v)) * (height - 2 * pad)
            bars.append(
                f'<rect x="{x}" y="{height - pad - h:.1f}" width="34" height="{h:.1f}" '
                f'fill="{colours.get(m, "#57606a")}">'
                f"<title>{_e(m)} {_e(b)} {_e(metric)} {v:.3f}</title></rect>"
                f'<text x="{x + 2}" y="{height - pad - h - 3:.1f}" font-size="10">{v:.2f}</text>'
            )
        info = ev.slice_info(f"popularity:{b}")
        too_small = info is not None and info.too_small
        label = f"{b}{' (too small)' if too_small else ''}"
        bars.append(f'<text x="{x0}" y="{height - pad + 16}" font-size="11">{_e(label)}</text>')
    legend = "".join(
        f'<rect x="{pad + 300 + k * 110}" y="8" width="10" height="10" fill="{colours.get(m, "#57606a")}"/>'
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


def _fairness_section(ev: Evaluation) -> str:
    models = ev.models
    if not ev.fairness:
        return ""

    def exposure(m: str) -> Any:
        f = ev.fairness_of(m)
        return None if f is None else f.exposure

    rows: list[tuple[str, Callable[[str], Any]]] = [
        ("recall gap (max − min over buckets)", lambda m: getattr(ev.fairness_of(m), "recall_gap", None)),
        ("tail/head exposure ratio", lambda m: getattr(exposure(m), "tail_head_ratio", None)),
    ]
    rows += [
        (f"exposure share: {b}", lambda m, b=b: None if exposure(m) is None else exposure(m).share.get(b))
        for b in ("head", "torso", "tail", "cold")
    ]
    rows += [(k, lambda m, k=k: ev.bias(m, k)) for k in ("arp", "aplt", "gini", "item_coverage")]
    body = "".join(
        f"<tr><td class='l'>{_e(label)}</td>" + "".join(_cell(read(m)) for m in models) + "</tr>"
        for label, read in rows
    )
    heads = "".join(f"<th>{_e(m)}</th>" for m in models)
    return (
        "<h2>Fairness and popularity bias</h2><div class='scroll'><table><tr><th class='l'>measure</th>"
        f"{heads}</tr>{body}</table></div>"
    )


def _examples_section(examples: pd.DataFrame | None) -> str:
    if examples is None or not len(examples):
        return ""
    head = "".join(f"<th class='l'>{_e(c)}</th>" for c in examples.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{v:.3f}</td>" if isinstance(v, float) else f"<td class='l w'>{_e(v)}</td>" for v in row
        )
        + "</tr>"
        for row in examples.itertuples(index=False)
    )
    return (
        "<h2>Tail and cold rows where the models disagree most</h2>"
        f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"
    )


def summary_html(
    evaluation: Evaluation | dict,
    decision: Any,
    links: dict[str, str],
    skipped: dict[str, str] | None = None,
    examples: pd.DataFrame | None = None,
    title: str = "tailguard evaluation",
) -> str:
    """tailguard's own review page (offline, no script): verdict, report links, slice table, gate checks.

    links: {name: relative href} of the sibling report pages; skipped: {name: why not rendered}.
    Every data-driven text goes through html_text; the only <script> is a JSON data block
    ({"decision": bool, "verdict": word}) escaped with escape_script_json.
    """
    dec = decision.to_dict() if hasattr(decision, "to_dict") else (decision or {})
    word, why = verdict(dec)
    evaluation = Evaluation.coerce(evaluation)
    models = evaluation.models
    d = evaluation.data
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(word)} · {_e(title)}</title><style>{SUMMARY_CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1>"
        f"<div class='verdict {_VERDICT_CLASS[word]}' id='verdict'><span class='word'>{_e(word)}</span>"
        f"<span class='why'>{_e(why)}</span></div>"
        f"<p>{_e(d.rows)} rows, {_e(d.queries)} queries, {_e(d.positives)} positives, "
        f"{_e(d.items)} items; k = {_e(evaluation.config.k)}; models: "
        f"{_e(', '.join(models))}.</p>",
        "<nav class='reports'><b>Reports</b> <span class='small'>(Evidently pages: <b>current</b> = "
        "candidate, <b>reference</b> = production, scored on the same rows)</span><ul>",
    ]
    parts += [f'<li><a href="{_e(href)}">{_e(key.replace("_", " "))}</a></li>' for key, href in links.items()]
    parts += [
        f"<li class='small'>{_e(key)}: not rendered ({_e(reason)})</li>"
        for key, reason in (skipped or {}).items()
    ]
    parts.append("</ul></nav>")
    parts.append(
        "<h2 id='slices'>Slices</h2><p class='small'>Δ = candidate − production with its paired bootstrap "
        "95% interval over queries; green: the whole interval above 0, red: below 0.</p>"
        + _slice_table(evaluation, GLANCE_METRICS, "slices-table")
    )
    parts.append(
        "<details><summary>All metrics per slice</summary>"
        + _slice_table(evaluation, SUMMARY_METRICS, "all-metrics-table")
        + "</details>"
    )
    if dec.get("checks"):
        parts.append(_gate_section(dec, evaluation))
    parts.append("<h2>Per popularity bucket</h2>" + _chart(evaluation))
    parts.append(_fairness_section(evaluation))
    parts.append(_examples_section(examples))
    parts.append(
        "<script type='application/json' id='metrics'>"
        # Script content is not entity-decoded: \u escapes keep the JSON parseable and the element closed.
        + escape_script_json(json.dumps({"decision": dec.get("promote"), "verdict": word}))
        + "</script></main></body></html>"
    )
    return "".join(parts)
