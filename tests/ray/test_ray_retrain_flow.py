"""The retrain flow (Prefect, test harness) with engine 'ray' against 'pandas', on the two-node cluster."""

from __future__ import annotations

import json

import pytest

from tailguard.demo import DemoConfig, generate_batches
from tailguard.registry import Registry
from tailguard.store import open_store

pytestmark = pytest.mark.ray


def _metrics(home, version: str) -> dict:
    registry = Registry(open_store(str(home / "store")), "relevance")
    return json.loads(registry.store.get_bytes(f"models/relevance/versions/{version}/metrics.json"))


def _values(tree: dict, prefix: str = "") -> dict[str, float]:
    """Every number in metrics.json's `metrics` tree by its path."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}"
        if isinstance(value, dict):
            out |= _values(value, path)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[path] = float(value)
    return out


def test_retrain_on_ray_gives_the_pandas_metrics(harness, ray_cluster, tmp_path, monkeypatch):
    """The demo's two batches retrained in turn (the first is promoted, so production is scored the second
    time), on pandas and on ray: the ray runs validate on the cluster and score candidate and production by
    actors (counted by wrapping the real functions), and every metric agrees."""
    from tailguard_flows.retrain import retrain

    from tailguard import ray_engine

    calls: list[str] = []
    for name in ("validate", "score_frame"):
        real = getattr(ray_engine, name)
        monkeypatch.setattr(
            ray_engine, name, lambda *a, _n=name, _f=real, **k: calls.append(_n) or _f(*a, **k)
        )

    monkeypatch.setenv("TAILGUARD_RAY_ADDRESS", ray_cluster.address)
    monkeypatch.setenv("TAILGUARD_TORCH_THREADS", "1")
    monkeypatch.delenv("TAILGUARD_STORE", raising=False)
    batches = generate_batches(DemoConfig(rows=5000, batches=2, seed=7), tmp_path / "demo", "csv")
    runs: dict[str, list[dict]] = {}
    for engine in ("pandas", "ray"):
        home = tmp_path / engine
        monkeypatch.setenv("TAILGUARD_HOME", str(home))
        runs[engine] = [
            retrain(data=str(b), engine=engine, epochs=6, n_bootstrap=50, approval="auto") for b in batches
        ]
        metrics = _metrics(home, runs[engine][1]["version"])
        assert set(metrics["metrics"]) == {"candidate", "production"}
        runs[engine].append(metrics)
    assert calls == ["validate", "score_frame", "validate", "score_frame", "score_frame"]
    pandas_values, ray_values = _values(runs["pandas"][2]["metrics"]), _values(runs["ray"][2]["metrics"])
    assert pandas_values.keys() == ray_values.keys() and len(pandas_values) > 50
    # Scores differ by float noise of batch shapes (< 1e-6): metrics agree to well within that.
    far = {
        k: (pandas_values[k], ray_values[k])
        for k in pandas_values
        if abs(pandas_values[k] - ray_values[k]) > 1e-5
    }
    assert not far, list(far.items())[:5]
    assert [r["promoted"] for r in runs["pandas"][:2]] == [r["promoted"] for r in runs["ray"][:2]]
