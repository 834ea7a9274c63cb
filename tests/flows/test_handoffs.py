"""Issue 12 items 7-9 under real Prefect: late failures, one-class eval splits, what the flow writes
(manifest, model card, validation.json) and the promotion lock the CLI shares with the flow."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tailguard.data import accept_batch, batch_id_for, fingerprint_files, split_by_query
from tailguard.registry import Registry
from tailguard.store import open_store

WORDS = ["drill", "hammer", "paint", "brush", "lamp", "cable", "pipe", "valve", "saw", "glue", "tile", "door"]


def one_class_eval_batch(path, rows=1200, positives=12, seed=0, eval_positives=0):
    """rows/10 queries x 10 rows, `positives` clicks on queries that split_by_query(0.2, 0) puts in
    training, and `eval_positives` on held-out queries (0: the eval split has one class)."""
    rng = np.random.default_rng(seed)
    queries = [f"{WORDS[i % 12]} {WORDS[(i * 7 + 3) % 12]} {i}" for i in range(rows // 10)]
    items = rng.choice([f"{i:06d}" for i in range(400)], size=rows)
    frame = pd.DataFrame(
        {
            "query": np.repeat(queries, 10),
            "item_id": items,
            "item_title": [f"{WORDS[int(x) % 12]} {WORDS[int(x) % 5]} model {x}" for x in items],
            "label": 0,
        }
    )
    train, eval_ = split_by_query(frame, 0.2, 0)
    for side, count in ((train, positives), (eval_, eval_positives)):
        queries_of_side = list(dict.fromkeys(side["query"]))
        for k in rng.choice(len(queries_of_side), size=count, replace=False):
            frame.loc[frame.index[frame["query"] == queries_of_side[k]][0], "label"] = 1
    frame.to_csv(path, index=False)
    return path


def _store(home):
    return open_store(str(home / "store"))


def _registry(home) -> Registry:
    return Registry(_store(home), "relevance")


@pytest.mark.parametrize("seed", [0, 5])
def test_one_class_eval_split_stores_candidate_with_verdict_and_degraded_reports(
    tailguard_home, tmp_path, seed
):
    """Item 7's example (seed 0) and a second draw: 1,200 rows, 12 positives, none in the eval split."""
    from tailguard_flows.retrain import BatchRejected, retrain

    path = one_class_eval_batch(tmp_path / "clicks.csv", seed=seed)
    eval_labels = split_by_query(pd.read_csv(path, dtype={"item_id": str}), 0.2, 0)[1]["label"]
    assert len(eval_labels) > 0 and eval_labels.sum() == 0  # the shape the issue describes

    out = retrain(data=str(path), epochs=1, n_bootstrap=20)
    registry = _registry(tailguard_home)
    assert out["promoted"] is False and registry.production() is None
    manifest = registry.manifest(out["version"])
    assert manifest["decision"]["promote"] is False
    assert any("undefined" in r for r in manifest["decision"]["reasons"])
    prefix = f"models/relevance/versions/{out['version']}"
    summary = registry.store.get_bytes(f"{prefix}/reports/summary.html").decode()
    assert "classification_overall: not rendered (undefined (one class: all " in summary
    assert f"all {len(eval_labels)} rows have label 0" in summary
    assert not registry.store.exists(f"{prefix}/reports/classification_overall.html")
    # The stored result makes the batch accepted: the same file again is a duplicate now.
    record = json.loads(registry.store.get_bytes(f"batches/{manifest['data']['batch_id']}/fingerprint.json"))
    assert record["version"] == out["version"]
    with pytest.raises(BatchRejected, match="batch_not_seen_before"):
        retrain(data=str(path), epochs=1, n_bootstrap=0)


def test_late_failure_does_not_consume_the_batch(tailguard_home, tmp_path, monkeypatch):
    """A run that fails after validation (here: report rendering) records nothing; the rerun proceeds."""
    from tailguard_flows.retrain import retrain

    from tailguard import pipeline

    path = one_class_eval_batch(tmp_path / "clicks.csv", seed=1)
    real = pipeline.render_reports

    def broken(*args, **kwargs):
        raise RuntimeError("reports crashed (fault injected)")

    monkeypatch.setattr(pipeline, "render_reports", broken)
    with pytest.raises(RuntimeError, match="fault injected"):
        retrain(data=str(path), epochs=1, n_bootstrap=0)
    store = _store(tailguard_home)
    assert store.list_keys("batches/") == [] and store.list_keys("models/") == []
    monkeypatch.setattr(pipeline, "render_reports", real)
    out = retrain(data=str(path), epochs=1, n_bootstrap=0)
    assert out["notes"] == [] and _registry(tailguard_home).manifest(out["version"])


def test_rerun_of_batch_accepted_without_stored_version_proceeds_and_says_so(tailguard_home, tmp_path):
    """A store written before results were tracked: fingerprint.json exists, no version came of it."""
    from tailguard_flows.retrain import retrain

    path = one_class_eval_batch(tmp_path / "clicks.csv", seed=2)
    store = _store(tailguard_home)
    batch_id = batch_id_for(fingerprint_files([path]))
    accept_batch(store, batch_id, [path], {"batch_id": batch_id, "accepted_at": "2026-11-01T00:00:00+00:00"})
    out = retrain(data=str(path), epochs=1, n_bootstrap=0)
    assert len(out["notes"]) == 1 and "no version was stored" in out["notes"][0]
    assert batch_id in out["notes"][0]
    record = json.loads(store.get_bytes(f"batches/{batch_id}/fingerprint.json"))
    assert record["version"] == out["version"]
    assert [w["rule"] for w in record["warnings"]] == ["batch_rerun_after_failed_run"]


def test_model_card_renders_every_section_from_the_manifest_the_flow_wrote(tailguard_home, tmp_path):
    from tailguard_flows.retrain import retrain

    path = one_class_eval_batch(tmp_path / "clicks.csv", positives=60, eval_positives=15, seed=3)
    out = retrain(data=str(path), epochs=1, n_bootstrap=0, approval="auto")
    registry = _registry(tailguard_home)
    manifest = registry.manifest(out["version"])
    typed = registry.read_manifest(out["version"])
    assert typed.data.batch_id == manifest["data"]["batch_id"] and typed.data.rows == 1200
    card = registry.store.get_bytes(f"models/relevance/versions/{out['version']}/model_card.md").decode()
    for title in ("## Training data", "## Configuration", "## Metrics", "## Gate decision",
                  "## Stage timings (s)", "## Files"):  # fmt: skip
        assert title in card
    assert f"| batch_id | {manifest['data']['batch_id']} |" in card and "| rows | 1200 |" in card
    assert "| epochs | 1 |" in card and "| balance | random_under |" in card
    assert set(manifest["timings_s"]) >= {"load", "validate", "train", "evaluate"}
    for stage, seconds in manifest["timings_s"].items():
        assert f"| {stage} | {json.dumps(seconds)} |" in card
    for name, values in manifest["headline"].items():
        shown = "-" if values["candidate"] is None else f"{values['candidate']:.4f}"
        assert f"| {name} | {shown} |" in card
    assert manifest["headline"]  # positives in eval: the headline metrics are defined


def test_cli_validate_and_flow_write_one_validation_json_for_the_same_refusal(tailguard_home, tmp_path):
    from tailguard_flows.retrain import BatchRejected, retrain

    from tailguard.cli import app

    path = tmp_path / "export.csv"
    path.write_text("query,item_id,item_title\ndrill,0001,cordless drill\n")  # no label column
    cli_json = tmp_path / "cli.json"
    result = CliRunner().invoke(app, ["validate", "--data", str(path), "--json", str(cli_json)])
    assert result.exit_code == 2
    with pytest.raises(BatchRejected):
        retrain(data=str(path), epochs=1)
    store = _store(tailguard_home)
    [key] = [k for k in store.list_keys("quarantine/") if k.endswith("validation.json")]
    flow_json = json.loads(store.get_bytes(key))
    assert flow_json == json.loads(cli_json.read_text())
    assert flow_json["stage"] == "contract" and flow_json["status"] == "failed"
    assert flow_json["failures"][0]["column"] == "label" and flow_json["batch_id"] in key


def _fake_model(tmp_path, tag):
    model = tmp_path / f"model-{tag}"
    model.mkdir()
    (model / "model.safetensors").write_bytes(tag.encode() * 64)
    return model


def test_cli_promote_and_rollback_take_the_flows_promotion_lock(
    tailguard_home, tmp_path, monkeypatch, lock_held_elsewhere
):
    from prefect.settings import PREFECT_API_URL
    from tailguard_flows.cli import app

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # a configured server (the harness)
    monkeypatch.setenv("TAILGUARD_PROMOTION_LOCK_TIMEOUT_S", "1")
    registry = _registry(tailguard_home)
    versions = []
    for tag in ("a", "b"):
        version = registry.new_version_id()
        registry.write_version(
            version,
            _fake_model(tmp_path, tag),
            {},
            {"decision": {"promote": True, "policy_is_default": True}},
        )
        versions.append(version)
    runner = CliRunner()
    with lock_held_elsewhere("relevance"):  # another promotion (the flow's task) in progress
        blocked = runner.invoke(app, ["promote", versions[0], "--by", "ana"])
        assert blocked.exit_code == 1 and "promotion lock 'promote-relevance'" in blocked.output
        assert registry.production() is None and registry.audit() == []
    # The free slot may take seconds to grant on a busy SQLite server (503 -> 2 s client retries).
    monkeypatch.setenv("TAILGUARD_PROMOTION_LOCK_TIMEOUT_S", "60")
    first = runner.invoke(app, ["promote", versions[0], "--by", "ana"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["promote", versions[1], "--by", "bo"])
    assert second.exit_code == 0, second.output
    rolled = runner.invoke(app, ["rollback", "--by", "oncall", "--expect", versions[1]])
    assert rolled.exit_code == 0 and registry.production()["version"] == versions[0]


def _report_inputs(labels_by_bucket: dict[str, list[int]], seed: int = 0):
    """eval rows, popularity slices, probability scores and a minimal evaluation for evaluation_reports."""
    rng = np.random.default_rng(seed)
    buckets = [b for b, labels in labels_by_bucket.items() for _ in labels]
    labels = [y for labels in labels_by_bucket.values() for y in labels]
    n = len(labels)
    eval_df = pd.DataFrame(
        {"query": [f"q{i // 5}" for i in range(n)], "item_id": [f"{i:05d}" for i in range(n)],
         "item_title": ["t"] * n, "label": labels}
    )  # fmt: skip
    slices = pd.DataFrame({"popularity": buckets})
    scores = {"candidate": rng.uniform(0, 1, len(labels)), "production": rng.uniform(0, 1, len(labels))}
    evaluation = {
        "models": ["candidate", "production"],
        "metrics": {"candidate": {}, "production": {}},
        "config": {"threshold": 0.5},
        "slices": {
            f"popularity:{b}": {"too_small": False, "rows": len(v)} for b, v in labels_by_bucket.items()
        },  # fmt: skip
    }
    return eval_df, slices, scores, evaluation


@pytest.mark.parametrize(
    ("labels_by_bucket", "rendered", "skipped"),
    [
        # tail all positive, cold all negative: two one-class slices next to a judged head
        ({"head": [0, 1] * 30, "tail": [1] * 40, "cold": [0] * 25}, {"head"}, {"tail": 1, "cold": 0}),
        # torso one class among two judged buckets
        ({"head": [0, 0, 1] * 20, "torso": [0] * 30, "tail": [1, 0] * 20}, {"head", "tail"}, {"torso": 0}),
    ],
)
def test_one_class_slices_degrade_to_undefined_pages(tmp_path, labels_by_bucket, rendered, skipped):
    from tailguard.reports import evaluation_reports

    eval_df, slices, scores, evaluation = _report_inputs(labels_by_bucket)
    pages = evaluation_reports(eval_df, scores, evaluation, {"promote": False}, tmp_path, slices=slices)
    assert {k.removeprefix("classification_popularity_") for k in pages if "popularity" in k} == rendered
    summary = (tmp_path / "summary.html").read_text()
    for bucket, label in skipped.items():
        n = len(labels_by_bucket[bucket])
        why = f"undefined (one class: all {n} rows have label {label})"
        assert f"popularity:{bucket}: not rendered ({why})" in summary


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_overall_renders_summary_without_evidently_page(tmp_path, label):
    from tailguard.reports import evaluation_reports

    eval_df, slices, scores, evaluation = _report_inputs({"head": [label] * 30, "tail": [label] * 20})
    pages = evaluation_reports(eval_df, scores, evaluation, {"promote": False}, tmp_path, slices=slices)
    assert set(pages) == {"summary"}
    summary = (tmp_path / "summary.html").read_text()
    why = f"undefined (one class: all 50 rows have label {label})"
    assert f"classification_overall: not rendered ({why})" in summary
