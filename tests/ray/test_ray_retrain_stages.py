"""The retrain flow's load and validate stages with engine 'ray' against 'pandas', on the two-node cluster."""

from __future__ import annotations

import pandas as pd
import pytest

from tailguard import pipeline
from tailguard.demo import DemoConfig, generate_batches
from tailguard.pipeline import RetrainParams

pytestmark = pytest.mark.ray


def _comparable(record) -> dict:
    """A ValidationRecord's fields that do not depend on wall time, GX run ids or the engine's summary."""
    out = record.to_dict()
    for key in ("elapsed_s", "gx_results", "summary"):
        out.pop(key, None)
    return out


def _stages(engine: str, data, tmp_path) -> tuple[pipeline.LoadedBatch, object]:
    ctx = pipeline.RunContext(
        settings=pipeline.get_settings(), run_id=f"r-{engine}", work_dir=tmp_path / engine
    )
    params = RetrainParams(data=str(data), engine=engine)
    batch = pipeline.load(params, ctx)
    return batch, pipeline.validate(batch, ctx, params)


def test_engine_ray_loads_and_validates_as_pandas_and_collects_the_same_frame(
    ray_cluster, tmp_path, monkeypatch
):
    monkeypatch.setenv("TAILGUARD_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("TAILGUARD_RAY_ADDRESS", ray_cluster.address)
    data = generate_batches(DemoConfig(rows=2500, batches=1, seed=11), tmp_path / "demo", "csv")[0]
    on_pandas, expected = _stages("pandas", data, tmp_path)
    on_ray, got = _stages("ray", data, tmp_path)
    assert on_ray.frame is None and on_ray.ray_batch is not None  # validated on the cluster
    assert expected.success and got.success
    assert _comparable(got) == _comparable(expected)
    assert on_ray.batch_id == on_pandas.batch_id
    collected = pipeline.collect(on_ray)
    assert collected.ray_batch is None
    pd.testing.assert_frame_equal(collected.frame, on_pandas.frame, check_like=False)
    assert pipeline.collect(on_pandas) is on_pandas


def test_engine_ray_refuses_a_bad_batch_with_the_pandas_rules(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("TAILGUARD_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("TAILGUARD_RAY_ADDRESS", ray_cluster.address)
    data = generate_batches(DemoConfig(rows=1200, batches=1, seed=5), tmp_path / "demo", "csv")[0]
    df = pd.read_csv(data, dtype=str, keep_default_na=False)
    df.loc[[3, 900], "price"] = "-1"
    df.loc[[20], "item_title"] = "\u200b"
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    _, expected = _stages("pandas", bad, tmp_path)
    _, got = _stages("ray", bad, tmp_path)
    assert not expected.success and not got.success
    assert _comparable(got) == _comparable(expected)
    assert {f["rule"] for f in got.failures} >= {"price_non_negative"}
    # a file the contract refuses is a contract refusal on both engines, naming file and line
    broken = tmp_path / "broken.csv"
    broken.write_text(bad.read_text().replace("\n", "\nextra,cell,too,many,,,,,,,,,,\n", 1))
    _, expected = _stages("pandas", broken, tmp_path)
    _, got = _stages("ray", broken, tmp_path)
    assert expected.stage == got.stage == "contract"
    assert got.failures[0]["rule"] == expected.failures[0]["rule"] == "field_count"


def test_collecting_a_batch_over_the_one_process_cap_is_one_clear_error(ray_cluster, tmp_path, monkeypatch):
    """The cluster holds any size; the flow's process does not: TAILGUARD_MAX_ROWS is checked before the
    validated batch is collected (one size_limit error, not an out-of-memory kill)."""
    from tailguard.contract import InputTooLarge

    monkeypatch.setenv("TAILGUARD_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("TAILGUARD_RAY_ADDRESS", ray_cluster.address)
    data = generate_batches(DemoConfig(rows=1500, batches=1, seed=2), tmp_path / "demo", "csv")[0]
    on_ray, record = _stages("ray", data, tmp_path)
    assert record.success
    monkeypatch.setenv("TAILGUARD_MAX_ROWS", "1000")  # the file itself was read under the default cap
    with pytest.raises(InputTooLarge, match=r"holds 1,500 rows.*over the limit 1,000"):
        pipeline.collect(on_ray)
