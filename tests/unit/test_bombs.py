"""Hostile input files and hostile writes (issue 13 items 8-10): bombs and huge inputs, links out of a
batch, colliding S3 names, and overwrites of an immutable version.

Bombs are generated on the fly and read in a subprocess under RLIMIT_AS (2 GiB), through the real CLI,
so a MemoryError or a traceback would show; before the size caps both bombs died with MemoryError.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tailguard.contract import ContractError, InputLimits, read_frame, read_table
from tailguard.data import fingerprint_files, list_batch_files, load_batch, materialize
from tailguard.store import LocalStore, PreconditionFailed, open_store

HEADER = b"query,item_id,item_title,label\n"
LINE = b"cordless drill,42,DeWalt 20V cordless drill,1\n"
MEMORY_LIMIT = 2 * 2**30
# Runs the CLI with its address space capped, as a small worker would be.
LIMITED_CLI = (
    "import resource, sys\n"
    f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
    "from tailguard.cli import main\n"
    "sys.argv = ['tailguard', *sys.argv[1:]]\n"
    "main()\n"
)


def write_gzip_bomb(path: Path, decompressed: int) -> Path:
    """A gzip of `decompressed` bytes of CSV in a few MB: one 1 MiB member of repeated rows, concatenated
    (a valid multi-member gzip, RFC 1952 2.2), so generating it costs no compression time."""
    block = LINE * (2**20 // len(LINE))
    member = gzip.compress(block, 9)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(HEADER))
        for _ in range(decompressed // len(block) + 1):
            fh.write(member)
    return path


def write_parquet_bomb(
    path: Path, rows: int, title: str = "cordless drill", store_schema: bool = True
) -> Path:
    """`rows` rows in ONE row group, every column dictionary-encoded with a single value: tiny on disk."""
    zeros = pa.array(np.zeros(rows, np.int32))
    columns = {
        "query": pa.DictionaryArray.from_arrays(zeros, pa.array(["drill"])),
        "item_id": pa.DictionaryArray.from_arrays(zeros, pa.array(["42"])),
        "item_title": pa.DictionaryArray.from_arrays(zeros, pa.array([title])),
        "label": pa.DictionaryArray.from_arrays(zeros, pa.array([1], pa.int8())),
    }
    pq.write_table(pa.table(columns), path, row_group_size=rows, store_schema=store_schema)
    return path


def run_cli(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "TAILGUARD_HOME": str(home), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(
        [sys.executable, "-c", LIMITED_CLI, *args], env=environ, capture_output=True, text=True, timeout=600
    )


def assert_clean_refusal(proc: subprocess.CompletedProcess, rule: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert f"rule '{rule}'" in out
    assert "Traceback" not in out and "MemoryError" not in out


# --- item 8: bombs and huge inputs --------------------------------------------------------------------


@pytest.fixture(scope="module")
def parquet_bomb(tmp_path_factory) -> Path:
    # The file: 40M rows in one row group, ~0.5 MB on disk (~3.5 s to write).
    return write_parquet_bomb(tmp_path_factory.mktemp("bombs") / "bomb.parquet", 40_000_000)


def test_gzip_bomb_is_refused_under_a_memory_limit_and_quarantined_as_a_prefix(tmp_path):
    bomb = write_gzip_bomb(tmp_path / "bomb.csv.gz", 4 * 2**30)  # the 4 GB, ~10 MB on disk
    assert bomb.stat().st_size < 16 * 2**20
    proc = run_cli(
        ["validate", "--data", str(bomb), "--quarantine"],
        tmp_path / "home",
        TAILGUARD_QUARANTINE_COPY_BYTES=str(2**20),
    )
    assert_clean_refusal(proc, "size_limit")
    assert "gunzipped text" in proc.stderr and "1,024.0 MiB" in proc.stderr  # the default cap, 1 GiB
    (quarantine,) = (tmp_path / "home" / "store" / "quarantine").iterdir()
    kept = quarantine / "input" / "bomb.csv.gz.head"
    assert kept.read_bytes() == bomb.read_bytes()[: 2**20]
    assert not (quarantine / "input" / "bomb.csv.gz").exists()
    record = json.loads((quarantine / "validation.json").read_text())
    assert record["truncated_inputs"] == [
        {
            "file": "bomb.csv.gz",
            "bytes": bomb.stat().st_size,
            "kept_bytes": 2**20,
            "key": "input/bomb.csv.gz.head",
        }
    ]
    assert record["failures"][0]["rule"] == "size_limit"


def test_parquet_bomb_is_refused_from_its_metadata_under_a_memory_limit(parquet_bomb, tmp_path):
    proc = run_cli(["validate", "--data", str(parquet_bomb)], tmp_path / "home")
    assert_clean_refusal(proc, "size_limit")
    assert "40,000,000" in proc.stderr and "10,000,000 rows" in proc.stderr


def test_parquet_bomb_is_refused_before_any_page_is_read(parquet_bomb):
    with pytest.raises(ContractError) as err:
        read_frame(parquet_bomb, limits=InputLimits(2**30, 39_999_999))
    assert err.value.rule == "size_limit" and "40,000,000" in err.value.detail
    # With room for it the same file reads (the cap, not the file, refused it): 1,000 rows here.
    small = write_parquet_bomb(parquet_bomb.with_name("small.parquet"), 1_000)
    assert len(read_frame(small)) == 1_000


def test_plain_csv_over_the_byte_cap_is_refused_by_size(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    path.write_bytes(HEADER + LINE * 50_000)  # 2.35 MB
    monkeypatch.setenv("TAILGUARD_MAX_INPUT_BYTES", str(2 * 2**20))
    with pytest.raises(ContractError) as err:
        load_batch(path)
    assert err.value.rule == "size_limit" and err.value.file == str(path)
    monkeypatch.setenv("TAILGUARD_MAX_INPUT_BYTES", str(3 * 2**20))
    assert len(load_batch(path)) == 50_000


def test_csv_rows_are_counted_while_streaming(tmp_path, monkeypatch):
    path = tmp_path / "rows.csv.gz"
    path.write_bytes(gzip.compress(HEADER + LINE * 1_001))
    monkeypatch.setenv("TAILGUARD_MAX_ROWS", "1000")
    with pytest.raises(ContractError) as err:
        read_table(path)
    assert err.value.rule == "size_limit" and "1,000 rows" in err.value.detail
    exact = tmp_path / "exact.csv"
    exact.write_bytes(HEADER + LINE * 1_000)
    assert len(read_table(exact)) == 1_000  # the limit itself is allowed


def test_parquet_uncompressed_size_in_metadata_is_checked(tmp_path):
    path = tmp_path / "wide.parquet"
    rng = np.random.default_rng(0)
    titles = ["".join(rng.choice(list("abcdefghij"), 200)) for _ in range(5_000)]  # ~1 MB, incompressible-ish
    frame = pd.DataFrame({"query": "q", "item_id": [str(i) for i in range(5_000)], "item_title": titles})
    frame.assign(label=1).to_parquet(path)
    uncompressed = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    with pytest.raises(ContractError) as err:
        read_table(path, limits=InputLimits(uncompressed - 1, 10_000))
    assert err.value.rule == "size_limit" and "uncompressed size" in err.value.detail
    # Decoded Arrow adds offsets and validity bitmaps to the encoded bytes: 2x room reads it.
    assert len(read_table(path, limits=InputLimits(2 * uncompressed, 10_000))) == 5_000


def test_parquet_decoded_bytes_are_counted_while_streaming(tmp_path):
    # 200k rows of one 1 KB title: ~2 KB of dictionary on disk, ~200 MB once decoded. store_schema=False
    # writes it as Spark would (a plain string column, dictionary-encoded pages), so pyarrow decodes it.
    path = write_parquet_bomb(tmp_path / "dict.parquet", 200_000, title="t" * 1024, store_schema=False)
    assert path.stat().st_size < 200_000
    with pytest.raises(ContractError) as err:
        read_table(path, limits=InputLimits(64 * 2**20, 10_000_000))
    assert err.value.rule == "size_limit" and "decoded data" in err.value.detail


def test_a_batch_is_capped_as_a_whole(tmp_path, monkeypatch):
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("a.csv", "b.csv", "c.csv"):
        (folder / name).write_bytes(HEADER + LINE * 400)
    monkeypatch.setenv("TAILGUARD_MAX_ROWS", "1000")  # every file fits, the three together do not
    with pytest.raises(ContractError) as err:
        load_batch(folder)
    assert err.value.rule == "size_limit" and err.value.file.endswith("c.csv")
    assert "1,200 rows" in err.value.detail


def test_a_row_longer_than_the_reader_block_is_refused_by_name(tmp_path):
    path = tmp_path / "long.csv"
    path.write_bytes(HEADER + LINE * 3 + b'q,7,"' + b"x" * (3 * 2**20) + b'",0\n')
    with pytest.raises(ContractError) as err:
        read_table(path)
    assert err.value.rule == "row_size"
    unquoted = tmp_path / "query.csv.gz"  # an unquoted 2 MiB query, gzipped
    unquoted.write_bytes(gzip.compress(HEADER + LINE + b"d" * (2 * 2**20) + b",8,drill,1\n" + LINE))
    with pytest.raises(ContractError) as err:
        read_table(unquoted)
    assert err.value.rule == "row_size" and err.value.file == str(unquoted)


@pytest.mark.slow
def test_a_200_mb_title_does_not_make_a_400_mb_validation_json(tmp_path):
    from tailguard.validation import validate_frame

    path = tmp_path / "titles.parquet"
    titles = [f"cordless drill {i}" for i in range(2_000)]
    titles[7] = "<img src=x onerror=alert(1)>" + "A" * (200 * 2**20)  # the 200 MB title
    pq.write_table(pa.table({"query": [f"q{i % 300}" for i in range(2_000)],
                             "item_id": [str(i) for i in range(2_000)], "item_title": titles,
                             "label": [i % 2 for i in range(2_000)]}), path)  # fmt: skip
    del titles
    result = validate_frame(load_batch(path), str(path)).to_dict()
    text = json.dumps(result, default=str)
    assert len(text) < 100_000
    assert any(f["column"] == "item_title" for f in result["failures"])
    assert f"... ({200 * 2**20 + 28} chars)" in text  # clipped, saying how long the value was


def test_gx_raw_results_are_clipped_in_values_and_list_length():
    from tailguard.validation import GX_LIST_ITEMS, GX_VALUE_CHARS, validate_frame

    n = 60
    titles = ["&amp;" + "y" * 5_000 + str(i) for i in range(n)]  # 60 distinct 5 KB titles, each one bad
    frame = pd.DataFrame({"query": [f"q{i}" for i in range(n)], "item_id": [str(i) for i in range(n)]})
    frame = frame.assign(item_title=titles, label=[i % 2 for i in range(n)])
    frame["row_id"], frame["augmented"] = np.arange(n), False
    result = validate_frame(frame, "t.csv").to_dict()
    results = [r["result"] for g in result["gx_results"] for r in g["results"] if not r["success"]]
    assert results, "the long, entity-laden titles must fail a rule"
    for res in results:
        for key, value in res.items():
            if isinstance(value, list):
                assert len(value) <= GX_LIST_ITEMS, key
        for value in res.get("partial_unexpected_list", []):
            assert len(str(value)) <= GX_VALUE_CHARS + 30
    assert len(json.dumps(result, default=str)) < 60_000  # 60 titles of 5 KB each would be 300 KB


# --- item 9: batch folders are read as files, never followed --------------------------------------------


@pytest.fixture()
def secret(tmp_path) -> Path:
    path = tmp_path / "outside" / "credentials"
    path.parent.mkdir()
    path.write_text("[default]\naws_secret_access_key = SECRET-do-not-leak\n")
    return path


def test_a_link_in_a_batch_folder_is_refused_not_followed(tmp_path, secret):
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "good.csv").write_bytes(HEADER + LINE)
    (folder / "part-2.csv").symlink_to(secret)
    proc = run_cli(["validate", "--data", str(folder), "--quarantine"], tmp_path / "home")
    assert_clean_refusal(proc, "no_symlinks")
    assert str(folder / "part-2.csv") in proc.stderr
    assert "SECRET" not in proc.stdout + proc.stderr and "[default]" not in proc.stderr
    store = tmp_path / "home" / "store"
    leaked = (
        [p for p in store.rglob("*") if p.is_file() and b"SECRET" in p.read_bytes()] if store.exists() else []
    )
    assert leaked == []


@pytest.mark.parametrize("kind", ["file_link", "link_inside_batch", "dangling", "folder_named_csv", "fifo"])
def test_links_and_non_files_are_refused_before_opening(tmp_path, secret, kind):
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "good.csv").write_bytes(HEADER + LINE)
    target = folder / "x.csv"
    if kind == "file_link":  # the batch named on the command line is itself a link
        target.symlink_to(secret)
        uri, rule = target, "no_symlinks"
    elif kind == "link_inside_batch":  # even a link to a file of the same batch
        target.symlink_to(folder / "good.csv")
        uri, rule = folder, "no_symlinks"
    elif kind == "dangling":
        target.symlink_to(tmp_path / "gone.csv")
        uri, rule = folder, "no_symlinks"
    elif kind == "folder_named_csv":
        target.mkdir()
        uri, rule = folder, "is_file"
    else:  # opening a FIFO would block the worker forever
        os.mkfifo(target)
        uri, rule = folder, "is_file"
    with pytest.raises(ContractError) as err:
        list_batch_files(uri)
    assert err.value.rule == rule and err.value.file == str(target)
    assert "SECRET" not in str(err.value)


def test_a_linked_batch_folder_is_read_as_the_folder(tmp_path):
    real = tmp_path / "2026-11-30"
    real.mkdir()
    (real / "a.csv").write_bytes(HEADER + LINE * 3)
    latest = tmp_path / "latest"
    latest.symlink_to(real, target_is_directory=True)
    assert len(load_batch(latest)) == 3


def test_same_named_files_in_s3_subfolders_are_all_kept(s3_uri, tmp_path):
    """The issue's case: 1,500 rows in part.csv files under two subfolders became 750."""
    bucket = s3_uri.removeprefix("s3://").split("/")[0]
    raw = open_store(f"s3://{bucket}")
    rows = {"2026-11-29/part.csv": 750, "2026-11-30/part.csv": 750, "2026-11-30/late/part.csv": 10}
    for key, n in rows.items():
        local = tmp_path / "src" / key
        local.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(f"q{key[:10]}{i},{i},title {i},{i % 2}\n" for i in range(n))
        local.write_text("query,item_id,item_title,label\n" + lines)
        raw.put_file(f"batch/{key}", local)
    raw.put_bytes("batch/_SUCCESS", b"")  # a marker object that is not data
    files = materialize(f"s3://{bucket}/batch", tmp_path / "scratch")
    assert sorted(p.relative_to(tmp_path / "scratch").as_posix() for p in files) == sorted(rows)
    assert len(load_batch(f"s3://{bucket}/batch")) == 1_510
    names = [f["name"] for f in fingerprint_files(files)["files"]]
    assert sorted(names) == sorted(rows)  # the fingerprint (and the batch id) sees all three


def test_s3_keys_that_would_leave_the_scratch_folder_are_refused(s3_uri, tmp_path):
    bucket = s3_uri.removeprefix("s3://").split("/")[0]
    raw = open_store(f"s3://{bucket}")
    raw.client.put_object(Bucket=bucket, Key="batch/../escape.csv", Body=HEADER + LINE)
    raw.client.put_object(Bucket=bucket, Key="batch//double.csv", Body=HEADER + LINE)
    with pytest.raises(ContractError) as err:
        materialize(f"s3://{bucket}/batch", tmp_path / "scratch")
    assert err.value.rule == "key_name"
    assert not (tmp_path / "escape.csv").exists()


# --- item 10: immutable versions stay immutable ---------------------------------------------------------


def _model(tmp_path: Path, tag: str) -> Path:
    folder = tmp_path / f"model-{tag}"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(tag.encode() * 1000)
    (folder / "config.json").write_text(json.dumps({"tag": tag}))
    return folder


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_version_files_are_written_once(backend, tmp_path, request):
    from tailguard.registry import Registry, RegistryError

    uri = str(tmp_path / "store") if backend == "local" else request.getfixturevalue("s3_uri")
    store = open_store(uri)
    registry = Registry(store, "relevance")
    version = registry.new_version_id()
    registry.write_version(version, _model(tmp_path, "a"), {}, {})
    key = f"{registry.version_prefix(version)}/model/model.safetensors"
    before = store.get_bytes(key)
    with pytest.raises(PreconditionFailed):
        store.put_file_once(key, _model(tmp_path, "evil") / "model.safetensors")
    with pytest.raises(RegistryError, match="immutable"):
        registry.write_version(version, _model(tmp_path, "b"), {}, {})
    assert store.get_bytes(key) == before


def test_an_interrupted_version_upload_may_be_retried_with_the_same_files(tmp_path):
    from tailguard.registry import Registry, RegistryError

    store = LocalStore(tmp_path / "store")
    registry = Registry(store, "relevance")
    version, model = registry.new_version_id(), _model(tmp_path, "a")
    prefix = registry.version_prefix(version)
    store.put_file_once(f"{prefix}/model/config.json", model / "config.json")  # a crash after one file
    manifest = registry.write_version(version, model, {}, {})
    assert set(manifest["files"]) >= {"model/config.json", "model/model.safetensors"}
    other = _model(tmp_path, "b")
    version2 = registry.new_version_id()
    store.put_file_once(f"{registry.version_prefix(version2)}/model/config.json", other / "config.json")
    with pytest.raises(RegistryError, match="other content"):
        registry.write_version(version2, model, {}, {})


@pytest.mark.parametrize(
    "prefix",
    [
        "models/relevance/versions/20261130T000000Z-abc/model",  # the overwrite
        "models/relevance",
        "runs/x/fine-tune/../../models/relevance/versions/v1",
        "runs/x/candidate",  # under runs/ but not the fine-tune prefix
        "runs//fine-tune/model",
        "/runs/x/fine-tune/model",
    ],
)
def test_fine_tune_refuses_prefixes_outside_its_own(prefix):
    from tailguard_flows.fine_tune import check_prefix

    with pytest.raises(ValueError, match="not under runs/<run>/fine-tune/"):
        check_prefix("output_prefix", prefix)


def test_the_fine_tune_flow_refuses_a_version_prefix_before_it_reads_or_writes(tmp_path, monkeypatch):
    from tailguard_flows.fine_tune import fine_tune

    monkeypatch.setenv("TAILGUARD_HOME", str(tmp_path / "home"))
    target = "models/relevance/versions/20261130T000000Z-abc/model"
    with pytest.raises(ValueError, match="output_prefix"):
        fine_tune.fn("runs/r1/train.parquet", {}, target)
    with pytest.raises(ValueError, match="checkpoint_prefix"):
        fine_tune.fn("runs/r1/train.parquet", {}, "runs/r1/fine-tune/model", checkpoint_prefix=target)
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.safetensors"))


def test_fine_tune_prefix_of_a_run():
    from tailguard_flows.fine_tune import check_prefix, fine_tune_prefix

    assert fine_tune_prefix("20261130T101500Z") == "runs/20261130T101500Z/fine-tune/model"
    assert check_prefix("checkpoint_prefix", "runs/r1/fine-tune/model-checkpoints") == (
        "runs/r1/fine-tune/model-checkpoints"
    )


# --- review of issue 13's fixes: dictionary bombs past the metadata cap (F4), a batch's total bytes (F5) ---


def write_dictionary_title_bomb(path: Path, rows: int, title_bytes: int, row_groups: int = 1) -> Path:
    """The reviewer's bomb3.parquet: one long title dictionary-encoded in every row, no Arrow schema
    (as Spark writes it). 30,000 x 100 KB is ~6 KB on disk, ~100 KB in total_byte_size, ~3 GB decoded."""
    title = "A" * title_bytes
    table = pa.table({
        "query": ["q"] * rows, "item_id": ["i"] * rows,
        "item_title": pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array([title])),
        "label": [1] * rows, "ts": ["2024-01-01"] * rows,
    })  # fmt: skip
    pq.write_table(table, path, row_group_size=-(-rows // row_groups), store_schema=False)
    return path


def test_dictionary_bomb_under_the_metadata_cap_is_refused_before_decoding(tmp_path):
    bomb = write_dictionary_title_bomb(tmp_path / "bomb3.parquet", 30_000, 100_000)
    metadata = pq.ParquetFile(bomb).metadata
    assert bomb.stat().st_size < 20_000 and metadata.row_group(0).total_byte_size < 2**20  # passes the footer
    proc = run_cli(["validate", "--data", str(bomb)], tmp_path / "home")
    assert_clean_refusal(proc, "size_limit")
    assert "counted from the Parquet dictionaries before decoding" in proc.stderr
    assert "2,861.8 MiB" in proc.stderr  # 30,000 x (100,000 + 8 offset bytes) + the other columns


def test_dictionary_bombs_in_other_shapes_are_counted_before_decoding(tmp_path):
    limits = InputLimits(16 * 2**20, 10_000_000)
    # Spread over 20 row groups of 2,000 rows x 1 KB (2 MB decoded each): only the sum is over the cap.
    spread = write_dictionary_title_bomb(tmp_path / "spread.parquet", 40_000, 1024, row_groups=20)
    # A list<string> column outside the contract: 500 rows x 100 copies of one 1 KB tag (~50 MB decoded).
    rows, tag = 500, "t" * 1024
    tags = pa.ListArray.from_arrays(
        pa.array(np.arange(0, rows * 100 + 1, 100, dtype=np.int32)),
        pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows * 100, np.int32)), pa.array([tag])),
    )
    nested = tmp_path / "nested.parquet"
    pq.write_table(
        pa.table({"query": ["q"] * rows, "item_id": ["i"] * rows, "item_title": ["t"] * rows,
                  "label": [1] * rows, "tags": tags}),
        nested, store_schema=False,
    )  # fmt: skip
    for path in (spread, nested):
        with pytest.raises(ContractError) as err:
            read_table(path, limits=limits)
        assert err.value.rule == "size_limit" and "before decoding" in err.value.detail, path


def test_decoded_size_counts_what_a_plain_read_allocates(tmp_path):
    from tailguard.contract import input_bytes

    rng = np.random.default_rng(1)
    titles = [("drill " * int(n))[: int(n)] or "x" for n in rng.integers(1, 400, 3_000)]
    frame = pd.DataFrame({"query": rng.choice(["drill", "saw", "hammer"], 3_000), "item_id": "7",
                          "item_title": titles, "label": rng.integers(0, 2, 3_000)})  # fmt: skip
    path = tmp_path / "ok.parquet"
    frame.to_parquet(path, row_group_size=700)
    text = sum(len(t) for t in titles) + 3_000 * (len("7") + 1) + sum(frame["query"].str.len())
    counted = input_bytes(path)
    # Never under the text itself, and within offsets (8 B/value) + the label column (8 B/row) of it.
    assert text <= counted <= text + 3 * 3_000 * 8 + 3_000 * 8
    assert len(read_table(path, limits=InputLimits(counted, 10_000))) == 3_000  # the exact count is allowed
    with pytest.raises(ContractError):
        read_table(path, limits=InputLimits(counted - 1, 10_000))


def test_many_files_each_under_the_file_cap_are_capped_as_a_batch(tmp_path, monkeypatch):
    folder = tmp_path / "batch"
    folder.mkdir()
    body = HEADER + LINE * 2_000  # 96,031 bytes of text each
    for name in ("a.csv", "b.csv"):
        (folder / name).write_bytes(body)
    (folder / "c.csv.gz").write_bytes(gzip.compress(body))  # counted decompressed, not as ~1 KB of gzip
    monkeypatch.setenv("TAILGUARD_MAX_INPUT_BYTES", str(len(body)))  # every file fits on its own
    monkeypatch.setenv("TAILGUARD_MAX_BATCH_BYTES", str(3 * len(body) - 1))
    with pytest.raises(ContractError) as err:
        load_batch(folder)
    assert err.value.rule == "size_limit" and err.value.file.endswith("c.csv.gz")
    assert "first 3 of 3 file(s)" in err.value.detail and "TAILGUARD_MAX_BATCH_BYTES" in err.value.hint
    monkeypatch.setenv("TAILGUARD_MAX_BATCH_BYTES", str(3 * len(body)))  # the limit itself is allowed
    assert len(load_batch(folder)) == 6_000


def test_a_parquet_dictionary_bomb_counts_its_decoded_bytes_towards_the_batch(tmp_path, monkeypatch):
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.csv").write_bytes(HEADER + LINE * 10)
    write_dictionary_title_bomb(folder / "b.parquet", 4_000, 1_000)  # ~4 MB decoded in ~5 KB
    monkeypatch.setenv("TAILGUARD_MAX_BATCH_BYTES", str(2 * 2**20))
    with pytest.raises(ContractError) as err:
        load_batch(folder)
    assert err.value.rule == "size_limit" and err.value.file.endswith("b.parquet")
    assert "batch limit of 2.0 MiB" in err.value.detail
