"""The fine-tune flow (Prefect, test harness) training under Ray Train on the two-node cluster."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def harness(ray_cluster, tmp_path_factory):
    """A Prefect test server inside the cluster's loopback namespace (after ray_cluster entered it)."""
    saved = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness(server_startup_timeout=180):
            yield
    finally:
        if saved is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = saved


def _pairs(n_queries: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = [
        (
            f"sofa {q}",
            f"i{q}-{i}",
            f"{'red sofa' if i % 2 == 0 else 'blue lamp'} {rng.integers(100)}",
            int(i % 2 == 0),
        )
        for q in range(n_queries)
        for i in range(4)
    ]
    return pd.DataFrame(rows, columns=["query", "item_id", "item_title", "label"])


CONFIG = {"base": "tiny", "epochs": 1, "batch_size": 8, "threads": 1, "progress": False, "tensorboard": False,
          "checkpoint_every": 4, "valid_fraction": 0.0, "device": "cpu"}  # fmt: skip


def test_fine_tune_flow_trains_on_two_ray_workers_into_the_store(harness, ray_cluster, tmp_path, monkeypatch):
    from tailguard_flows.fine_tune import fine_tune

    monkeypatch.setenv("TAILGUARD_RAY_ADDRESS", ray_cluster.address)
    store = tmp_path / "store"
    (store / "runs/r1").mkdir(parents=True)
    _pairs(40).to_parquet(store / "runs/r1/train.parquet", index=False)
    prefix = fine_tune(
        "runs/r1/train.parquet", CONFIG, "runs/r1/fine-tune/model", store_uri=str(store), ray_workers=2
    )
    assert prefix == "runs/r1/fine-tune/model"
    model = store / prefix
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in model.iterdir()}
    assert (store / "runs/r1/fine-tune/model-checkpoints/LATEST").exists()
    # both ranks trained: 160 rows / 2 workers / batch 8 = 10 steps each (one process would take 20)
    assert json.loads((model / "tailguard_train.json").read_text())["result"]["steps"] == 10


def test_a_recipe_that_trains_several_models_is_refused_on_ray(harness, ray_cluster, tmp_path, monkeypatch):
    from tailguard_flows.fine_tune import fine_tune

    from tailguard.engine import EngineError

    monkeypatch.setenv("TAILGUARD_RAY_ADDRESS", ray_cluster.address)
    store = tmp_path / "store"
    (store / "runs/r2").mkdir(parents=True)
    _pairs(4).to_parquet(store / "runs/r2/train.parquet", index=False)
    with pytest.raises(EngineError, match="one cross-encoder"):
        fine_tune("runs/r2/train.parquet", {**CONFIG, "ensemble_size": 2}, "runs/r2/fine-tune/model",
                  store_uri=str(store), ray_workers=2)  # fmt: skip
    assert not (store / "runs/r2/fine-tune").exists()  # nothing half-written
