"""Human-readable summaries of a run: console text and markdown for Prefect artifacts (pure formatting)."""

from __future__ import annotations

from pathlib import Path

from tailguard.safe_text import markdown_code, markdown_text

# The slices shown in the console and the review table, in this order (metrics.json holds them all).
SHOWN_DIMENSIONS = ("overall", "popularity", "query_frequency", "query_terms")
SHOWN_METRICS = ("roc_auc", "roc_auc_per_query")


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def slice_rows(evaluation: dict, metrics: tuple[str, ...] = SHOWN_METRICS) -> list[dict]:
    """One row per (slice, metric): size, candidate, production, difference and its 95% interval."""
    rows = []
    values = evaluation.get("metrics", {})
    comparison = evaluation.get("comparison", {}).get("slices", {})
    for name, info in evaluation.get("slices", {}).items():
        if info.get("dimension", name) not in SHOWN_DIMENSIONS:
            continue
        for metric in metrics:
            cand = values.get("candidate", {}).get(name, {}).get(metric, {})
            prod = values.get("production", {}).get(name, {}).get(metric, {})
            diff = comparison.get(name, {}).get(metric, {})
            rows.append(
                {
                    "slice": name,
                    "metric": metric,
                    "rows": info.get("rows"),
                    "positives": info.get("positives"),
                    "judged": not info.get("too_small"),
                    "note": info.get("reason") or cand.get("undefined") or "",
                    "candidate": cand.get("value"),
                    "production": prod.get("value") if prod else None,
                    "diff": diff.get("value"),
                    "ci_low": diff.get("ci_low"),
                    "ci_high": diff.get("ci_high"),
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


def headline_metrics(evaluation: dict) -> dict:
    """{"slice/metric": {"candidate": v, "production": v or None}} for the HEADLINE slices present."""
    values = evaluation.get("metrics", {})
    out = {}
    for slice_name, metric in HEADLINE:
        cand = values.get("candidate", {}).get(slice_name, {}).get(metric, {}).get("value")
        prod = values.get("production", {}).get(slice_name, {}).get(metric, {}).get("value")
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


def checks_text(decision: dict) -> str:
    """Every gate check on one line each: verdict, name, observed vs threshold, reason."""
    lines = []
    for check in decision.get("checks", []):
        verdict = str(check.get("verdict", "")).upper()
        lines.append(
            f"  [{verdict:<7}] {check.get('name')}: observed {check.get('observed')} "
            f"vs {check.get('threshold')}" + (f" — {check['reason']}" if check.get("reason") else "")
        )
    return "\n".join(lines) or "  (no checks)"


def outcome_text(outcome: dict) -> str:
    """What a retrain did, for the console: decision, reasons, metrics, and the paths to open."""
    decision = outcome.get("decision", {})
    verdict = "PROMOTED" if outcome.get("promoted") else "NOT PROMOTED"
    paths = outcome.get("paths", {})
    parts = [
        f"candidate {outcome.get('version')}: {verdict} ({outcome.get('why')})",
        f"gate: {'pass' if decision.get('promote') else 'fail'}",
        checks_text(decision),
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


def cutoff_rows(evaluation: dict) -> list[dict]:
    """One row per (dimension, bucket) of metrics.json's slice cut-offs: training counts, keys, row share."""
    rows = []
    for dim, buckets in evaluation.get("slice_definitions", {}).get("cutoffs", {}).items():
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


def review_markdown(evaluation: dict, decision: dict, version: str, store_uri: str) -> str:
    """The reviewer's artifact: verdict, gate checks, and the slice table with intervals."""
    checks = [
        {
            "check": c.get("name"),
            "verdict": c.get("verdict"),
            "observed": c.get("observed"),
            "threshold": c.get("threshold"),
            "reason": c.get("reason"),
        }
        for c in decision.get("checks", [])
    ]
    rows = slice_rows(evaluation)
    return (
        f"# Candidate {markdown_code(version)}\n\n"
        f"Gate: **{'PASS' if decision.get('promote') else 'FAIL'}**\n\n"
        + "".join(f"- {markdown_text(r)}\n" for r in decision.get("reasons", []))
        + "\n## Gate checks\n\n"
        + _md_table(checks, ["check", "verdict", "observed", "threshold", "reason"])
        + "\n## Slices (candidate − production, paired bootstrap 95% CI over queries)\n\n"
        + _md_table(
            rows,
            [
                "slice",
                "metric",
                "rows",
                "positives",
                "candidate",
                "production",
                "diff",
                "ci_low",
                "ci_high",
                "note",
            ],
        )
        + "\n## Bucket cut-offs (training counts; docs/METRICS.md)\n\n"
        + _md_table(
            cutoff_rows(evaluation), ["dimension", "bucket", "train counts", "keys", "train share", "rule"]
        )
        + f"\nStore: {markdown_code(store_uri)}\n"
    )


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


def file_link(path: str) -> str:
    """A link for a report: file:// for local paths, the URI itself for s3://."""
    return path if "://" in path else Path(path).resolve().as_uri()
