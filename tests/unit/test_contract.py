"""The data contract: reading, column mapping, dtype coercion and the typed error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tailguard.contract import (
    BadValues,
    ColumnMapping,
    ContractError,
    MissingColumn,
    UnreadableInput,
    coerce_frame,
    iter_frames,
    parse_columns,
    read_table,
)
from tailguard.data import load_batch


def frame(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "query": [f"q{i % 4}" for i in range(n)],
            "item_id": [f"i{i}" for i in range(n)],
            "item_title": [f"title {i}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
        }
    )


def test_parse_columns_maps_canonical_to_source() -> None:
    assert parse_columns("query=search_term, item_id=product_uid,") == {
        "query": "search_term",
        "item_id": "product_uid",
    }


@pytest.mark.parametrize(("spec", "rule"), [("query", "mapping_syntax"), ("colour=c", "mapping_target")])
def test_parse_columns_rejects_bad_specs(spec: str, rule: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_columns(spec)
    assert info.value.rule == rule and info.value.hint


def test_csv_is_coerced_to_contract_dtypes(tmp_path: Path) -> None:
    df = frame()
    df["price"] = ["1.5", "", "3"] + ["2"] * 17
    df["ts"] = "2026-01-05T10:00:00Z"
    df["position"] = range(20)
    df.loc[0, "query"] = "NA"  # a real query text, not a missing value
    path = tmp_path / "b.csv"
    df.to_csv(path, index=False)
    out = coerce_frame(read_table(path), str(path))
    assert out["label"].dtype == np.int8 and out["label"].tolist()[:3] == [0, 1, 0]
    assert out["price"].dtype == np.float64 and np.isnan(out["price"].iloc[1])
    assert str(out["position"].dtype) == "Int64"
    assert pd.api.types.is_datetime64_any_dtype(out["ts"])
    assert out["query"].iloc[0] == "NA"


def test_labels_from_bools_and_strings() -> None:
    df = frame(4)
    df["label"] = [True, False, True, False]
    assert coerce_frame(df, "mem").label.tolist() == [1, 0, 1, 0]
    df["label"] = ["true", "FALSE", "1", "0.0"]
    assert coerce_frame(df, "mem").label.tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize("bad", ["yes", None, 2, -1, 0.5])
def test_label_outside_0_1_is_refused_with_row_numbers(bad) -> None:
    df = frame()
    df["label"] = df["label"].astype(object)
    df.loc[7, "label"] = bad
    with pytest.raises(BadValues) as info:
        coerce_frame(df, "batch.csv")
    err = info.value
    assert err.column == "label" and err.rule in ("label_binary", "not_null")
    assert err.examples[0]["row"] == 7
    assert "batch.csv" in str(err) and "column 'label'" in str(err) and "Fix:" in str(err)


def test_price_abc_names_value_and_row() -> None:
    df = frame()
    df["price"] = ["1.0"] * 19 + ["abc"]
    with pytest.raises(BadValues, match=r"rule 'numeric'.*row': 19, 'value': 'abc'"):
        coerce_frame(df, "b.csv")


def test_integer_ids_become_text_and_float_ids_are_refused() -> None:
    df = frame(3)
    df["item_id"] = pd.array([101, None, 103], "Int64")
    out = coerce_frame(df, "mem")
    assert out["item_id"].tolist() == ["101", None, "103"]
    # A float id has lost its spelling ("101" or "101.0"?): refused per value, whatever its neighbours.
    df["item_id"] = [101.0, np.nan, 103.0]
    with pytest.raises(BadValues) as info:
        coerce_frame(df, "mem")
    assert (info.value.column, info.value.rule) == ("item_id", "text_type")


def test_missing_column_suggests_a_mapping() -> None:
    df = frame().rename(columns={"query": "Query"})
    with pytest.raises(MissingColumn) as info:
        coerce_frame(df, "b.csv")
    assert info.value.column == "query" and "--columns query=Query" in info.value.hint


def test_mapping_and_delimiter_read_a_real_world_file(tmp_path: Path) -> None:
    df = frame().rename(columns={"query": "search_term", "item_id": "product_uid"})
    path = tmp_path / "hd.csv"
    df.to_csv(path, index=False, sep=";")
    mapping = ColumnMapping(columns=parse_columns("query=search_term,item_id=product_uid"), delimiter=";")
    out = load_batch(path, mapping)  # type: ignore[arg-type]
    assert {"query", "item_id", "row_id"} <= set(out.columns) and "search_term" not in out.columns
    assert out["row_id"].tolist() == list(range(20))


def test_bom_is_stripped_from_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    frame().to_csv(path, index=False, encoding="utf-8-sig")
    assert list(read_table(path).columns)[0] == "query"


def test_multi_file_batch_records_row_ranges(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    frame(5).to_csv(folder / "a.csv", index=False)
    frame(7).to_parquet(folder / "b.parquet", index=False)
    out = load_batch(folder)
    assert len(out) == 12 and out["row_id"].tolist() == list(range(12))
    assert [(Path(f["file"]).name, f["first_row"], f["rows"]) for f in out.attrs["files"]] == [
        ("a.csv", 0, 5),
        ("b.parquet", 5, 7),
    ]


def test_one_bad_file_refuses_the_whole_batch(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    frame().to_csv(folder / "a.csv", index=False)
    (folder / "b.csv").write_text("query,item_id,item_title,label\nq,i,t,maybe\n")
    with pytest.raises(BadValues) as info:
        load_batch(folder)
    assert info.value.file.endswith("b.csv")


def test_error_to_dict_is_json_and_shaped_like_a_failure() -> None:
    err = UnreadableInput("x.csv", None, "encoding", "bad bytes", [b"\xe9t\xe9"], hint="re-encode")
    record = json.loads(json.dumps(err.to_dict()))
    assert {"file", "column", "rule", "observed", "examples", "severity"} <= set(record)
    assert record["severity"] == "error" and record["error"] == "UnreadableInput"


@pytest.mark.parametrize("column", ["query", "item_id", "item_title", "label"])
def test_a_nul_character_in_a_contract_column_is_refused(tmp_path: Path, column: str) -> None:
    """pandas' string hash tables stop at NUL, so 'q1\\x00a' and 'q1\\x00b' would be counted as one value
    in every distinct count and metric: a Parquet file (CSV refuses NUL bytes already) holding one is
    refused naming the file, the column, the rule and the row."""
    df = frame(20).astype({"label": str})
    df.loc[13, column] = str(df.loc[13, column]) + "\x00hidden"
    df.loc[3, column] = None  # a missing cell too: the check's slower path (str() per cell)
    path = tmp_path / "batch.parquet"
    df.to_parquet(path, index=False)
    with pytest.raises(BadValues) as info:
        load_batch(path)
    err = info.value
    assert (err.column, err.rule) == (column, "no_nul")
    assert "batch.parquet" in str(err) and "'row': 13" in str(err)
    assert len(pd.factorize(np.array(["q1\x00a", "q1\x00b"], dtype=object))[1]) == 1  # why: merged


@pytest.mark.parametrize("column", ["query", "item_title"])
def test_a_nul_in_a_dictionary_encoded_parquet_column_is_refused(tmp_path: Path, column: str) -> None:
    """A dictionary column reads as a pandas Categorical, whose distinct values are its categories: the NUL
    check reads those, and names a row using one (found by a breaker: it used to skip categoricals)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = frame(20)
    df[column] = [f"v\x00{i % 2}" if i >= 11 else f"v{i % 3}" for i in range(20)]
    df.loc[4, column] = None
    table = pa.Table.from_pandas(df, preserve_index=False)
    at = table.schema.get_field_index(column)
    table = table.set_column(at, column, table.column(column).dictionary_encode())
    path = tmp_path / "dict.parquet"
    pq.write_table(table, path)
    assert pa.types.is_dictionary(pq.read_schema(path).field(column).type)
    with pytest.raises(BadValues) as info:
        load_batch(path)
    assert (info.value.column, info.value.rule) == (column, "no_nul")
    assert "9 value(s)" in str(info.value) and "'row': 11" in str(info.value)
    # Chunks keep the row group's whole dictionary: a chunk whose rows hold no NUL passes, the next names
    # the rows (not "0 value(s)" from a category no row of the chunk uses).
    chunks = iter_frames(path, None, 10)
    assert len(next(chunks)) == 10
    with pytest.raises(BadValues) as info:
        next(chunks)
    assert "9 value(s)" in str(info.value) and "'row': 11" in str(info.value)


def test_a_missing_text_cell_is_none_whatever_the_parquet_encoding(tmp_path: Path) -> None:
    """Dictionary columns (pandas Categorical: NaN) and pandas string columns (pd.NA) read as None, as CSV
    empty cells and plain Parquet nulls do: metrics name a missing query by astype(str), so "nan" or "<NA>"
    in one file and "None" in another would split one query in two."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "query": pa.array(["a", None, "None"]).dictionary_encode(), "item_id": ["1", "2", "3"],
        "item_title": pa.array(["x", None, "z"], pa.large_string()), "label": [1, 0, 1],
        "category": pa.array([None, "c", "c"]).dictionary_encode(),
    })  # fmt: skip
    pq.write_table(table, tmp_path / "dict.parquet")
    typed = frame(3).assign(query=pd.array(["a", None, "b"], dtype="string"))
    typed.to_parquet(tmp_path / "typed.parquet", index=False)
    for name, column in (("dict", "query"), ("dict", "item_title"), ("dict", "category"), ("typed", "query")):
        df = load_batch(tmp_path / f"{name}.parquet")
        missing = df[column].isna().to_numpy()
        assert missing.any() and all(v is None for v in df[column][missing]), (name, column)
        assert df[column].dtype == object
    assert load_batch(tmp_path / "dict.parquet")["query"].tolist() == ["a", None, "None"]


def test_text_without_nul_is_unchanged_by_the_nul_check() -> None:
    df = frame(5).assign(query=["", "NA", "红色\u200b沙发", "a\x01b", "x" * 70_000])
    assert coerce_frame(df, "x.parquet")["query"].tolist() == df["query"].tolist()


def _packed_and_plain(path: Path, chunk_rows: int, **kw) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    return list(iter_frames(path, None, chunk_rows, packed=True, **kw)), list(
        iter_frames(path, None, chunk_rows, **kw)
    )


def test_packed_parquet_text_is_the_plain_read_as_categoricals_in_first_use_order(tmp_path: Path) -> None:
    """The Ray engine reads Parquet text columns from the file's dictionaries (no Python str per cell): the
    same cells as the contract's object columns (str, None missing), categories in order of first use with
    none unused, whether the column was plain strings, dictionary-encoded, or a chunk of a row group whose
    dictionary holds values only other chunks use."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tailguard.contract import text_values

    hostile = ["</script><script>alert(1)</script>", '=HYPERLINK("x")', "", "NA", "红色\u200b沙发", "None"]
    df = frame(40).assign(
        query=[hostile[i % 6] if i % 7 else None for i in range(40)],
        category=[f"c{(39 - i) // 10}" for i in range(40)],  # later chunks use values written first
        user_id=[f"u{i % 3}" if i % 5 else None for i in range(40)],
    )
    table = pa.Table.from_pandas(df, preserve_index=False)
    at = table.schema.get_field_index("category")
    table = table.set_column(at, "category", table.column("category").dictionary_encode())
    path = tmp_path / "text.parquet"
    pq.write_table(table, path, row_group_size=25)
    packed, plain = _packed_and_plain(path, 10)
    assert [len(c) for c in packed] == [10, 10, 10, 10]
    for got, want in zip(packed, plain, strict=True):
        assert list(got.columns) == list(want.columns) and got.index.equals(want.index)
        for col in ("query", "item_id", "item_title", "category", "user_id"):
            assert isinstance(got[col].dtype, pd.CategoricalDtype), col
            values, expected = text_values(got[col]), want[col].to_numpy(object)
            assert all(a == b if b is not None else a is None for a, b in zip(values, expected, strict=True))
            categories = list(got[col].cat.categories)
            assert categories == list(
                pd.unique(pd.Series([v for v in expected if v is not None], dtype=object))
            )
        pd.testing.assert_series_equal(got["label"], want["label"])
    assert list(packed[0]["category"].cat.categories) == ["c3"]  # the row group's c0..c2 are not carried


def test_packed_parquet_text_keeps_the_contract_rules(tmp_path: Path) -> None:
    """A packed read refuses what the plain read refuses, naming the same file, column, rule and rows: a
    NUL (no_nul), an empty cell where the caller needs one (not_null, shown as None, not NaN), float text."""
    nul = frame(20)
    nul.loc[13, "item_title"] = "t\x00hidden"
    nul.to_parquet(tmp_path / "nul.parquet", index=False)
    empty = frame(20)
    empty.loc[[5, 17], "query"] = None
    empty.to_parquet(tmp_path / "empty.parquet", index=False)
    floats = frame(20).assign(item_id=np.arange(20) + 0.5)
    floats.to_parquet(tmp_path / "floats.parquet", index=False)
    cases = [
        ("nul", "no_nul", {}),
        ("empty", "not_null", {"not_null": ("query",)}),
        ("floats", "text_type", {}),
    ]
    for name, rule, kw in cases:
        errors = []
        for packed in (True, False):
            with pytest.raises(BadValues) as info:
                list(iter_frames(tmp_path / f"{name}.parquet", None, 8, packed=packed, **kw))
            errors.append(info.value.to_dict())
        assert errors[0] == errors[1] and errors[0]["rule"] == rule, name
    assert "'value': None" in str(errors[0]) or errors[0]["rule"] != "not_null"


def test_a_dictionary_repeating_a_value_is_read_as_plain_text() -> None:
    """A hand-written Parquet dictionary page may repeat a value; pandas cannot make a Categorical of it, so
    those columns are read as plain text (the object path's rules apply) instead of a ValueError."""
    import pyarrow as pa

    from tailguard.contract import _parquet_frame

    repeated = pa.DictionaryArray.from_arrays(pa.array([0, 1, 1, 0], pa.int32()), pa.array(["a", "a"]))
    out = _parquet_frame(pa.table({"query": repeated, "label": pa.array([1, 0, 1, 0], pa.int8())}))
    assert out["query"].tolist() == ["a", "a", "a", "a"] and out["label"].tolist() == [1, 0, 1, 0]


def _ts_file(tmp_path: Path, name: str, first: list, second: list, parquet: bool = False) -> Path:
    n = len(first) + len(second)
    df = frame(n).assign(ts=first + second)
    path = tmp_path / f"{name}.{'parquet' if parquet else 'csv'}"
    df.to_parquet(path, index=False) if parquet else df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "name, first, second, parquet",
    [
        ("offsets", ["2026-01-05T10:00:00+05:30"] * 50, ["2026-01-05T10:00:00"] * 30, False),
        ("plain_then_offsets", ["2026-01-05T10:00:00"] * 50, ["2026-01-05T10:00:00Z"] * 30, False),
        ("units", ["1767225600"] * 50, ["1767225600000"] * 30, False),
        ("digits_then_iso", ["1767225600"] * 50, ["2026-01-05T10:00:00"] * 30, False),
        ("iso_then_digits", ["2026-01-05T10:00:00Z"] * 50, ["1767225600"] * 30, False),
        ("parquet_units", [1767225600] * 50, [1767225600000] * 30, True),
    ],
)
def test_chunks_of_one_file_read_ts_as_the_whole_file_does(
    tmp_path: Path, name, first, second, parquet
) -> None:
    """A datetime column's reading is decided by the whole file (offsets or none, epoch or ISO, one unit):
    a file whose halves differ is refused by a chunked read (the Ray engine, predict) exactly as by a whole
    read: same rule, counts and rows. Before, each chunk decided alone and such a file was accepted when the
    change fell on a chunk boundary (found reading a CSV with +05:30 rows, then offset-less ones)."""
    path = _ts_file(tmp_path, name, first, second, parquet)
    with pytest.raises(BadValues) as whole:
        load_batch(path)
    with pytest.raises(BadValues) as chunked:
        list(iter_frames(path, None, 50))
    assert chunked.value.to_dict() == whole.value.to_dict()
    assert whole.value.column == "ts"


def test_a_chunk_without_times_does_not_decide_the_files_reading(tmp_path: Path) -> None:
    path = _ts_file(tmp_path, "late", [None] * 50, ["1767225600"] * 30)
    whole = load_batch(path)
    chunks = list(iter_frames(path, None, 50))
    assert whole.attrs["ts_unit"] == "epoch_s" and [c.attrs["ts_kind"] for c in chunks] == [None, "epoch_s"]
    ns = "datetime64[ns, UTC]"
    pd.testing.assert_series_equal(pd.concat(chunks)["ts"].astype(ns), whole["ts"].astype(ns))


def _nul_everywhere(df: pd.DataFrame) -> None:
    df.loc[range(5, 90, 3), "item_title"] = "t\x00"  # the same fault in every chunk: 30 rows, 10 per chunk


def _labels_everywhere(df: pd.DataFrame) -> None:
    df.loc[range(0, 90, 4), "label"] = "yes"


def _earlier_check_later(df: pd.DataFrame) -> None:
    df.loc[3, "label"] = "2"  # chunk 1 breaks the label rule; chunk 3 a check that comes before it
    df.loc[70, "query"] = "q\x00"


def _label_rules(df: pd.DataFrame) -> None:
    df.loc[3, "label"] = "2"  # one column, two of its rules in different chunks
    df.loc[75, "label"] = None


@pytest.mark.parametrize("edit", [_nul_everywhere, _labels_everywhere, _earlier_check_later, _label_rules])
def test_a_chunked_read_refuses_a_file_as_the_whole_read_does(tmp_path: Path, edit) -> None:
    """The Ray engine and predict read files in chunks; a chunk's own error counted only its rows ("9
    value(s)" of the file's 29) and named the first chunk's fault where another chunk broke a check that
    comes first. The chunked read now refuses with the whole read's rule, count and rows."""
    df = frame(90).astype({"label": str})
    edit(df)
    path = tmp_path / f"{edit.__name__}.parquet"
    df.to_parquet(path, index=False)
    with pytest.raises(BadValues) as whole:
        load_batch(path)
    for packed in (False, True):
        with pytest.raises(BadValues) as chunked:
            list(iter_frames(path, None, 30, packed=packed))
        assert chunked.value.to_dict() == whole.value.to_dict()


@pytest.mark.parametrize("digits_first", [True, False])
def test_digit_dates_in_an_iso_file_are_iso_in_every_chunk(tmp_path: Path, digits_first: bool) -> None:
    """A whole read takes ts as ISO text once any value is not all digits, so 20260105 is 2026-01-05; a chunk
    holding only such values used to read them as epoch numbers and refuse the file (found by a breaker)."""
    iso, digits = ["2026-01-05T10:00:00"] * 20, ["20260105"] * 20
    path = _ts_file(tmp_path, "basic", *((digits, iso) if digits_first else (iso, digits)))
    whole = load_batch(path)
    for packed in (False, True):
        chunks = list(iter_frames(path, None, 20, packed=packed))
        assert len(chunks) == 2
        pd.testing.assert_series_equal(pd.concat(chunks)["ts"], whole["ts"])
    assert whole["ts"].iloc[20 if digits_first else 0] == pd.Timestamp("2026-01-05T10:00:00Z")


def test_ts_read_two_ways_is_reported_before_a_later_rule(tmp_path: Path) -> None:
    """Chunks reading ts differently (offsets, then none) and an empty relevance in the last row: the whole
    read refuses ts (its check comes first), and so does the chunked read, even though the chunk with the
    offset-less values failed on relevance first (found by a breaker)."""
    df = frame(40).assign(ts=["2026-01-05T10:00:00+05:30"] * 20 + ["2026-01-05T10:00:00"] * 20, relevance="1")
    df.loc[39, "relevance"] = None
    path = tmp_path / "late.csv"
    df.to_csv(path, index=False)
    with pytest.raises(BadValues) as whole:
        load_batch(path)
    with pytest.raises(BadValues) as chunked:
        list(iter_frames(path, None, 20))
    assert chunked.value.to_dict() == whole.value.to_dict() and whole.value.column == "ts"


def test_the_size_cap_counts_dictionary_text_as_plain_text(tmp_path: Path) -> None:
    """Each batch read from a dictionary carries the row group's dictionary so far; counting its nbytes per
    batch refused a 1 MiB file against an 8 MiB cap (found by a breaker). The text its rows use is counted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tailguard.contract import InputLimits, iter_table

    n = 8000
    titles = [f"title {i:06d} " + "x" * 90 for i in range(n)]
    table = pa.table(
        {"query": ["q"] * n, "item_id": [str(i) for i in range(n)], "item_title": titles, "label": [1] * n}
    )
    pq.write_table(table, tmp_path / "titles.parquet")
    limits = InputLimits(max_bytes=8 << 20, max_rows=10**6)
    for packed in (False, True):
        assert sum(len(c) for c in iter_table(tmp_path / "titles.parquet", None, 100, limits, packed)) == n
    with pytest.raises(ContractError, match="size_limit|limit"):
        list(
            iter_table(
                tmp_path / "titles.parquet", None, 100, InputLimits(max_bytes=1 << 19, max_rows=10**6), True
            )
        )


def test_an_all_empty_numeric_column_or_chunk_reads_as_missing(tmp_path: Path) -> None:
    """A CSV price column empty in every row (or in every row of one chunk) is missing, not an IndexError."""
    df = frame(40).assign(price=[None] * 30 + ["2.5"] * 10)
    df.to_csv(tmp_path / "price.csv", index=False)
    whole = load_batch(tmp_path / "price.csv")
    assert whole["price"].isna().sum() == 30 and whole["price"].iloc[-1] == 2.5
    chunks = list(iter_frames(tmp_path / "price.csv", None, 10))
    pd.testing.assert_series_equal(pd.concat(chunks)["price"], whole["price"])


def test_every_chunk_of_an_epoch_ts_has_the_whole_reads_dtype(tmp_path: Path) -> None:
    path = _ts_file(tmp_path, "epoch", [None] * 20, ["1767607200"] * 20)
    dtypes = {str(c["ts"].dtype) for c in iter_frames(path, None, 20)} | {str(load_batch(path)["ts"].dtype)}
    assert dtypes == {"datetime64[ns, UTC]"}


# --- tailguard's own columns: a file `balance` wrote is read again (train --data balanced.parquet) ---------


def _balanced(tmp_path: Path, suffix: str) -> tuple[pd.DataFrame, list[Path]]:
    """A demo batch rebalanced with augmentation, written as two files (rows, then sources, cut apart)."""
    from tailguard.balance import BalanceConfig, rebalance
    from tailguard.demo import DemoConfig, generate_batches

    gen = generate_batches(DemoConfig(rows=1200, batches=1, seed=4), tmp_path / "gen", "csv")[0]
    out, _ = rebalance(load_batch(gen), BalanceConfig.from_spec("random_under,augment", seed=0))
    out = out.sample(frac=1.0, random_state=1).reset_index(drop=True)  # sources before and after their copies
    assert out["augmented"].any() and (out["row_id"] < 0).any()
    (tmp_path / "bal").mkdir()
    half = len(out) // 2
    paths = []
    for i, part in enumerate((out.iloc[:half], out.iloc[half:])):
        path = tmp_path / "bal" / f"part-{i}{suffix}"
        part.to_parquet(path, index=False) if suffix == ".parquet" else part.to_csv(path, index=False)
        paths.append(path)
    return out, paths


def _origin(frame: pd.DataFrame, ids: str) -> list[str]:
    """Each row's source query, following source_row_id through `ids` within the frame."""
    by_id = pd.Series(frame["query"].to_numpy(), index=frame[ids].to_numpy())
    return frame["source_row_id"].map(by_id).fillna(frame["query"]).tolist()


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_balanced_file_read_again_keeps_its_augmented_rows_and_sources(tmp_path: Path, suffix: str) -> None:
    """Before, load numbered rows anew and set augmented=False: a random_under file had 91 of 568 real rows
    whose source_row_id named another row (the trainer's validation split follows it to a query), and its
    augmented rows could validate. Now augmented is kept and source_row_id follows the renumbering, within
    each file of a folder."""
    from tailguard.model import _origin_query

    out, paths = _balanced(tmp_path, suffix)
    half = len(out) // 2
    expected = [_origin(part, "row_id") for part in (out.iloc[:half], out.iloc[half:])]
    got = load_batch(tmp_path / "bal")
    assert got["row_id"].tolist() == list(range(len(out)))
    assert got["augmented"].dtype == bool and got["augmented"].tolist() == out["augmented"].tolist()
    assert _origin(got, "row_id") == expected[0] + expected[1]
    assert _origin_query(got).tolist() == expected[0] + expected[1]
    assert got["source_row_id"].between(0, len(out) - 1).all()
    # Rebalanced again, the report's "before" counts the augmented rows the file brought (it said 0).
    from tailguard.balance import BalanceConfig, rebalance, report_rows

    _, report = rebalance(got, BalanceConfig.from_spec("none"))
    row = [r for r in report_rows(report) if r["metric"] == "augmented rows"][0]
    assert row["before"] == row["after"] == int(out["augmented"].sum()) > 0


@pytest.mark.parametrize(
    ("change", "column", "detail"),
    [
        (lambda f: f.drop(columns=["source_row_id"]), "row_id", "no 'source_row_id'"),
        (lambda f: f.drop(columns=["row_id"]), "source_row_id", "no 'row_id'"),
        (lambda f: f.assign(row_id=["r1"] + f["row_id"].astype(str).tolist()[1:]), "row_id", "not numbers"),
        (lambda f: f.assign(source_row_id=[None] + f["source_row_id"].tolist()[1:]), "source_row_id", "no "),
        (lambda f: f.assign(augmented=["yes"] * len(f)), "augmented", "not true/false"),
    ],
)
def test_own_columns_not_written_by_tailguard_are_refused(tmp_path, change, column, detail) -> None:
    """A user's export with its own `row_id` was silently renumbered 0..n-1 by every loader (and written so by
    `balance --out`); now each such file is refused, naming file, column, rule and rows."""
    out, _ = _balanced(tmp_path, ".csv")
    path = tmp_path / "mine.csv"
    change(out.astype({"row_id": object})).to_csv(path, index=False)
    with pytest.raises(BadValues) as err:
        load_batch(path)
    assert err.value.column == column and err.value.rule == "own_columns" and "mine.csv" in str(err.value)
    assert detail in err.value.detail and "export_row_id" in err.value.hint


def test_random_over_written_out_reads_back_with_its_copies(tmp_path: Path) -> None:
    """`balance --strategy random_over --out` (not compact) repeats a row's row_id on each copy: it read back
    as "270 row(s) share a row_id" (a breaker found it); now the copies load and name their first row."""
    from tailguard.balance import BalanceConfig, rebalance
    from tailguard.demo import DemoConfig, generate_batches
    from tailguard.model import _origin_query

    gen = generate_batches(DemoConfig(rows=800, batches=1, seed=6), tmp_path / "gen", "csv")[0]
    out, _ = rebalance(load_batch(gen), BalanceConfig.from_spec("random_over", seed=0))
    assert out["row_id"].duplicated().any()
    out.to_csv(tmp_path / "over.csv", index=False)
    got = load_batch(tmp_path / "over.csv")
    assert len(got) == len(out) and got["row_id"].tolist() == list(range(len(out)))
    first = pd.Series(range(len(out))).groupby(out["row_id"].to_numpy()).min()
    assert got["source_row_id"].tolist() == first.loc[out["source_row_id"]].tolist()
    assert _origin_query(got).tolist() == out["query"].tolist()
