"""Issue 16 item 3: every evaluation can be re-checked from the version folder alone, byte for byte."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from tailguard.demo import DemoConfig, generate_batches
from tailguard.pipeline import EVAL_ROWS, TRAIN_KEYS, recheck_metrics
from tailguard.registry import ChecksumError, Registry, RegistryError
from tailguard.store import open_store


@pytest.fixture(scope="module")
def two_weeks(tmp_path_factory):
    return generate_batches(DemoConfig(rows=1500, batches=2, seed=11), tmp_path_factory.mktemp("recheck"))


@pytest.fixture(scope="module")
def flow_versions(two_weeks, tmp_path_factory, module_home):
    """Two retrain runs in one store: the second is scored against production (both score columns)."""
    from tailguard_flows.retrain import retrain

    with module_home(tmp_path_factory.mktemp("tg-recheck")) as home:
        # Bootstrap on: the recomputation must also redraw the same resamples (seeded from the manifest).
        first = retrain(data=str(two_weeks[0]), epochs=2, n_bootstrap=60, window_weeks=1)
        second = retrain(data=str(two_weeks[1]), epochs=1, n_bootstrap=60, seed=5, window_weeks=1)
    return Registry(open_store(str(home / "store")), "relevance"), first, second


def test_recompute_metrics_json_from_the_version_folder_bit_for_bit(flow_versions, tmp_path):
    registry, first, second = flow_versions
    for outcome, models in ((first, {"candidate"}), (second, {"candidate", "production"})):
        version = outcome["version"]
        manifest = registry.manifest(version)
        assert {EVAL_ROWS, TRAIN_KEYS, "metrics.json"} <= set(manifest["files"])
        assert manifest["evaluation"]["config"]["n_bootstrap"] == 60
        recomputed, stored = recheck_metrics(registry, version, tmp_path / version)
        assert recomputed == stored  # byte for byte
        assert hashlib.sha256(stored).hexdigest() == manifest["files"]["metrics.json"]["sha256"]
        assert set(json.loads(stored)["metrics"]) == models

    rows = pd.read_parquet(tmp_path / second["version"] / EVAL_ROWS)
    expected = {"query", "item_id", "label", "score", "score_production", "popularity", "query_frequency",
                "query_terms", "item_train_count"}  # fmt: skip
    assert expected <= set(rows.columns)
    metrics = json.loads((tmp_path / second["version"] / "metrics.json").read_bytes())
    assert len(rows) == metrics["data"]["rows"] and rows["query"].nunique() == metrics["data"]["queries"]
    # A reviewer recomputes any number by hand from the rows: e.g. the positives per popularity bucket.
    checked = 0
    for bucket in ("head", "torso", "tail", "cold"):
        info = metrics["slices"].get(f"popularity:{bucket}")
        if info is not None:
            assert info["positives"] == int(rows.loc[rows["popularity"] == bucket, "label"].sum())
            checked += 1
    assert checked >= 2


def test_cli_metrics_version_reproduces_and_reports_identical(flow_versions, tmp_path):
    from tailguard.cli import app

    registry, _, second = flow_versions
    out = tmp_path / "again.json"
    result = CliRunner().invoke(
        app, ["metrics", "--version", second["version"], "--store", registry.store.uri, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "identical" in result.output
    stored = registry.store.get_bytes(f"{registry.version_prefix(second['version'])}/metrics.json")
    assert out.read_bytes() == stored


def test_a_changed_eval_rows_file_is_refused_by_its_checksum(flow_versions, tmp_path):
    registry, first, _ = flow_versions
    key = f"{registry.version_prefix(first['version'])}/{EVAL_ROWS}"
    original = registry.store.get_bytes(key)
    registry.store.get_file(key, tmp_path / "stored.parquet")
    rows = pd.read_parquet(tmp_path / "stored.parquet")
    rows.loc[0, "score"] = 1.0 - rows.loc[0, "score"]  # one flipped score
    path = tmp_path / "tampered.parquet"
    rows.to_parquet(path, index=False)
    registry.store.put_file(key, path)
    try:
        with pytest.raises(ChecksumError, match=EVAL_ROWS):
            recheck_metrics(registry, first["version"], tmp_path / "x")
    finally:
        registry.store.put_bytes(key, original)


def test_a_version_without_eval_rows_says_it_cannot_be_rechecked(tmp_path):
    registry = Registry(open_store(str(tmp_path / "store")), "relevance")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    metrics = tmp_path / "metrics.json"
    metrics.write_text("{}")
    registry.write_version("20260101T000000Z-aaaaaa", model, {"metrics.json": metrics}, {})
    with pytest.raises(RegistryError, match="kept no eval_rows.parquet"):
        recheck_metrics(registry, "20260101T000000Z-aaaaaa", tmp_path / "x")
