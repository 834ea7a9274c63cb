"""Evidently reports and the summary page on a tiny batch."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tailguard import reports
from tailguard.gate import GatePolicy, decide_evaluation
from tailguard.metrics import EvalConfig, evaluate

EVIL_TITLE = '<script>alert("x")</script> Drill & "bit"'


def tiny_batch(seed: int = 0, n: int = 400):
    """A train/eval pair with a long tail, a hostile title, and two models' scores."""
    rng = np.random.default_rng(seed)
    items = [f"item{i}" for i in range(200)]
    popularity = np.r_[np.full(20, 0.03), np.full(180, 0.4 / 180)]
    words = np.array(["drill", "saw", "paint", "hammer", "ladder", "tile", "glue", "brush"])
    train = pd.DataFrame(
        {
            "query": [" ".join(rng.choice(words, 2)) + f" {i % 300}" for i in range(3000)],
            "item_id": rng.choice(items, p=popularity, size=3000),
        }
    )
    train["item_title"] = "cordless " + train["item_id"]
    train["label"] = (rng.random(len(train)) < 0.5).astype(int)
    train["price"] = rng.gamma(2.0, 20.0, len(train))
    ev = pd.DataFrame(
        {
            "query": [" ".join(rng.choice(words, 2)) + f" {i // 8}" for i in range(n)],
            "item_id": rng.choice(items, p=popularity, size=n),
            "label": rng.integers(0, 2, n),
            "price": rng.gamma(2.0, 30.0, n),
        }
    )
    ev["item_title"] = np.where(np.arange(n) % 7 == 0, EVIL_TITLE, "cordless " + ev["item_id"])
    cand = np.clip(0.3 * ev["label"] + 0.7 * rng.random(n), 0, 1).to_numpy()
    prod = rng.random(n)
    return train, ev, {"candidate": cand, "production": prod}


def render(out_dir):
    """Evaluate, decide and render every page for the tiny batch (shared with the browser test)."""
    train, ev, scores = tiny_batch()
    evaluation = evaluate(ev, train, scores, EvalConfig(min_positives=10, n_bootstrap=200))
    decision = decide_evaluation(evaluation, GatePolicy())
    pages = reports.evaluation_reports(ev, scores, evaluation, decision, out_dir, train_df=train)
    return train, ev, evaluation, decision, pages


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return render(tmp_path_factory.mktemp("reports"))


def test_evaluation_pages_per_bucket_and_summary(rendered):
    _, _, evaluation, decision, pages = rendered
    assert {"summary", "classification_overall"} <= set(pages)
    for bucket in ("head", "torso", "tail", "cold"):
        info = evaluation.slice_info(f"popularity:{bucket}")
        assert (f"classification_popularity_{bucket}" in pages) == (not info.too_small), bucket
    page = pages["classification_popularity_head"].read_text()
    assert len(page) > 100_000 and "<script" in page  # Evidently inlines its JS
    summary = pages["summary"].read_text()
    for key, path in pages.items():
        if key != "summary":
            assert f'href="{path.name}"' in summary
    assert "<svg" in summary and "per popularity bucket" in summary
    assert ("PROMOTE" if decision.promote else "DO NOT PROMOTE") in summary
    for check in decision.checks[:5]:
        assert check.name in summary
    assert "http://" not in summary and "https://" not in summary  # offline: no external assets


def test_summary_escapes_titles_and_queries(rendered):
    summary = rendered[4]["summary"].read_text()
    assert EVIL_TITLE not in summary and "<script>alert" not in summary
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Drill &amp; &quot;bit&quot;" in summary


def test_raw_scores_skip_evidently_pages_with_reason(tmp_path):
    train, ev, scores = tiny_batch(n=120)
    raw = {"candidate": scores["candidate"] * 8 - 4}
    evaluation = evaluate(ev, train, raw, EvalConfig(n_bootstrap=0))
    pages = reports.evaluation_reports(ev, raw, evaluation, None, tmp_path)
    assert set(pages) == {"summary"}
    assert "scores are not probabilities" in pages["summary"].read_text()


def test_drift_report_summary(tmp_path):
    train, ev, _ = tiny_batch()
    out = reports.drift_report(train, ev, tmp_path / "drift.html")
    assert (tmp_path / "drift.html").stat().st_size > 100_000
    json.dumps(out, allow_nan=False)
    assert "item_id" not in out["columns"]  # ids excluded
    assert {"query", "item_title", "label", "price"} <= set(out["columns"])
    assert "price" in out["drifted_columns"]  # eval prices are drawn 1.5x larger
    judged = [c for c in out["columns"].values() if c["drifted"] is not None]
    assert out["share_drifted_columns"] == pytest.approx(sum(c["drifted"] for c in judged) / len(judged))
    same = reports.drift_report(train, train.sample(frac=1.0, random_state=1), tmp_path / "same.html")
    assert same["drifted_columns"] == [] and same["share_drifted_columns"] == 0


def test_class_balance_report(tmp_path):
    train, _, _ = tiny_batch()
    before = train.assign(popularity=np.where(train.index % 5 == 0, "tail", "head"))
    after = pd.concat([before, before[before["label"] == 1]], ignore_index=True)
    path = reports.class_balance_report(before, after, tmp_path / "balance.html")
    text = path.read_text()
    assert path.stat().st_size > 100_000
    assert "label" in text and "popularity" in text
    with pytest.raises(ValueError, match="'label' missing"):
        reports.class_balance_report(before.drop(columns=["label"]), after, tmp_path / "x.html")
