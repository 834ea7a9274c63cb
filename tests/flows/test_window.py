"""Issue 16 item 2: train on the accepted batches of the last N weeks, evaluate on the newest batch only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from tailguard.data import accept_batch, batch_id_for, fingerprint_files
from tailguard.demo import DemoConfig, generate_batches
from tailguard.pipeline import EVAL_ROWS, TRAIN_KEYS, new_context, window_records
from tailguard.registry import Registry
from tailguard.store import open_store


@pytest.fixture(scope="module")
def four_weeks(tmp_path_factory):
    return generate_batches(DemoConfig(rows=1200, batches=4, seed=21), tmp_path_factory.mktemp("weeks"))


def _accept(store, path, days_ago: float, columns: str | None = None) -> dict:
    """Record a batch as accepted `days_ago` days ago, the way pipeline.accept does."""
    fp = fingerprint_files([path])
    meta = {**fp, "batch_id": batch_id_for(fp), "uri": str(path), "columns": columns,
            "accepted_at": (datetime.now(UTC) - timedelta(days=days_ago)).isoformat()}  # fmt: skip
    accept_batch(store, meta["batch_id"], [path], meta)
    return meta


def test_three_weeks_are_trained_on_and_listed_and_eval_is_the_new_week_only(
    tailguard_home, four_weeks, tmp_path
):
    from tailguard_flows.retrain import retrain

    store = open_store(str(tailguard_home / "store"))
    old = _accept(store, four_weeks[0], days_ago=28.2)  # outside a 3-week window
    # Week 2 arrived as an export with its own column names: the window reads it with its mapping.
    export = tmp_path / "export-week2.csv"
    pd.read_csv(four_weeks[1]).rename(columns={"query": "search_term"}).to_csv(export, index=False)
    week2 = _accept(store, export, days_ago=14.3, columns="query=search_term")
    week3 = _accept(store, four_weeks[2], days_ago=6.9)

    outcome = retrain(data=str(four_weeks[3]), epochs=1, n_bootstrap=0, window_weeks=3)
    registry = Registry(store, "relevance")
    manifest = registry.manifest(outcome["version"])
    window = manifest["training_window"]
    assert window["weeks"] == 3
    listed = [(b["batch_id"], b["fingerprint_sha256"], b["role"]) for b in window["batches"]]
    new_fp = fingerprint_files([four_weeks[3]])
    assert listed == [
        (week2["batch_id"], week2["sha256"], "window"),
        (week3["batch_id"], week3["sha256"], "window"),
        (batch_id_for(new_fp), new_fp["sha256"], "new"),
    ]
    assert old["batch_id"] not in json.dumps(manifest)
    assert [b["rows"] for b in window["batches"]] == [1200, 1200, 1200]
    card = store.get_bytes(f"{registry.version_prefix(outcome['version'])}/model_card.md").decode()
    assert "## Training window" in card
    for b in window["batches"]:
        assert b["week"] in card and b["batch_id"] in card

    folder = registry.fetch_files(outcome["version"], [EVAL_ROWS, TRAIN_KEYS], tmp_path / "v")
    eval_rows, train = pd.read_parquet(folder / EVAL_ROWS), pd.read_parquet(folder / TRAIN_KEYS)
    newest = pd.read_csv(four_weeks[3], dtype={"query": str, "item_id": str}, keep_default_na=False)
    assert set(eval_rows["query"]) <= set(newest["query"])  # evaluated on the new week's queries only
    assert not set(eval_rows["query"]) & set(train["query"])  # and none of them was trained on
    # Training rows: the new week's non-eval rows plus weeks 2 and 3 minus their rows of eval queries.
    frames = [pd.read_csv(p, dtype={"query": str}, keep_default_na=False) for p in four_weeks[1:]]
    held_out = set(eval_rows["query"])
    assert len(train) == sum(int((~f["query"].isin(held_out)).sum()) for f in frames)


def test_window_membership_by_acceptance_time(tailguard_home, four_weeks):
    store = open_store(str(tailguard_home / "store"))
    ages = {0.1: four_weeks[0], 7.4: four_weeks[1], 13.9: four_weeks[2]}  # days before `now`
    ids = {age: _accept(store, path, age)["batch_id"] for age, path in ages.items()}
    ctx = new_context()
    new_id = "b-" + "0" * 16

    def inside(weeks: int) -> list[str]:
        return [r["batch_id"] for r in window_records(ctx, new_id, weeks)]

    assert inside(1) == []  # one week: the new batch alone, even with a batch accepted hours ago
    assert inside(2) == [ids[7.4], ids[0.1]]  # 7.4 days: inside N-1 weeks + 1 day of slack
    assert inside(3) == [ids[13.9], ids[7.4], ids[0.1]]
    # A rerun of an accepted batch never trains on its own earlier copy.
    assert ids[0.1] not in [r["batch_id"] for r in window_records(ctx, ids[0.1], 3)]
    # 8.5 days is past one week + slack: outside a two-week window.
    late = _accept(store, four_weeks[3], 8.5)["batch_id"]
    assert late not in inside(2) and late in inside(3)
