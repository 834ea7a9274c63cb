"""Load, split and fingerprint batches (local paths and s3:// URIs); quarantine refused batches."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from tailguard.store import ArtifactStore

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".tsv", ".tsv.gz")


def _refuse_unreadable(path: Path) -> None:
    """Refuse a batch entry that is a link, not a regular file, or not readable; never open or follow it.

    A link is refused wherever it points: following one let a worker copy a credentials file into
    quarantine/ and quote its first line (issue 13 item 9). A FIFO named .csv would block the read forever.
    """
    from tailguard.contract import UnreadableInput

    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        raise UnreadableInput(
            path, None, "readable", f"cannot stat ({exc.strerror})", hint="check the path"
        ) from None
    if stat.S_ISLNK(mode):
        raise UnreadableInput(
            path,
            None,
            "no_symlinks",
            "is a symbolic link; batch files are read as they are and links are never followed",
            hint="copy the file itself into the batch (cp -L), not a link to it",
        )
    if not stat.S_ISREG(mode):
        raise UnreadableInput(
            path, None, "is_file", "not a regular file (a folder, FIFO, socket or device)",
            hint="a batch holds only regular CSV/Parquet files",
        )  # fmt: skip
    if not os.access(path, os.R_OK):
        raise UnreadableInput(
            path, None, "readable", "permission denied", hint="make the file readable by the worker's user"
        )


def list_batch_files(uri: str | Path) -> list[Path]:
    """Files making up a batch: one file, or every data file directly in a folder (sorted, so order is
    stable). A named folder may itself be a link; a file that is a link, a FIFO or unreadable is refused
    (UnreadableInput naming it) before anything is opened."""
    from tailguard.contract import UnreadableInput

    path = Path(uri)
    if path.is_dir():
        try:
            entries = sorted(path.iterdir())
        except OSError as exc:
            raise UnreadableInput(
                path, None, "readable", f"cannot list the folder ({exc.strerror})",
                hint="make the folder readable by the worker's user",
            ) from None  # fmt: skip
        files = [p for p in entries if p.name.lower().endswith(DATA_SUFFIXES)]
        if not files:
            raise UnreadableInput(
                path,
                None,
                "has_data_files",
                f"folder holds no {', '.join(DATA_SUFFIXES)} files",
                sorted(p.name for p in entries)[:5],
                hint="point --data at the batch file or its folder",
            )
        for file in files:
            _refuse_unreadable(file)
        return files
    if not path.exists() and not path.is_symlink():
        raise UnreadableInput(
            path, None, "exists", "no such file or folder", hint="check the path or s3:// URI"
        )
    _refuse_unreadable(path)
    return [path]


def relative_names(paths: list[Path]) -> list[str]:
    """Names that keep files of one batch apart: paths relative to their common folder ('a/part.csv')."""
    if len(paths) <= 1:
        return [p.name for p in paths]
    root = Path(os.path.commonpath([p.parent for p in paths]))
    return [p.relative_to(root).as_posix() for p in paths]


def materialize(uri: str, cache_dir: Path | None = None) -> list[Path]:
    """Local files for a batch URI; s3:// URIs (one object or a prefix) are downloaded to a scratch folder.

    Every data object under a prefix is kept at its relative path (a/part.csv and b/part.csv are two
    files); a key that could leave the scratch folder, or an object that cannot be read, raises
    UnreadableInput naming it. Store errors a retry may fix (StoreError.transient) are raised as is.
    """
    from tailguard.store import is_remote, split_uri

    if not is_remote(uri):
        return list_batch_files(uri)
    from tailguard.contract import UnreadableInput
    from tailguard.store import StoreError, open_store

    bucket, key = split_uri(uri)
    store = open_store(f"s3://{bucket}")
    target = Path(cache_dir or tempfile.mkdtemp(prefix="tailguard-batch-"))
    key = key.rstrip("/")
    try:
        if key and store.exists(key):
            names = {key: Path(key).name}
        else:
            base = key + "/" if key else ""
            keys = store.list_keys(base)
            if not keys:
                raise UnreadableInput(
                    uri, None, "exists", "no objects under this URI", hint="check the s3:// URI"
                )
            names = {k: k[len(base) :] for k in keys if k.lower().endswith(DATA_SUFFIXES)}
            if not names:
                raise UnreadableInput(
                    uri, None, "has_data_files", f"no {', '.join(DATA_SUFFIXES)} objects under this prefix",
                    [k[len(base):] for k in keys[:5]], hint="point --data at the batch object or its prefix",
                )  # fmt: skip
        files = []
        for k, rel in names.items():
            if any(part in ("", ".", "..") for part in rel.split("/")):
                raise UnreadableInput(
                    f"s3://{bucket}/{k}", None, "key_name", "the key has an empty, '.' or '..' path part",
                    hint="rename the object",
                )  # fmt: skip
            store.get_file(k, target / rel)
            files.append(target / rel)
    except StoreError as exc:
        if exc.transient:
            raise
        raise UnreadableInput(
            uri, None, "readable", str(exc), hint="check the URI and the worker's access"
        ) from None
    return files


def load_batch(uri: str | Path, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Read a batch into the canonical frame (contract columns, dtypes, row_id); never half-loaded.

    uri: a CSV / Parquet file (.csv, .csv.gz, .tsv, .tsv.gz, .parquet, .pq), a folder of them, or an
    s3://bucket/key URI (one object or a prefix, downloaded once to a scratch folder by `materialize`).
    columns: source name -> contract name (`contract.parse_columns("query=search_term,...")`).
    Returns one row per input row, in file then row order: `query`, `item_id`, `item_title` (str),
    `label` (int8, 0/1), the optional contract columns present (`relevance` float, `category` str, `price`
    float, `ts` datetime64, `user_id` str, `position` int), any other columns as read, and `row_id`
    (int64, 0..n-1). Text is read as the exact strings (no NA coercion, leading zeros kept).
    Caps (settings): max_input_bytes per file, max_batch_bytes and max_rows per batch.
    Raises contract.ContractError naming file, column, rule and example rows: UnreadableInput (missing,
    empty, unreadable or oversized input), MissingColumn, BadValues (e.g. a label outside 0/1);
    store.StoreError when an s3:// store cannot be reached (its `transient` flag says whether to retry).
    """
    return read_files(materialize(str(uri)), columns)


def read_files(files: list[Path], columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Read a batch's local files (from materialize) into one canonical frame; never half-loaded.

    Caps: each file by max_input_bytes / max_rows (contract.iter_table), the batch by max_rows and by
    max_batch_bytes, the decompressed bytes summed over its files before any file is loaded.
    Raises ContractError (InputTooLarge, rule size_limit, past a cap).
    """
    from tailguard.contract import (
        CANONICAL_COLUMNS,
        ContractError,
        InputTooLarge,
        input_limits,
        own_columns,
        read_frame,
    )

    _check_batch_bytes(files)
    # Every file is read and coerced before any is concatenated: an error in file 3 loads nothing.
    max_rows, frames, total = input_limits().max_rows, [], 0
    for f in files:
        frame = own_columns(read_frame(f, columns), f)
        if "source_row_id" in frame.columns:  # the file's rows -> the batch's
            frame["source_row_id"] = frame["source_row_id"].to_numpy(np.int64) + total
        frames.append(frame)
        total += len(frame)
        if total > max_rows:  # each file is capped by the reader; the batch as a whole is capped here
            raise InputTooLarge(
                f, None, "size_limit",
                f"the batch's first {len(frames)} file(s) hold {total:,} rows, over the limit {max_rows:,}",
                hint="split the batch, or raise TAILGUARD_MAX_ROWS if the workers have the memory",
            )  # fmt: skip
    contract_columns = [sorted(set(f.columns) & set(CANONICAL_COLUMNS)) for f in frames]
    for f, cols in zip(files[1:], contract_columns[1:], strict=True):
        if cols != contract_columns[0]:
            odd = sorted(set(cols) ^ set(contract_columns[0]))
            raise ContractError(
                f,
                odd[0],
                "same_columns_in_every_file",
                f"contract columns {cols} differ from {files[0].name}'s {contract_columns[0]}",
                hint="export every file of a batch with the same columns",
            )
    units = sorted({str(f.attrs["ts_unit"]) for f in frames if f.attrs.get("ts_unit")})
    if len(units) > 1:
        raise ContractError(
            files[0],
            "ts",
            "same_ts_unit_in_every_file",
            f"ts is read as {units} in different files of one batch",
            hint="export every file's ts in one unit (or as ISO 8601)",
        )
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    if units:
        df.attrs["ts_unit"] = units[0]  # reported in the validation result's stats
    df["row_id"] = np.arange(len(df), dtype=np.int64)
    # A file tailguard wrote keeps its augmented flags and sources (contract.own_columns); other rows are
    # their own source, as balance numbers them.
    df["augmented"] = df["augmented"].eq(True).to_numpy() if "augmented" in df.columns else False
    if "source_row_id" in df.columns:
        df["source_row_id"] = df["source_row_id"].fillna(df["row_id"]).astype(np.int64)
    starts = np.cumsum([0] + [len(f) for f in frames[:-1]])
    # Row ranges per file let validation name the file an offending row came from.
    df.attrs["files"] = [
        {"file": str(p), "first_row": int(first), "rows": len(f)}
        for p, first, f in zip(files, starts, frames, strict=True)
    ]
    return df


def _check_batch_bytes(files: list[Path]) -> int:
    """Sum the files' decompressed bytes (contract.input_bytes) and refuse the batch past max_batch_bytes
    before any file is loaded; returns the sum. 300 files of 20 MiB each pass the 1 GiB per-file cap but
    are 5.9 GiB together. Raises InputTooLarge (rule size_limit) naming the file that crossed the cap."""
    from tailguard.contract import InputTooLarge, input_bytes, input_limits
    from tailguard.settings import get_settings

    cap, limits, total = get_settings().max_batch_bytes, input_limits(), 0
    for count, f in enumerate(files, start=1):
        total += input_bytes(f, limits)
        if total > cap:
            raise InputTooLarge(
                f, None, "size_limit",
                f"the batch's first {count} of {len(files)} file(s) hold {total / 2**20:,.1f} MiB "
                f"decompressed, over the batch limit of {cap / 2**20:,.1f} MiB; nothing was loaded",
                hint="split the batch into smaller batches, or raise TAILGUARD_MAX_BATCH_BYTES if the workers"
                " have the memory (reading takes ~4.5x the text size)",
            )  # fmt: skip
    return total


def stable_hash(values: pd.Series, salt: str = "") -> np.ndarray:
    """64-bit stable hash of strings (independent of PYTHONHASHSEED and of pandas versions)."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b((salt + v).encode(), digest_size=8).digest(), "little")
            for v in values
        ),
        dtype=np.uint64,
        count=len(values),
    )


def split_by_query(
    df: pd.DataFrame, eval_fraction: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split by a stable hash of the query (never by row), so no query is in both train and eval."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    queries = pd.Series(df["query"].unique())
    h = stable_hash(queries.astype(str), salt=f"split:{seed}:")
    eval_queries = set(queries[(h % np.uint64(10_000)) < np.uint64(int(eval_fraction * 10_000))])
    is_eval = df["query"].isin(eval_queries).to_numpy()
    return df.loc[~is_eval].reset_index(drop=True), df.loc[is_eval].reset_index(drop=True)


def query_folds(queries: pd.Series, n_folds: int) -> np.ndarray:
    """Fold number (int, 0..n_folds-1) of each row, by a stable hash of its query (salt "fold:").

    queries: (n,) query strings, one per row. Returns an (n,) int array: rows of one query share a fold,
    so holding out fold f and training on the others keeps eval queries out of training, and rotating f
    gives disjoint eval sets. Independent of row order, PYTHONHASHSEED and the pandas version (blake2b).
    Raises ValueError when n_folds < 1.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    return (stable_hash(queries.astype(str), salt="fold:") % np.uint64(n_folds)).astype(int)


def subsample_queries(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """Whole queries of `frame`, drawn in a seeded random order, while the rows taken stay <= max_rows.

    frame: rows with a `query` column. A query is never cut: queries are shuffled with `seed` (pandas
    `sample(frac=1, random_state=seed)`) and kept while the running row count stays within max_rows, so
    the result may hold fewer rows than max_rows. max_rows 0, or a frame already within it, keeps every
    row. Rows keep their order in frame; the index is reset to 0..m-1.
    """
    if not max_rows or len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    queries = frame["query"].drop_duplicates().sample(frac=1.0, random_state=seed)
    sizes = frame.groupby("query").size().reindex(queries)
    keep = set(sizes.index[np.cumsum(sizes.to_numpy()) <= max_rows])
    return frame[frame["query"].isin(keep)].reset_index(drop=True)


def fingerprint_files(paths: list[Path]) -> dict:
    """Content fingerprint of a batch: sha256 and size of every file, and one digest over all of them."""
    from tailguard.store import sha256_file

    files = [
        {"name": name, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p, name in zip(paths, relative_names(paths), strict=True)
    ]
    overall = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"files": files, "sha256": overall}


def batch_id_for(fingerprint: dict) -> str:
    """Batch id derived from content, so the same input always gets the same id."""
    return "b-" + fingerprint["sha256"][:16]


def quarantine_batch(
    store: ArtifactStore,
    batch_id: str,
    source_paths: list[Path],
    result: dict,
    docs_dir: Path | None,
    copy_bytes: int | None = None,
) -> str:
    """Store a refused batch under quarantine/<batch_id>/ (input as received, result, docs); nothing else.

    A file over copy_bytes (default: settings.quarantine_copy_bytes, 64 MiB) keeps only its first
    copy_bytes as input/<name>.head; result["truncated_inputs"] records its full size, so a 4 GiB bomb
    never fills the store twice.
    """
    from tailguard.settings import get_settings

    if not batch_id or "/" in batch_id or batch_id.startswith("."):
        raise ValueError(f"batch id {batch_id!r} would escape quarantine/; use batch_id_for(fingerprint)")
    limit = get_settings().quarantine_copy_bytes if copy_bytes is None else copy_bytes
    prefix = f"quarantine/{batch_id}"
    truncated = []
    for path, name in zip(source_paths, relative_names(source_paths), strict=True):
        size = path.stat().st_size
        if size <= limit:
            store.put_file(f"{prefix}/input/{name}", path)
            continue
        with tempfile.TemporaryDirectory(prefix="tailguard-quarantine-") as tmp:
            head = Path(tmp) / "head"
            with open(path, "rb") as src:
                head.write_bytes(src.read(limit))
            store.put_file(f"{prefix}/input/{name}.head", head)
        truncated.append({"file": name, "bytes": size, "kept_bytes": limit, "key": f"input/{name}.head"})
    if truncated:
        result = {**result, "truncated_inputs": truncated}
    if docs_dir is not None and Path(docs_dir).exists():
        store.upload_dir(Path(docs_dir), f"{prefix}/data_docs")
    store.put_bytes(f"{prefix}/validation.json", json.dumps(result, indent=2, default=str).encode())
    return prefix


def accept_batch(store: ArtifactStore, batch_id: str, source_paths: list[Path], meta: dict) -> str:
    """Keep an accepted batch as received under batches/<batch_id>/ with its fingerprint and stats."""
    prefix = f"batches/{batch_id}"
    for path, name in zip(source_paths, relative_names(source_paths), strict=True):
        store.put_file(f"{prefix}/input/{name}", path)
    store.put_bytes(f"{prefix}/fingerprint.json", json.dumps(meta, indent=2, default=str).encode())
    return prefix


def accepted_batch(
    store: ArtifactStore, batch_id: str | None = None, exclude: str | None = None
) -> dict | None:
    """The record (fingerprint, stats) of an accepted batch: the named one, else the latest accepted."""
    if batch_id is not None:
        key = f"batches/{batch_id}/fingerprint.json"
        return json.loads(store.get_bytes(key)) if store.exists(key) else None
    records = [r for r in accepted_batches(store) if r.get("batch_id") != exclude or exclude is None]
    return max(records, key=lambda r: r.get("accepted_at", "")) if records else None


def accepted_batches(store: ArtifactStore) -> list[dict]:
    """Every accepted batch's record (batches/<id>/fingerprint.json), in key order."""
    return [
        {"batch_id": k.split("/")[1], **json.loads(store.get_bytes(k))}
        for k in store.list_keys("batches/")
        if k.endswith("/fingerprint.json") and k.count("/") == 2
    ]
