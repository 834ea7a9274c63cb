"""The review material reads at a glance: one verdict vocabulary, checks stated in words, failing first."""

from __future__ import annotations

import re

import pytest

from tailguard import summary
from tailguard.gate import Check, Decision, GatePolicy, decide

POLICY = GatePolicy().model_dump(mode="json")


def _evaluation(
    diff: float, low: float, high: float, metric: str = "roc_auc", slice_name: str = "overall"
) -> dict:
    return {
        "models": ["candidate", "production"],
        "slices": {slice_name: {"dimension": slice_name.split(":")[0], "rows": 900, "positives": 300}},
        "metrics": {
            "candidate": {slice_name: {metric: {"value": 0.7}}},
            "production": {slice_name: {metric: {"value": 0.7 - diff}}},
        },  # fmt: skip
        "comparison": {"slices": {slice_name: {metric: {"value": diff, "ci_low": low, "ci_high": high}}}},
    }


def _decision(evaluation: dict, policy: GatePolicy | None = None) -> dict:
    models = evaluation["metrics"]
    return decide(
        models["candidate"],
        models["production"],
        policy or GatePolicy(floors={}),
        comparison=evaluation["comparison"],
        slices=evaluation["slices"],
    ).to_dict() | {
        "policy": {"values": (policy or GatePolicy()).model_dump(mode="json"), "source": "default"}
    }


def test_issue_example_states_point_estimate_and_interval_not_only_the_upper_end() -> None:
    """Issue 15 item 4: a check read 'improvement 0.0838' for a candidate whose point estimate was −0.023."""
    evaluation = _evaluation(-0.023, -0.1298, 0.0838)
    dec = _decision(evaluation)
    check = next(c for c in dec["checks"] if c["name"] == "regression:overall:roc_auc")
    measured, rule = summary.check_statement(check, evaluation, POLICY)
    assert measured == "overall roc_auc: candidate − production = -0.0230, 95% CI [-0.1298, +0.0838]"
    assert rule == (
        "fails only when a loss of more than 0.02 is established: "
        "the interval's upper end +0.0838 must be ≥ -0.02"
    )


@pytest.mark.parametrize(
    ("metric", "diff", "low", "high", "expected"),
    [
        # log_loss: lower is better, so the statement flips the sign and says so
        (
            "log_loss",
            0.05,
            0.01,
            0.09,
            "production − candidate (lower is better) = -0.0500, 95% CI [-0.0900, -0.0100]",
        ),
        ("ndcg_at_k", 0.1, 0.02, 0.2, "candidate − production = +0.1000, 95% CI [+0.0200, +0.2000]"),
    ],
)
def test_statement_direction_per_metric(metric, diff, low, high, expected) -> None:
    evaluation = _evaluation(diff, low, high, metric)
    policy = GatePolicy(floors={}, max_regression={metric: 0.02})
    check = next(c for c in _decision(evaluation, policy)["checks"] if c["name"].endswith(metric))
    assert summary.check_statement(check, evaluation, POLICY)[0].endswith(expected)


def test_statement_of_a_non_inferiority_rule_and_a_protected_slice() -> None:
    evaluation = _evaluation(0.01, -0.04, 0.06, slice_name="popularity:tail")
    evaluation["slices"]["popularity:tail"]["dimension"] = "popularity"
    policy = GatePolicy(floors={}, regression_bound="lower", protected_metrics=["roc_auc"])
    dec = _decision(evaluation, policy)
    by_name = {c["name"]: c for c in dec["checks"]}
    _, rule = summary.check_statement(
        by_name["regression:popularity:tail:roc_auc"], evaluation, dec["policy"]["values"]
    )
    assert rule == "non-inferiority: the whole interval must stay above -0.02; its lower end is -0.0400"
    _, rule = summary.check_statement(
        by_name["protected:popularity:tail:roc_auc"], evaluation, dec["policy"]["values"]
    )
    assert rule.startswith("protected slice, must not regress: fails only when any loss is established")


def test_floor_and_skipped_checks_in_words() -> None:
    floor = Check(name="floor:overall:roc_auc", observed=0.478, threshold=0.55, verdict="fail", reason="r")
    assert summary.check_statement(floor.model_dump(), {}, POLICY) == (
        "candidate roc_auc = 0.4780 (overall)",
        "floor: must be ≥ 0.5500",
    )
    ceiling = Check(name="floor:overall:log_loss", observed=0.7, threshold=0.6, verdict="fail", reason="r")
    assert summary.check_statement(ceiling.model_dump(), {}, POLICY)[1] == "floor: must be ≤ 0.6000"
    skipped = Check(name="regression:popularity:cold:*", verdict="skipped", reason="slice too small to judge")
    assert summary.check_statement(skipped.model_dump(), {}, POLICY) == (
        "not judged",
        "slice too small to judge",
    )


def _d(verdicts: dict[str, str], promote: bool, is_default: bool | None = True) -> dict:
    checks = [Check(name=n, verdict=v, reason="x") for n, v in verdicts.items()]
    return Decision(promote=promote, checks=checks, reasons=[], policy_is_default=is_default).to_dict()


@pytest.mark.parametrize(
    ("decision", "word"),
    [
        (_d({"floor:overall:roc_auc": "pass"}, True), "PROMOTE"),
        (
            _d({"floor:overall:roc_auc": "fail", "regression:overall:roc_auc": "pass"}, False),
            "DO NOT PROMOTE",
        ),
        (_d({"floor:overall:roc_auc": "pass"}, True, is_default=False), "NEEDS REVIEW"),  # relaxed policy
        (_d({"regression:nothing_judged": "fail", "floor:overall:roc_auc": "pass"}, False), "NEEDS REVIEW"),
        (_d({"regression:nothing_judged": "fail", "floor:overall:roc_auc": "fail"}, False), "DO NOT PROMOTE"),
        ({"promote": False}, "DO NOT PROMOTE"),  # an old manifest's decision without checks
    ],
)
def test_one_verdict_vocabulary(decision, word) -> None:
    assert summary.verdict(decision)[0] == word
    page = summary.summary_html({}, decision, {})
    assert re.search(rf"<div class='verdict \w+' id='verdict'><span class='word'>{word}</span>", page)
    assert summary.review_markdown({}, decision, "v1", "s3://b").startswith(
        f"# {summary._VERDICT_DOT[word]} {word}:"
    )


def test_page_order_verdict_slices_failing_then_collapsed_passing() -> None:
    evaluation = _evaluation(-0.023, -0.1298, 0.0838)
    checks = [
        Check(name="floor:overall:roc_auc", observed=0.7, threshold=0.55, verdict="pass", reason="ok"),
        Check(
            name="floor:overall:roc_auc_per_query", observed=0.5, threshold=0.55, verdict="fail", reason="no"
        ),
        Check(name="regression:popularity:cold:*", verdict="skipped", reason="too small"),
    ]
    page = summary.summary_html(
        evaluation, Decision(promote=False, checks=checks, reasons=[]), {"drift": "drift.html"}
    )
    marks = (
        "id='verdict'",
        "id='slices-table'",
        "<h3>Failing (1)",
        "floor:overall:roc_auc_per_query",
        "<details class='not'><summary>Not judged (1)",
        "<details class='passing'><summary>Passing (1)",
        "floor:overall:roc_auc<",
    )
    order = [page.index(m) for m in marks]
    assert order == sorted(order)
    assert '<a href="drift.html">drift</a>' in page and "<script>" not in page
    md = summary.review_markdown(
        evaluation, Decision(promote=False, checks=checks, reasons=[]).to_dict(), "v", "s"
    )
    assert md.index("## Slices") < md.index("## Failing checks (1)") < md.index("## Passing checks (1)")


def test_summary_links_drift_and_class_balance_rendered_before_it(tmp_path) -> None:
    """The retrain writes drift.html and class_balance.html first: the summary must link both."""
    import numpy as np
    import pandas as pd

    from tailguard.reports import evaluation_reports

    for name in ("drift", "class_balance"):
        (tmp_path / f"{name}.html").write_text("<p>page</p>")
    eval_df = pd.DataFrame({"query": ["a", "b"], "item_id": ["1", "2"], "label": [1, 1]})
    scores = {"candidate": np.array([0.2, 0.9]), "production": np.array([0.5, 0.5])}
    pages = evaluation_reports(eval_df, scores, {"models": []}, {"promote": False}, tmp_path)
    page = pages["summary"].read_text()
    assert (
        '<a href="drift.html">drift</a>' in page and '<a href="class_balance.html">class balance</a>' in page
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("s3://bucket/store/models/relevance/versions/v1/reports/summary.html",
         "http://127.0.0.1:8765/models/relevance/versions/v1/reports/summary.html"),
        # a store prefix that itself contains "models/" is not mistaken for the version path
        ("s3://b/models/x/models/relevance/versions/v2/reports/drift.html",
         "http://127.0.0.1:8765/models/relevance/versions/v2/reports/drift.html"),
    ],
)  # fmt: skip
def test_file_link_points_at_the_viewer_when_configured(monkeypatch, path, expected) -> None:
    monkeypatch.setenv("TAILGUARD_REPORTS_URL", "http://127.0.0.1:8765/")
    assert summary.file_link(path) == expected
    monkeypatch.delenv("TAILGUARD_REPORTS_URL")
    assert summary.file_link(path) == path


def test_a_pass_under_a_non_default_policy_reads_needs_review_on_every_page() -> None:
    """The summary page shares the registry's rule (DecisionRecord.gate_status): the table's
    'pass (non-default policy: needs a named override)' is NEEDS REVIEW here, with the policy's source."""
    from tailguard.gate import resolve_policy

    _, record = resolve_policy(overrides={"floors": {"roc_auc": 0.0, "roc_auc_per_query": 0.0}})
    passing = [Check(name="floor:overall:roc_auc", verdict="pass", reason="x")]
    decision = Decision(promote=True, checks=passing, reasons=[]).with_policy(record)
    for given in (decision, decision.to_dict()):  # typed, and decision.json's dict converted once
        word, why = summary.verdict(given)
        assert word == "NEEDS REVIEW" and "gate_overrides of floors" in why
        assert "<span class='word'>NEEDS REVIEW</span>" in summary.summary_html({}, given, {})
    assert summary.as_decision(decision) is decision
    legacy = summary.as_decision({"passed": True, "reasons": ["ok"]})  # an old manifest's summary
    assert legacy.promote is True and legacy.checks == [] and summary.verdict(legacy)[0] == "PROMOTE"
    assert summary.as_decision(None).promote is False
