"""The fine-tune flow (Prefect, test harness) training under Ray Train on the two-node cluster."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.ray


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


def test_fine_tune_flow_submits_training_as_a_ray_job(harness, ray_cluster, tmp_path, monkeypatch):
    """TAILGUARD_RAY_JOB_ADDRESS: the training's driver runs inside the cluster as a Ray job; the flow
    submits and waits, the model lands in the store as on the other paths, and no credential of the
    submitting worker travels with the job (its env_vars are readable in the job table)."""
    from ray.job_submission import JobSubmissionClient
    from tailguard_flows.fine_tune import fine_tune

    monkeypatch.setenv("TAILGUARD_RAY_ADDRESS", ray_cluster.address)
    monkeypatch.setenv("TAILGUARD_RAY_JOB_ADDRESS", ray_cluster.dashboard)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret")
    store = tmp_path / "store"
    (store / "runs/r3").mkdir(parents=True)
    _pairs(40).to_parquet(store / "runs/r3/train.parquet", index=False)
    prefix = fine_tune("runs/r3/train.parquet", CONFIG, "runs/r3/fine-tune/model", store_uri=str(store),
                       ray_workers=2)  # fmt: skip
    model = store / prefix
    assert json.loads((model / "tailguard_train.json").read_text())["result"]["steps"] == 10
    client = JobSubmissionClient(ray_cluster.dashboard)
    ours = [j for j in client.list_jobs() if "runs/r3/fine-tune/model" in (j.entrypoint or "")]
    assert len(ours) == 1 and str(ours[0].status).endswith("SUCCEEDED")
    assert "tailguard.ray_engine train" in ours[0].entrypoint
    shipped = (ours[0].runtime_env or {}).get("env_vars", {})
    assert "worker-secret" not in json.dumps(shipped) and not any(k.startswith("AWS_") for k in shipped)
    # The address set but no workers asked for: refused, rather than training here without saying so.
    monkeypatch.delenv("TAILGUARD_RAY_TRAIN_WORKERS", raising=False)
    with pytest.raises(ValueError, match="no Ray Train workers"):
        fine_tune("runs/r3/train.parquet", CONFIG, "runs/r3/fine-tune/again", store_uri=str(store))
    assert not (store / "runs/r3/fine-tune/again").exists()


def test_a_failed_or_unreachable_ray_job_is_one_clear_error(harness, ray_cluster, tmp_path, monkeypatch):
    from tailguard.ray_engine import RayEngineError, submit_train

    store = tmp_path / "store"
    store.mkdir()
    with pytest.raises(RayEngineError, match=r"Ray job .* FAILED: .*"):  # no such training file
        submit_train(ray_cluster.dashboard, str(store / "missing.parquet"), CONFIG, str(store), "m", "c")
    assert not (store / "m").exists()  # nothing half-written
    with pytest.raises(RayEngineError, match="cannot submit the Ray job to http://127.0.0.1:9"):
        submit_train("http://127.0.0.1:9", "x", CONFIG, str(store), "m", "c")
    # Not a dashboard URL, or one carrying a password: refused before anything is sent, password unshown.
    for bad in ("this://x", "ray://127.0.0.1:10001", "127.0.0.1:8265", "http://user:pw@127.0.0.1:8265"):
        with pytest.raises(RayEngineError, match="must be http") as err:
            submit_train(bad, "x", CONFIG, str(store), "m", "c")
        assert "pw" not in str(err.value)
