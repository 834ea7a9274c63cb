"""Load, split and fingerprint batches (local paths and s3:// URIs); quarantine refused batches."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from tailguard.store import ArtifactStore

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".tsv", ".tsv.gz")


def list_batch_files(uri: str | Path) -> list[Path]:
    """Files making up a batch: one file, or every data file in a folder (sorted, so order is stable)."""
    from tailguard.contract import UnreadableInput

    path = Path(uri)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(DATA_SUFFIXES))
        if not files:
            raise UnreadableInput(
                path,
                None,
                "has_data_files",
                f"folder holds no {', '.join(DATA_SUFFIXES)} files",
                sorted(p.name for p in path.iterdir())[:5],
                hint="point --data at the batch file or its folder",
            )
        return files
    if not path.exists():
        raise UnreadableInput(
            path, None, "exists", "no such file or folder", hint="check the path or s3:// URI"
        )
    return [path]


def materialize(uri: str, cache_dir: Path | None = None) -> list[Path]:
    """Local files for a batch URI; s3:// URIs (one object or a prefix) are downloaded to a scratch folder."""
    if not str(uri).startswith("s3://"):
        return list_batch_files(uri)
    from tailguard.contract import UnreadableInput
    from tailguard.store import open_store

    bucket, _, key = str(uri)[len("s3://") :].partition("/")
    store = open_store(f"s3://{bucket}")
    target = Path(cache_dir or tempfile.mkdtemp(prefix="tailguard-batch-"))
    key = key.rstrip("/")
    if key and store.exists(key):
        store.get_file(key, target / Path(key).name)
        return [target / Path(key).name]
    keys = store.list_keys(key + "/" if key else "")
    if not keys:
        raise UnreadableInput(uri, None, "exists", "no objects under this URI", hint="check the s3:// URI")
    for k in keys:
        store.get_file(k, target / Path(k).name)
    return list_batch_files(target)


def load_batch(uri: str | Path, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Read a batch into the canonical frame (contract columns, dtypes, row_id); never half-loaded."""
    return read_files(materialize(str(uri)), columns)


def read_files(files: list[Path], columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Read a batch's local files (from materialize) into one canonical frame; never half-loaded."""
    from tailguard.contract import CANONICAL_COLUMNS, ContractError, coerce_frame, read_table

    # Every file is read and coerced before any is concatenated: an error in file 3 loads nothing.
    frames = [coerce_frame(read_table(f, columns), str(f), columns) for f in files]
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
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    df["row_id"] = np.arange(len(df), dtype=np.int64)
    df["augmented"] = False
    starts = np.cumsum([0] + [len(f) for f in frames[:-1]])
    # Row ranges per file let validation name the file an offending row came from.
    df.attrs["files"] = [
        {"file": str(p), "first_row": int(first), "rows": len(f)}
        for p, first, f in zip(files, starts, frames, strict=True)
    ]
    return df


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


def fingerprint_files(paths: list[Path]) -> dict:
    """Content fingerprint of a batch: sha256 and size of every file, and one digest over all of them."""
    from tailguard.store import sha256_file

    files = [{"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in paths]
    overall = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"files": files, "sha256": overall}


def batch_id_for(fingerprint: dict) -> str:
    """Batch id derived from content, so the same input always gets the same id."""
    return "b-" + fingerprint["sha256"][:16]


def quarantine_batch(
    store: ArtifactStore, batch_id: str, source_paths: list[Path], result: dict, docs_dir: Path | None
) -> str:
    """Store a refused batch under quarantine/<batch_id>/ (input as received, result, docs); nothing else."""
    if not batch_id or "/" in batch_id or batch_id.startswith("."):
        raise ValueError(f"batch id {batch_id!r} would escape quarantine/; use batch_id_for(fingerprint)")
    prefix = f"quarantine/{batch_id}"
    for path in source_paths:
        store.put_file(f"{prefix}/input/{path.name}", path)
    if docs_dir is not None and Path(docs_dir).exists():
        store.upload_dir(Path(docs_dir), f"{prefix}/data_docs")
    store.put_bytes(f"{prefix}/validation.json", json.dumps(result, indent=2, default=str).encode())
    return prefix


def accept_batch(store: ArtifactStore, batch_id: str, source_paths: list[Path], meta: dict) -> str:
    """Keep an accepted batch as received under batches/<batch_id>/ with its fingerprint and stats."""
    prefix = f"batches/{batch_id}"
    for path in source_paths:
        store.put_file(f"{prefix}/input/{path.name}", path)
    store.put_bytes(f"{prefix}/fingerprint.json", json.dumps(meta, indent=2, default=str).encode())
    return prefix


def accepted_batch(
    store: ArtifactStore, batch_id: str | None = None, exclude: str | None = None
) -> dict | None:
    """The record (fingerprint, stats) of an accepted batch: the named one, else the latest accepted."""
    if batch_id is not None:
        key = f"batches/{batch_id}/fingerprint.json"
        return json.loads(store.get_bytes(key)) if store.exists(key) else None
    records = [
        json.loads(store.get_bytes(k))
        for k in store.list_keys("batches/")
        if k.endswith("/fingerprint.json") and not (exclude and k.startswith(f"batches/{exclude}/"))
    ]
    return max(records, key=lambda r: r.get("accepted_at", "")) if records else None
