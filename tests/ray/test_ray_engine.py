"""The Ray engine against the pandas path on a real two-node cluster (tests/ray/conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tailguard import engine, ray_engine
from tailguard.balance import BalanceConfig, BalanceConfigError, rebalance
from tailguard.contract import ContractError
from tailguard.data import load_batch
from tailguard.demo import DemoConfig, generate_batches
from tailguard.validation import validate_frame

pytestmark = pytest.mark.ray
BLOCK_ROWS = 700  # small blocks: every stage crosses block boundaries on both nodes


def _comparable(result) -> dict:
    """A ValidationResult's fields that do not depend on wall time or GX run ids."""
    out = result.to_dict()
    for key in ("elapsed_s", "gx_results", "summary"):
        out.pop(key)
    return out


@pytest.fixture(scope="module")
def batches(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("demo")
    return generate_batches(DemoConfig(rows=3000, batches=2, seed=7), folder, "csv")


@pytest.fixture(scope="module")
def hostile_batch(tmp_path_factory, batches) -> Path:
    """Rule breaches spread over several blocks and two files: empty queries, blank (zero-width) titles,
    negative prices, and ids that look numeric or missing ('0000741', 'NA')."""
    folder = tmp_path_factory.mktemp("hostile")
    df = pd.read_csv(batches[1], dtype=str, keep_default_na=False)
    df.loc[[5, 1800, 2950], "query"] = ""
    df.loc[[10, 2000], "item_title"] = "\u200b"
    df.loc[[3, 1500, 2999], "price"] = "-4.5"
    df.loc[[7], "item_id"] = "0000741"
    df.loc[[8], "query"] = "NA"
    df.iloc[:1600].to_csv(folder / "part-1.csv", index=False)
    df.iloc[1600:].to_csv(folder / "part-2.csv", index=False)
    return folder


def test_cluster_is_two_nodes_on_loopback(ray_cluster):
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2
    if ray_cluster.namespace:  # root: a namespace with only lo, so Ray cannot pick another address
        assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}


def test_load_gives_the_pandas_frame(ray_cluster, hostile_batch):
    rb = ray_engine.load(hostile_batch, block_rows=BLOCK_ROWS)
    df = load_batch(hostile_batch)
    assert len(rb.block_rows) >= 4 and rb.rows == len(df) == 3000
    got = rb.to_pandas()
    pd.testing.assert_frame_equal(got, df)
    assert got.attrs["files"] == df.attrs["files"]
    # Strings stay strings: 'NA' and leading zeros as written.
    assert got.loc[8, "query"] == "NA" and got.loc[7, "item_id"] == "0000741"
    # Missing stays None (assert_frame_equal does not tell None from NaN).
    assert got.loc[5, "query"] is None and df.loc[5, "query"] is None
    # Blocks travel with text dictionary-encoded; frames() gives them back as the contract's objects.
    import ray  # after conftest's cluster settings (importing ray reads them)

    assert isinstance(ray.get(rb.block_refs()[0])["query"].dtype, pd.CategoricalDtype)


HOSTILE_TEXT = [
    "None",
    "",
    "\u200b",
    "</script><script>alert(1)</script>",
    '=HYPERLINK("http://x")',
    "\u202egnp.exe",
    "NA",
    "0000741",
    "nan",
    "\U0001f600 emoji",
    "x" * 5000,
    "a\tb\nc",
    "ＦＵＬＬ",
    "e\u0301",
    "\u00e9",
]


def test_blocks_travel_packed_and_unpack_exactly():
    """Text columns are stored as Categoricals and come back as the same objects: str, and None where the
    contract left None; a column whose missing cells are NaN is left as written."""
    import pickle

    import numpy as np

    values = [*HOSTILE_TEXT, None, *HOSTILE_TEXT[::-1], None]
    frame = pd.DataFrame({
        "query": pd.Series(values, dtype=object),
        "item_id": pd.Series([str(i % 7) for i in range(len(values))], dtype=object),
        "item_title": pd.Series([np.nan if i == 3 else "t" for i in range(len(values))], dtype=object),
        "category": pd.Series([None] * len(values), dtype=object),
        "label": np.int8(1),
    })  # fmt: skip
    expected = frame.copy()
    packed = pickle.loads(pickle.dumps(ray_engine._pack(frame.copy()), protocol=5))
    assert isinstance(packed["query"].dtype, pd.CategoricalDtype)
    assert isinstance(packed["item_id"].dtype, pd.CategoricalDtype)
    assert packed["item_title"].dtype == object  # NaN as the missing value: not packed, not turned into None
    back = ray_engine.unpack(packed)
    for col in ("query", "item_id", "item_title", "category"):
        assert back[col].dtype == object
        assert [type(v) for v in back[col]] == [type(v) for v in expected[col]], col
        pairs = zip(back[col], expected[col], strict=True)
        assert all((a is None and b is None) or a == b or (a != a and b != b) for a, b in pairs), col
    assert ray_engine.unpack(back) is back  # idempotent on a plain frame


def test_query_names_are_the_same_packed_or_not():
    """A missing query and a typed "None" are one query, as metrics.evaluate's astype(str) makes them."""
    import numpy as np

    column = pd.Series(["b", None, "None", *HOSTILE_TEXT, "b", None], dtype=object)
    packed = ray_engine._pack(pd.DataFrame({"query": column.copy()}))["query"]
    codes, names = ray_engine._text_codes(packed)
    plain_codes, plain_names = ray_engine._text_codes(column)
    np.testing.assert_array_equal(codes, plain_codes)
    assert list(names) == list(plain_names)
    assert names[codes[1]] == "None" and codes[1] == codes[2]


def test_mixed_parquet_and_csv_files_keep_batch_row_ids(ray_cluster, tmp_path, batches):
    """Row ids come from Parquet footers while every earlier file is Parquet, then from a shift after a CSV:
    both ways give the pandas frame, and a bad row in the last file is named by its own file and line."""
    df = pd.read_csv(batches[1], dtype=str, keep_default_na=False)
    df.iloc[:900].to_parquet(tmp_path / "p1.parquet", index=False)
    df.iloc[900:1700].to_parquet(tmp_path / "p2.parquet", index=False)
    df.iloc[1700:2300].to_csv(tmp_path / "p3.csv", index=False)
    df.iloc[2300:].to_parquet(tmp_path / "p4.parquet", index=False)
    rb = ray_engine.load(tmp_path, block_rows=BLOCK_ROWS)
    expected = load_batch(tmp_path)
    pd.testing.assert_frame_equal(rb.to_pandas(), expected)
    assert sum(rb.block_rows) == rb.rows == 3000
    assert _comparable(ray_engine.validate(rb, "mixed")) == _comparable(validate_frame(expected, "mixed"))


def test_a_balanced_folder_reads_as_pandas_reads_it(ray_cluster, tmp_path, batches):
    """A folder `balance` wrote (row_id, augmented, source_row_id), as CSV then Parquet so the second file is
    shifted, in blocks smaller than a file so sources sit in other blocks: the pandas frame, sources
    following the renumbered rows; a user's own row_id is refused by both with the same rule."""
    df = load_batch(batches[1])
    out, _ = rebalance(df, BalanceConfig.from_spec("random_under,augment", seed=0))
    # No ts: CSV writes it as ISO text, Parquet as a timestamp, and one batch must read it one way.
    out = out.sample(frac=1.0, random_state=2).reset_index(drop=True).drop(columns="ts", errors="ignore")
    assert out["augmented"].any()
    (tmp_path / "bal").mkdir()
    half = len(out) // 2
    out.iloc[:half].to_csv(tmp_path / "bal" / "a.csv", index=False)
    out.iloc[half:].to_parquet(tmp_path / "bal" / "b.parquet", index=False)
    rb = ray_engine.load(tmp_path / "bal", block_rows=150)
    expected = load_batch(tmp_path / "bal")
    assert len(rb.block_rows) >= 4 and expected["augmented"].sum() == out["augmented"].sum()
    pd.testing.assert_frame_equal(rb.to_pandas(), expected)
    # Rebalancing it again keeps each row's source and counts the augmented rows it brought, on both.
    under = BalanceConfig.from_spec("random_under", seed=0)
    got, report = ray_engine.rebalance(rb, under)
    want, want_report = rebalance(expected, under, compact=True, report=False)
    assert got.to_pandas()["source_row_id"].tolist() == want["source_row_id"].tolist()
    assert report["augmented_rows_before"] == want_report["augmented_rows_before"] == out["augmented"].sum()
    assert report["augmented_rows"] == want_report["augmented_rows"] > 0
    # A plain file first: its rows are their own sources and the columns come in pandas.concat's order.
    plain = df.drop(columns=["row_id", "augmented", "ts"], errors="ignore").iloc[:300]
    plain.to_csv(tmp_path / "bal" / "0-plain.csv", index=False)
    mixed = load_batch(tmp_path / "bal")
    assert mixed["source_row_id"].iloc[:300].tolist() == list(range(300))
    pd.testing.assert_frame_equal(ray_engine.load(tmp_path / "bal", block_rows=150).to_pandas(), mixed)
    out.drop(columns=["source_row_id"]).to_csv(tmp_path / "mine.csv", index=False)
    # Bad flags in the first and a later block: the whole file's count and rows, as pandas reports them;
    # with a bad label in a later block too, the contract's error comes first on both.
    flags = out["augmented"].astype(object)
    flags.iloc[[3, 400]] = "yes"
    out.assign(augmented=flags).to_csv(tmp_path / "flags.csv", index=False)
    label = out["label"].astype(object)
    label.iloc[500] = "7"
    out.assign(augmented=flags, label=label).to_csv(tmp_path / "both.csv", index=False)
    found = {}
    for name in ("mine.csv", "flags.csv", "both.csv"):
        errors = []
        for read in (load_batch, lambda p: ray_engine.load(p, block_rows=150)):
            with pytest.raises(ContractError) as err:
                read(tmp_path / name)
            errors.append(err.value.to_dict())
        assert errors[0] == errors[1], name
        found[name] = errors[0]
    assert found["mine.csv"]["rule"] == found["flags.csv"]["rule"] == "own_columns"
    assert found["flags.csv"]["observed"] == "2 row(s) are not true/false"
    assert [e["row"] for e in found["flags.csv"]["examples"]] == [3, 400]
    assert found["both.csv"]["rule"] == "label_binary"


def test_block_sizes_follow_the_cluster_not_a_constant():
    """2 blocks per CPU, clamped to [MIN_, MAX_BLOCK_ROWS], equal within a Parquet file; CSV: the default."""
    big = 2_500_000
    assert ray_engine._chunk_rows([big] * 4, cpus=1) == [big] * 4
    assert ray_engine._chunk_rows([big] * 4, cpus=4) == [big // 2] * 4
    assert ray_engine._chunk_rows([7_000_000], cpus=1) == [2_333_334]  # 3 equal blocks, not 2.5M + 2.5M + 2M
    assert ray_engine._chunk_rows([None, 1000], cpus=8) == [ray_engine.DEFAULT_BLOCK_ROWS, 1000]
    assert ray_engine._chunk_rows([10**12], cpus=1) == [ray_engine.MAX_BLOCK_ROWS]  # a footer may lie


def test_default_blocks_are_equal_within_a_parquet_file(ray_cluster, tmp_path, batches, monkeypatch):
    df = pd.read_csv(batches[1], dtype=str, keep_default_na=False)
    df.iloc[:1000].to_parquet(tmp_path / "p1.parquet", index=False)
    df.iloc[1000:2300].to_parquet(tmp_path / "p2.parquet", index=False)
    df.iloc[2300:].to_csv(tmp_path / "p3.csv", index=False)
    monkeypatch.setattr(ray_engine, "MIN_BLOCK_ROWS", 10)
    monkeypatch.setattr(ray_engine, "MAX_BLOCK_ROWS", 400)
    monkeypatch.setattr(ray_engine, "DEFAULT_BLOCK_ROWS", 300)
    rb = ray_engine.load(tmp_path)
    pd.testing.assert_frame_equal(rb.to_pandas(), load_batch(tmp_path))
    assert rb.block_rows[:3] == [334, 334, 332] and rb.block_rows[3:7] == [325] * 4
    assert rb.block_rows[7:] == [300, 300, 100]


def test_validation_result_equals_pandas_on_good_batch(ray_cluster, batches):
    previous = validate_frame(load_batch(batches[0]), str(batches[0])).stats
    expected = validate_frame(load_batch(batches[1]), "b2", previous)
    got = ray_engine.validate(ray_engine.load(batches[1], block_rows=BLOCK_ROWS), "b2", previous)
    assert expected.success and got.success
    assert _comparable(got) == _comparable(expected)
    assert got.stats["content_sha256"] == expected.stats["content_sha256"]


def test_bad_batch_refused_by_both_with_the_same_rules(ray_cluster, hostile_batch):
    expected = validate_frame(load_batch(hostile_batch), "hostile")
    got = ray_engine.validate(ray_engine.load(hostile_batch, block_rows=BLOCK_ROWS), "hostile")
    assert not expected.success and not got.success
    assert _comparable(got) == _comparable(expected)
    by_rule = {(f.column, f.rule): f for f in got.failures}
    # Counts summed over blocks of both files, examples name the batch row and its file.
    assert by_rule[("price", "price_non_negative")].unexpected_count == 3
    assert [e["row"] for e in by_rule[("price", "price_non_negative")].examples] == [3, 1500, 2999]
    assert by_rule[("query", "not_null")].unexpected_count == 3
    assert by_rule[("query", "not_null")].file.endswith("part-1.csv")


def test_contract_error_names_file_and_line_on_both(ray_cluster, tmp_path, batches):
    good = pd.read_csv(batches[0], dtype=str, keep_default_na=False).iloc[:300]
    good.to_csv(tmp_path / "a.csv", index=False)
    text = good.to_csv(index=False).splitlines()
    text[120] = text[120] + ",extra"  # line 121 of the file: one field too many
    (tmp_path / "b.csv").write_text("\n".join(text) + "\n")
    bad_label = good.copy()
    bad_label.loc[4, "label"] = "yes"
    bad_label.to_csv(tmp_path / "c.csv", index=False)
    for case in ("b.csv", "c.csv"):
        folder = tmp_path / f"batch-{case}"
        folder.mkdir()
        for name in ("a.csv", case):
            (folder / name).write_bytes((tmp_path / name).read_bytes())
        with pytest.raises(ContractError) as pandas_err:
            load_batch(folder)
        with pytest.raises(ContractError) as ray_err:
            ray_engine.load(folder, block_rows=100)
        assert type(ray_err.value) is type(pandas_err.value)
        assert ray_err.value.to_dict() == pandas_err.value.to_dict()
        # b.csv: the physical line (header = line 1); c.csv: the data row of the bad label.
        expected = "line 121" if case == "b.csv" else "'row': 4"
        assert expected in str(ray_err.value) and case in str(ray_err.value)


def test_a_file_whose_halves_read_ts_differently_is_refused_as_pandas_does(ray_cluster, tmp_path, batches):
    """Offsets in the first blocks, none after (a chunk boundary between): refused with the whole file's
    counts and rows, as load_batch refuses it; before, each block decided alone and Ray accepted it."""
    df = pd.read_csv(batches[0], dtype=str, keep_default_na=False).iloc[:400]
    df["ts"] = ["2026-01-05T10:00:00+05:30"] * 200 + ["2026-01-05T10:00:00"] * 200
    df.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(ContractError) as pandas_err:
        load_batch(tmp_path / "mixed.csv")
    with pytest.raises(ContractError) as ray_err:
        ray_engine.load(tmp_path / "mixed.csv", block_rows=100)
    assert ray_err.value.to_dict() == pandas_err.value.to_dict()
    assert "200 value(s) have a UTC offset and 200 have none" in str(ray_err.value)


@pytest.mark.parametrize("spec", ["random_under", "random_over", "random_under,random_over", "none"])
def test_rebalance_equals_pandas_compact(ray_cluster, batches, spec):
    config = BalanceConfig.from_spec(spec, seed=11, ratio=2.0, over_ratio=0.5)
    train = load_batch(batches[1])
    expected, expected_report = rebalance(train, config, compact=True, report=False)
    got, report = ray_engine.rebalance(ray_engine.load(batches[1], block_rows=BLOCK_ROWS), config)
    frame = got.to_pandas()
    frame.attrs = {}
    expected.attrs = {}
    pd.testing.assert_frame_equal(frame, expected)
    assert report["before"] == expected_report["before"] and report["after"] == expected_report["after"]
    labels = frame["label"].to_numpy()
    counts = {y: int(frame["repeats"].to_numpy()[labels == y].sum()) for y in (0, 1)}
    assert counts[1] == report["after"]["positives"]


def test_rebalance_refuses_strategies_it_cannot_run(ray_cluster, batches):
    rb = ray_engine.load(batches[0], block_rows=BLOCK_ROWS)
    with pytest.raises(BalanceConfigError, match="pandas engine only"):
        ray_engine.rebalance(rb, BalanceConfig.from_spec("popularity_cap"))
    compact, _ = ray_engine.rebalance(rb, BalanceConfig.from_spec("random_over", seed=0))
    with pytest.raises(BalanceConfigError, match="compact frame"):  # as the pandas engine refuses it
        ray_engine.rebalance(compact, BalanceConfig.from_spec("random_under"))


def test_engine_choice(monkeypatch, ray_cluster):
    monkeypatch.setenv("TAILGUARD_ENGINE", "ray")
    assert engine.choose() == "ray"
    assert engine.choose("pandas") == "pandas"
    monkeypatch.setenv("TAILGUARD_ENGINE", "spark")
    with pytest.raises(Exception, match="spark"):
        engine.choose()


def test_losing_the_worker_node_mid_stage_fails_clearly_or_finishes(ray_cluster, batches, tmp_path):
    """Kill the worker node's raylet while validation runs (this test runs last: the node stays dead).

    The stage either finishes on the head with the pandas result or raises one RayEngineError; the JSON
    a caller writes after the stage is then complete or absent, never half-written.
    """
    pid = ray_cluster.worker_raylet_pid()
    assert pid is not None, "the worker node's raylet was not found"
    rb = ray_engine.load(batches[1], block_rows=150)
    killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))
    out = tmp_path / "validation.json"
    started = time.perf_counter()
    killer.start()
    try:
        result = ray_engine.validate(rb, "b2")
    except ray_engine.RayEngineError as err:
        assert "rerun the stage" in str(err)
        assert not out.exists()
    else:
        expected = validate_frame(load_batch(batches[1]), "b2")
        assert _comparable(result) == _comparable(expected)
        out.write_text(json.dumps(result.to_dict(), default=str))
        assert json.loads(out.read_text())["stats"]["rows"] == 3000
    finally:
        killer.cancel()
    assert time.perf_counter() - started < 120
