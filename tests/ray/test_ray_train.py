"""model.train under Ray Train's TorchTrainer on the two-node cluster: two CPU workers (gloo DDP)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tailguard import ray_engine

pytestmark = pytest.mark.ray


def _pairs(n_queries: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        for i in range(4):
            label = int(i % 2 == 0)
            title = f"{'red sofa' if label else 'blue lamp'} {rng.integers(100)}"
            rows.append((f"sofa {q}", f"i{q}-{i}", title, label))
    return pd.DataFrame(rows, columns=["query", "item_id", "item_title", "label"])


def test_two_workers_train_and_store_the_model_and_checkpoints(ray_cluster, tmp_path):
    data = tmp_path / "train.parquet"
    _pairs(40, seed=1).to_parquet(data, index=False)
    store = tmp_path / "store"
    config = {"epochs": 1, "batch_size": 8, "threads": 1, "progress": False, "tensorboard": False,
              "checkpoint_every": 4, "valid_fraction": 0.0, "device": "cpu"}  # fmt: skip
    out = ray_engine.train(str(data), config, str(store), "runs/r1/model", "runs/r1/checkpoints", workers=2)
    assert out["workers"] == 2 and out["use_gpu"] is False
    names = {k.rsplit("/", 1)[-1] for k in out["model_keys"]}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names
    assert (store / "runs/r1/checkpoints/LATEST").exists()
    meta = json.loads((store / "runs/r1/model/tailguard_train.json").read_text())
    # Both ranks trained: 160 rows / 2 workers / batch 8 = 10 steps each, where one process takes 20.
    assert meta["result"]["steps"] == 10
    # A group restarted after a failure (or a rerun) resumes from the newest checkpoint in the store: here
    # the final one (step 10, written at the end), so nothing is trained twice.
    again = ray_engine.train(str(data), config, str(store), "runs/r1/model", "runs/r1/checkpoints", workers=2)
    resumed = json.loads((store / "runs/r1/model/tailguard_train.json").read_text())
    assert resumed["result"]["resumed_from_step"] == 10 and resumed["result"]["steps"] == 10
    assert again["model_keys"] == out["model_keys"]


def test_train_failure_is_one_clear_error(ray_cluster, tmp_path):
    """A batch no node can read fails the group (after its one retry) with one RayEngineError."""
    config = {"epochs": 1, "batch_size": 8, "threads": 1, "progress": False, "tensorboard": False}
    with pytest.raises(ray_engine.RayEngineError, match="Ray Train failed"):
        ray_engine.train(str(tmp_path / "missing.parquet"), config, str(tmp_path / "s"), "m", "c", workers=2)


def _train_worker_pids() -> list[int]:
    """PIDs of Ray Train's worker actors (their process title names the worker class)."""
    from pathlib import Path

    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"ray::") and b"TrainWorker" in cmd:
            pids.append(int(entry.name))
    return pids


def test_a_worker_killed_mid_training_resumes_from_the_stores_checkpoint(ray_cluster, tmp_path):
    """SIGKILL one of the two workers once a checkpoint is in the store: Ray Train restarts the group
    (max_failures=1), every worker pulls the newest checkpoint, and training ends at the same step count."""
    import os
    import signal
    import threading
    import time

    data = tmp_path / "train.parquet"
    _pairs(100, seed=2).to_parquet(data, index=False)
    store = tmp_path / "store"
    config = {"epochs": 8, "batch_size": 8, "threads": 1, "progress": False, "tensorboard": False,
              "checkpoint_every": 5, "valid_fraction": 0.0, "device": "cpu"}  # fmt: skip
    killed: list[int] = []

    def kill_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (store / "runs/k/checkpoints/LATEST").exists():
            time.sleep(0.1)
        pids = _train_worker_pids()
        if pids:
            os.kill(pids[-1], signal.SIGKILL)
            killed.append(pids[-1])

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    ray_engine.train(str(data), config, str(store), "runs/k/model", "runs/k/checkpoints", workers=2)
    killer.join(5)
    assert killed, "no Ray Train worker was found to kill"
    result = json.loads((store / "runs/k/model/tailguard_train.json").read_text())["result"]
    # 400 rows / 2 workers / batch 8 = 25 steps per epoch, 8 epochs: the restarted group ends at step 200
    # having resumed from a checkpoint written before the kill.
    assert result["steps"] == 200
    assert result["resumed_from_step"] is not None and 0 < result["resumed_from_step"] < 200
