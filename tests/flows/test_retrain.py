"""The retrain flow end to end under real Prefect, on generated data with a known long tail."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tailguard.demo import DemoConfig, generate_batches
from tailguard.registry import Registry
from tailguard.store import open_store, tree_digest


@pytest.fixture(scope="module")
def demo_batches(tmp_path_factory):
    """Two weekly batches of 4k rows over the same catalogue."""
    return generate_batches(DemoConfig(rows=4000, batches=2, seed=7), tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def export_batches(demo_batches, tmp_path_factory):
    """The same batches as a real-world export with its own column names (read via --columns)."""
    out = tmp_path_factory.mktemp("export")
    paths = []
    for path in demo_batches:
        frame = pd.read_csv(path).rename(columns={"query": "search_term", "item_id": "product_uid"})
        frame.to_csv(out / path.name, index=False)
        paths.append(out / path.name)
    return paths


EXPORT_COLUMNS = "query=search_term,item_id=product_uid"


def _artifacts(key: str) -> list:
    """Artifacts with this key, read back through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def _registry(home) -> Registry:
    return Registry(open_store(str(home / "store")), "relevance")


def test_retrain_twice_first_promotes_then_judges_candidate_vs_production(tailguard_home, export_batches):
    from tailguard_flows.retrain import retrain

    first = retrain(data=str(export_batches[0]), columns=EXPORT_COLUMNS, epochs=6, n_bootstrap=200)
    registry = _registry(tailguard_home)
    assert first["promoted"] is True, first["decision"]
    pointer = registry.production()
    assert pointer["version"] == first["version"]
    manifest = registry.manifest(first["version"])
    assert manifest["data"]["rows"] == 4000
    assert {"model/model.safetensors", "metrics.json"} <= set(manifest["files"])
    assert not any(k.endswith((".bin", ".pkl", ".pt")) for k in manifest["files"])  # safetensors only
    metrics = json.loads(
        registry.store.get_bytes(f"models/relevance/versions/{first['version']}/metrics.json")
    )
    # The tiny model learns the generated relevance: well above chance on held-out queries.
    # (measured: 0.66-0.84 over seeds and sizes; chance is 0.5)
    assert metrics["metrics"]["candidate"]["overall"]["roc_auc"]["value"] > 0.62
    assert "production" not in metrics["metrics"]  # nothing to compare with on the first run
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # promotions of this model take one slot of this limit
        assert client.read_global_concurrency_limit_by_name("promote-relevance").limit == 1

    second = retrain(data=str(export_batches[1]), columns=EXPORT_COLUMNS, epochs=6, n_bootstrap=200)
    metrics2 = json.loads(
        registry.store.get_bytes(f"models/relevance/versions/{second['version']}/metrics.json")
    )
    assert set(metrics2["metrics"]) == {"candidate", "production"}  # same eval rows, both models
    overall = metrics2["comparison"]["slices"]["overall"]["roc_auc"]
    assert overall["ci_low"] <= overall["value"] <= overall["ci_high"]
    # Drift of the new batch against the batch production was trained on is recorded with the version.
    drift = registry.manifest(second["version"])["drift"]
    assert drift["reference_batch_id"] == manifest["data"]["batch_id"]
    assert 0.0 <= drift["share_drifted_columns"] <= 1.0
    # What `tailguard retrain` and `tailguard demo` print for this outcome (a crash here once broke the demo).
    from tailguard.summary import outcome_text

    said = "PROMOTED" if second["promoted"] else "NOT PROMOTED"
    console = outcome_text(second)
    assert f"candidate {second['version']}: {said}" in console
    # Checks read as in the review: point estimate with its interval, then the rule in words.
    assert "candidate − production = " in console and "95% CI [" in console
    expected = second["version"] if second["promoted"] else first["version"]
    assert registry.production()["version"] == expected
    actions = sorted(a["action"] for a in registry.audit())
    assert actions == sorted(["promote", "promote" if second["promoted"] else "reject"])
    listed = {v["version"]: v for v in registry.list_versions()}
    assert {first["version"], second["version"]} <= set(listed)
    # The listing carries the gate verdict and headline numbers, equal to metrics.json's.
    row = listed[second["version"]]
    assert row["gate"] is bool(second["decision"]["promote"]) and row["balance"] == "random_under"
    headline = row["headline"]["overall/roc_auc"]
    assert headline["candidate"] == metrics2["metrics"]["candidate"]["overall"]["roc_auc"]["value"]
    assert headline["production"] == metrics2["metrics"]["production"]["overall"]["roc_auc"]["value"]
    # The reviewer's pack is in Prefect: the slice table with intervals and the outcome.
    review = _artifacts("candidate-review")
    assert any(second["version"] in (a.data or "") and "popularity:tail" in (a.data or "") for a in review)
    assert any(second["version"] in (a.data or "") for a in _artifacts("retrain-outcome"))
    # Per-epoch training table with the loss/validation plot.
    assert any("data:image/png;base64," in (a.data or "") for a in _artifacts("fine-tune-summary"))


def test_refused_batch_is_quarantined_and_nothing_else_changes(tailguard_home, demo_batches, tmp_path):
    from tailguard_flows.retrain import BatchRejected, retrain

    retrain(data=str(demo_batches[0]), epochs=1, n_bootstrap=0)
    store = open_store(str(tailguard_home / "store"))
    before = tree_digest(store, exclude_prefix="quarantine/")
    bad = pd.read_csv(demo_batches[1])
    bad.loc[bad.index[:7], "label"] = 2  # labels outside {0, 1}
    bad_path = tmp_path / "bad.csv"
    bad.to_csv(bad_path, index=False)
    with pytest.raises(BatchRejected) as info:
        retrain(data=str(bad_path), epochs=1)
    assert "label" in str(info.value)
    assert tree_digest(store, exclude_prefix="quarantine/") == before
    keys = store.list_keys("quarantine/")
    assert any(k.endswith("/validation.json") for k in keys)
    assert any(k.endswith("/input/bad.csv") for k in keys)
    assert any("label_binary" in (a.data or "") for a in _artifacts("batch-validation"))
    assert not list(tailguard_home.glob("run-*"))  # no scratch folder left behind, refused run included


def test_bad_balancing_option_fails_before_the_batch_is_read(tailguard_home, demo_batches):
    """A typo in an option must not accept (record) the batch: the rerun would be refused as a duplicate."""
    from tailguard_flows.retrain import retrain

    with pytest.raises(ValueError, match="ratio=0") as info:
        retrain(data=str(demo_batches[0]), balance="random_under", balance_options={"ratio": 0}, epochs=1)
    assert "0 < ratio <= 1000" in str(info.value)
    store = open_store(str(tailguard_home / "store"))
    assert store.list_keys("") == []  # nothing accepted, quarantined or versioned
    with pytest.raises(ValueError, match="invalid train_options"):
        retrain(data=str(demo_batches[0]), train_options={"loss": "no_such_loss"}, epochs=1)
    assert store.list_keys("") == []
