"""Issue 16 item 4: two versions side by side (paired only on the same eval rows) and the headline trend.

Versions are written through the real Registry on a LocalStore with real metrics.json from
tailguard.metrics.evaluate; the expected numbers are recomputed here with scikit-learn from the same rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from tailguard.history import NOT_COMPARABLE, compare_versions, trend
from tailguard.metrics import EvalConfig, evaluate
from tailguard.pipeline import metrics_json_bytes
from tailguard.registry import ChecksumError, Registry, RegistryError
from tailguard.store import open_store
from tailguard.summary import headline_metrics

PASS = {
    "promote": True,
    "reasons": ["all gates passed"],
    "policy_is_default": True,
    "policy_sha256": "d" * 64,
}
FAIL = {
    "promote": False,
    "reasons": ["tail AUC regressed"],
    "policy_is_default": True,
    "policy_sha256": "d" * 64,
}


def split(seed: int, n: int = 900) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An eval split (60 queries, some long-tail items) and its training keys; each seed its own rows."""
    rng = np.random.default_rng(seed)
    eval_df = pd.DataFrame(
        {
            "query": [f"q{seed}-{i % 60}" for i in range(n)],
            "item_id": [f"0{rng.zipf(1.3) % 400}" for _ in range(n)],  # leading zero kept as text
            "item_title": "t",
            "label": rng.integers(0, 2, n),
        }
    )
    train = pd.DataFrame(
        {
            "query": [f"q{seed}-{i % 70}" for i in range(3000)],
            "item_id": [f"0{rng.zipf(1.3) % 300}" for _ in range(3000)],
        }
    )
    return eval_df, train


def scores(eval_df: pd.DataFrame, strength: float, seed: int) -> np.ndarray:
    """Scores that separate the labels by `strength` (0 = chance)."""
    noise = np.random.default_rng(seed).random(len(eval_df))
    return eval_df["label"].to_numpy() * strength + noise


def write(registry: Registry, tmp_path: Path, tag: str, evaluation: dict, **manifest) -> str:
    """One version folder like pipeline.write_candidate's: model files, metrics.json, headline."""
    version = f"2026120{len(registry.list_versions()) + 1}T000000Z-{tag}"
    model = tmp_path / f"model-{tag}"
    model.mkdir()
    (model / "model.safetensors").write_bytes(hashlib.sha256(tag.encode()).digest())
    metrics = tmp_path / f"metrics-{tag}.json"
    metrics.write_bytes(metrics_json_bytes(evaluation))
    body = {"decision": PASS, "headline": headline_metrics(evaluation), **manifest}
    registry.write_version(version, model, {"metrics.json": metrics}, body)
    return version


@pytest.fixture
def history(tmp_path):
    """v1 (first, no production) → promoted; v2 scored against v1 on split A → rejected;
    v3 scored against v1 on its own split B → promoted; v4 written before production_version existed."""
    registry = Registry(open_store(str(tmp_path / "store")), "relevance")
    config = EvalConfig(n_bootstrap=40, min_positives=5)
    a_eval, a_train = split(1)
    b_eval, b_train = split(2)
    first = evaluate(a_eval, a_train, {"candidate": scores(a_eval, 0.3, 10)}, config)
    v1 = write(registry, tmp_path, "aaaaaa", first)
    registry.promote(v1, approved_by="ana", decision=PASS)
    s_v1_on_a, s_v2_on_a = scores(a_eval, 0.3, 10), scores(a_eval, 0.6, 20)
    second = evaluate(a_eval, a_train, {"candidate": s_v2_on_a, "production": s_v1_on_a}, config)
    v2 = write(registry, tmp_path, "bbbbbb", second, production_version=v1, decision=FAIL)
    registry.reject(v2, by="ana", decision=FAIL, comment="tail")
    b_scores = {"candidate": scores(b_eval, 0.5, 30), "production": scores(b_eval, 0.3, 10)}
    third = evaluate(b_eval, b_train, b_scores, config)
    v3 = write(registry, tmp_path, "cccccc", third, production_version=v1)
    registry.promote(v3, approved_by="bo", decision=PASS)
    legacy = evaluate(b_eval, b_train, {"candidate": scores(b_eval, 0.1, 40)}, config)
    v4 = write(registry, tmp_path, "dddddd", legacy, headline={})  # an old manifest: no headline either
    return {"registry": registry, "v": (v1, v2, v3, v4), "a": a_eval, "s1": s_v1_on_a, "s2": s_v2_on_a,
            "second": second}  # fmt: skip


def row(comparison, slice_name: str, metric: str):
    return next(r for r in comparison.rows if (r.slice, r.metric) == (slice_name, metric))


def test_versions_scored_on_the_same_rows_are_paired_with_intervals(history):
    registry, (v1, v2, _, _) = history["registry"], history["v"]
    c = compare_versions(registry, v1, v2)
    assert c.same_rows and c.source_version == v2 and "same eval rows" in c.basis
    y = history["a"]["label"].to_numpy()
    overall = row(c, "overall", "roc_auc")
    assert overall.v1 == pytest.approx(roc_auc_score(y, history["s1"]), abs=1e-12)
    assert overall.v2 == pytest.approx(roc_auc_score(y, history["s2"]), abs=1e-12)
    assert overall.diff == pytest.approx(overall.v2 - overall.v1, abs=1e-12)
    assert overall.ci_low < overall.diff < overall.ci_high and overall.rows == len(y)
    second = history["second"]
    for r in c.rows:  # every row carries metrics.json's own paired interval
        paired = second.diff(r.slice, r.metric)
        assert (r.diff, r.ci_low, r.ci_high) == (paired.value, paired.ci_low, paired.ci_high)
    assert {r.slice for r in c.rows} >= {"overall", "popularity:head", "query_frequency:tail"}
    assert c.v1.status == "promoted" and c.v2.status == "rejected" and c.v2.gate is False


def test_the_reverse_order_swaps_columns_and_negates_the_interval(history):
    registry, (v1, v2, _, _) = history["registry"], history["v"]
    forward, backward = compare_versions(registry, v1, v2), compare_versions(registry, v2, v1)
    assert backward.same_rows and backward.source_version == v2
    for f, b in zip(forward.rows, backward.rows, strict=True):
        assert (b.v1, b.v2) == (f.v2, f.v1)
        if f.diff is not None:
            assert (b.diff, b.ci_low, b.ci_high) == (-f.diff, -f.ci_high, -f.ci_low)


def test_versions_on_different_rows_are_labelled_not_comparable(history):
    registry, (v1, v2, v3, _) = history["registry"], history["v"]
    c = compare_versions(registry, v2, v3)  # both scored against v1, each on its own split
    assert not c.same_rows and c.source_version is None
    assert "not scored on the same rows" in c.basis and NOT_COMPARABLE in c.basis
    assert all(r.note == NOT_COMPARABLE and r.diff is None and r.ci_low is None for r in c.rows)
    own = registry.read_manifest(v3).headline["overall/roc_auc"]["candidate"]
    assert row(c, "overall", "roc_auc").v2 == own
    # v3 was scored against v1, so that pair is paired; "production" names v3 now.
    assert compare_versions(registry, v1, "production").same_rows


def test_an_old_manifest_without_production_version_or_headline(history):
    registry, (_, _, v3, v4) = history["registry"], history["v"]
    c = compare_versions(registry, v3, v4)
    assert not c.same_rows and f"{v4} records no production version" in c.basis
    assert [r.v2 for r in c.rows] == [None] * 4 and row(c, "overall", "roc_auc").v1 is not None
    assert c.v2.status == "pending"


def test_a_production_version_without_production_numbers_is_not_paired(tmp_path):
    """A manifest naming a production version while metrics.json has no production column: not paired."""
    registry = Registry(open_store(str(tmp_path / "store")), "relevance")
    a_eval, a_train = split(3)
    only = evaluate(a_eval, a_train, {"candidate": scores(a_eval, 0.4, 1)}, EvalConfig(n_bootstrap=0))
    v1 = write(registry, tmp_path, "eeeeee", only)
    v2 = write(registry, tmp_path, "ffffff", only, production_version=v1)
    assert not compare_versions(registry, v1, v2).same_rows


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        (("same", "same"), "two different versions"),
        (("20991231T000000Z-ffffff", "first"), "does not exist"),
        (("../../etc", "first"), "invalid version id"),
        (("first", "bad\nid"), "invalid version id"),
    ],
)
def test_bad_version_arguments_raise_one_clear_registry_error(history, pair, message):
    registry, v1 = history["registry"], history["v"][0]
    names = [v1 if p in ("same", "first") else p for p in pair]
    with pytest.raises(RegistryError, match=message):
        compare_versions(registry, *names)


def test_a_changed_metrics_json_is_refused(history):
    registry, (v1, v2, _, _) = history["registry"], history["v"]
    key = f"{registry.version_prefix(v2)}/metrics.json"
    tampered = json.loads(registry.store.get_bytes(key))
    tampered["comparison"]["slices"]["overall"]["roc_auc"]["value"] = 0.5
    registry.store.put_bytes(key, json.dumps(tampered).encode())
    with pytest.raises(ChecksumError, match="metrics.json"):
        compare_versions(registry, v1, v2)


def test_a_malformed_manifest_is_named(history):
    registry, (v1, _, _, v4) = history["registry"], history["v"]
    key = f"{registry.version_prefix(v4)}/manifest.json"
    manifest = json.loads(registry.store.get_bytes(key))
    manifest["headline"] = {"overall/roc_auc": {"candidate": "</td><script>"}}
    registry.store.put_bytes(key, json.dumps(manifest).encode())
    with pytest.raises(RegistryError, match=r"headline\.overall/roc_auc\.candidate"):
        compare_versions(registry, v1, v4)


def test_trend_lists_the_last_versions_in_order_with_their_status(history):
    registry, (v1, v2, v3, v4) = history["registry"], history["v"]
    rows = trend(registry, last=8)
    assert [r.version for r in rows] == [v1, v2, v3, v4]
    assert [r.status for r in rows] == ["promoted", "rejected", "production", "pending"]
    assert [r.gate for r in rows] == [True, False, True, True]
    assert rows[2].headline == registry.read_manifest(v3).headline and rows[3].headline == {}
    assert [r.version for r in trend(registry, last=2)] == [v3, v4]
    assert [r.production_version for r in rows] == [None, v1, v1, None]


@pytest.mark.parametrize("last", [0, -3, True, 2.5])
def test_trend_refuses_a_count_that_is_not_a_positive_whole_number(history, last):
    with pytest.raises(ValueError, match="last must be"):
        trend(history["registry"], last=last)


def test_trend_of_an_empty_registry_is_empty(tmp_path):
    assert trend(Registry(open_store(str(tmp_path / "store")), "relevance")) == []


def test_cli_compare_and_trend(history):
    from tailguard.cli import app

    registry, (v1, v2, v3, _) = history["registry"], history["v"]
    store = ["--store", registry.store.uri]
    run = CliRunner().invoke
    paired = run(app, ["models", "--compare", v1, v2, "--json", *store])
    assert paired.exit_code == 0, paired.output
    body = json.loads(paired.stdout)
    assert body["same_rows"] is True and body["v2"]["version"] == v2
    text = run(app, ["models", "--compare", v2, v3, *store])
    assert (
        text.exit_code == 0 and NOT_COMPARABLE in text.stdout and "not scored on the same rows" in text.stdout
    )
    shown = run(app, ["models", "--trend", "2", "--json", *store])
    assert [r["version"] for r in json.loads(shown.stdout)] == [v3, history["v"][3]]
    table = run(app, ["models", "--trend", *store])
    assert (
        table.exit_code == 0 and all(v in table.stdout for v in history["v"]) and "production" in table.stdout
    )
    for bad in (["--compare", v1, v1], ["--compare", v1, "nope/../x"]):
        failed = run(app, ["models", *bad, *store])
        assert failed.exit_code == 1 and "error:" in failed.output and "Traceback" not in failed.output
    both = run(app, ["models", "--trend", "--compare", v1, v2, *store])
    assert both.exit_code == 2 and "either --compare" in both.output
    assert run(app, ["models", "3", *store]).exit_code == 2  # N only with --trend


def test_viewer_index_shows_the_history_table_escaped(history):
    from tailguard.viewer import ReportViewer

    registry, versions = history["registry"], history["v"]
    registry.store.put_bytes(f"{registry.version_prefix(versions[2])}/reports/summary.html", b"<p>ok</p>")
    key = f"{registry.version_prefix(versions[3])}/manifest.json"
    manifest = json.loads(registry.store.get_bytes(key))
    manifest["created_at"] = "<script>alert(1)</script>"  # a hand-edited manifest: hostile text
    registry.store.put_bytes(key, json.dumps(manifest).encode())
    html = ReportViewer(registry.store).respond("/", None).body.decode()
    assert "<script>" not in html and "&lt;script&gt;alert(1)" in html
    table = html[html.index("<h3>History (last 4 versions)</h3>") :]
    at = [table.index(v) for v in versions]
    assert at == sorted(at)  # oldest first
    v3_row = table[at[2] :].split("</tr>")[0]
    auc = registry.read_manifest(versions[2]).headline["overall/roc_auc"]["candidate"]
    assert "<td>production</td>" in v3_row and f"<td>{auc:.3f}</td>" in v3_row


def test_trend_and_compare_show_a_non_default_policy_pass_as_needing_an_override(history, tmp_path):
    """A pass under --gate-overrides is no gate pass in the history either (DecisionRecord.gate_status)."""
    from tailguard.history import comparison_text, trend_text

    registry = history["registry"]
    relaxed = {**PASS, "policy_is_default": False, "policy_sha256": "e" * 64}
    evaluation = evaluate(history["a"], split(1)[1], {"candidate": history["s2"]}, EvalConfig(n_bootstrap=20))
    v5 = write(registry, tmp_path, "eeeeee", evaluation, decision=relaxed)
    (info,) = [r for r in trend(registry) if r.version == v5]
    assert info.gate is False and info.gate_label == "pass (non-default policy: needs a named override)"
    assert "pass (non-default policy: needs a named override)" in trend_text(trend(registry))
    text = comparison_text(compare_versions(registry, history["v"][0], v5))
    assert "gate pass (non-default policy: needs a named override)" in text and "gate pass  " in text
