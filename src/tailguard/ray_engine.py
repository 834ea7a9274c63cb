"""The data stages on Ray (the only module importing ray): load, validate and rebalance a batch on a cluster.

Each stage gives what the pandas path gives on the same batch (tests/ray compares them field by field):

- load: every file is read by a task running the contract's own reader (`contract.iter_frames`) chunk by
  chunk; chunks become the batch's pandas blocks (owned by the driver, so they outlive the task's worker),
  with their batch row ids assigned while reading wherever Parquet footers give the earlier files' lengths.
  A ContractError in any file refuses the whole batch, naming the first bad file in batch order, as
  `data.read_files` does; nothing of a refused batch stays in the object store.
- validate: the row suite runs per block with GX's pandas engine and the unexpected counts are summed
  across blocks (a block's own pass flag is never used); each block's distinct values and codes stay in the
  object store, are merged by a tree of tasks and turned into batch-wide codes, duplicate pairs and the
  content fingerprint on the cluster; the distinct-value and batch suites then run once on the driver, as
  in `validation.validate_frame`. The result is the same `ValidationResult`.
- rebalance: random_under / random_over draw from the same seeded generator over the labels (1 byte per
  row on the driver) with balance.py's own samplers, so the compact frame is the pandas path's, row for row.

Block size bounds every worker's memory in load, validate and rebalance; a per-query reducer holds every
row of its queries, so its bound is the largest query's rows (per_query_table). The driver holds the small
per-block facts, the batch's distinct query/item/title values (the GX suites judge distinct values in one
frame, as on pandas; bounded by the catalogue and the query vocabulary, not by rows), rebalance's labels,
repeats and sampling arrays (~25 B per row at peak) and one block's codes at a time. docs/BENCHMARKS.md
has the measured peaks per process up to 100M rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tailguard import contract
from tailguard.contract import CANONICAL_COLUMNS, ColumnMapping, ContractError

if TYPE_CHECKING:
    from tailguard.metrics import Evaluation, TrainCounts

TEXT_KEYS = ("query", "item_id", "item_title")
# Block size. Every task pays a fixed cost per block (its text columns' distinct values are pickled out and
# in again: ~45 ms per 500k-row block of the bench's data), so blocks are as large as the cluster's
# parallelism allows: 2 per CPU, between MIN_ and MAX_BLOCK_ROWS rows. ray1 at 10M rows (bench/scale.py,
# 2026-12-01): 268k rows/s with 500k-row blocks, 285k with 1M, 331k with 2.5M. A 2.5M-row block is ~120 MB
# in the object store (Ray Data's default target is 128 MiB); the largest worker peaked at 1.4 GB private.
MAX_BLOCK_ROWS = 2_500_000
MIN_BLOCK_ROWS = 100_000
BLOCKS_PER_CPU = 2
DEFAULT_BLOCK_ROWS = 500_000  # a CSV file's blocks: its rows are not known before it is read
PAIR_PARTITIONS = 4  # duplicate-pair counting: at least 4 reducers, each holding its share of distinct pairs
RAY_ONLY_STRATEGIES = frozenset({"none", "random_under", "random_over"})


class RayEngineError(RuntimeError):
    """The cluster failed a stage (a node died, an object was lost); nothing was written by the stage."""


@dataclass
class RayBatch:
    """A loaded batch: the canonical frame as pandas blocks in the object store plus what read_files keeps
    in attrs.

    blocks: object refs of the pandas blocks in batch order, with the canonical columns, `row_id`
    (0..rows-1) and `augmented`; text columns travel dictionary-encoded (_pack): read a block with
    `unpack` or `frames()`, which give the contract's object columns back exactly. Plain refs rather than
    a Ray Dataset: a Dataset hands its blocks to tasks through one copying task per block
    (`to_pandas_refs`) and reads every block once for its schema on creation, which measured 27 of 106 s
    at 10M rows on one core; a Dataset is built only for scoring.
    files: [{"file", "first_row", "rows"}] per input file (validation names the file of a bad row).
    labels: refs of each block's `label` (int8), kept by the first stage that reads them (validate) so
    rebalance does not read every block again for them (with packed blocks, rebalance at 10M rows on one
    core went from 4.1 to 2.0 s).
    """

    blocks: list[Any]
    files: list[dict]
    columns: list[str]
    rows: int
    ts_unit: str | None = None
    block_rows: list[int] = field(default_factory=list)
    labels: list[Any] | None = field(default=None, repr=False, compare=False)

    def block_refs(self) -> list[Any]:
        """Object refs of the pandas blocks, in batch order."""
        return list(self.blocks)

    def label_refs(self) -> list[Any]:
        """Refs of each block's `label` column (one array per block, in batch order); read once
        per batch. KeyError inside a task when the batch has no `label` column: check `columns` first."""
        if self.labels is None:
            import ray

            task = ray.remote(_labels_of)
            self.labels = [task.remote(b) for b in self.block_refs()]
        return list(self.labels)

    def frames(self) -> Iterator[pd.DataFrame]:
        """The blocks as plain frames (text as object columns), one on the driver at a time, in batch order.
        Raises RayEngineError when the cluster fails."""
        for ref in self.block_refs():
            yield unpack(_get(ref))

    def to_pandas(self) -> pd.DataFrame:
        """The whole batch as one frame (tests and small batches); attrs as data.read_files sets them."""
        frames = [unpack(f) for f in _get(self.block_refs())]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=self.columns)
        # The batch's column order (pandas.concat's union follows the first block, e.g. a plain file's).
        order = [c for c in self.columns if c in df.columns]
        df = df[order + [c for c in df.columns if c not in order]]
        df.attrs["files"] = self.files
        if self.ts_unit:
            df.attrs["ts_unit"] = self.ts_unit
        return df


# --- block transport ----------------------------------------------------------------------------------------
#
# Every task that reads a block unpickles it from the object store, and every task that makes one pickles
# it: for object columns that is one Python string per cell each way. Blocks therefore hold the contract's
# text columns as pandas Categoricals: int codes (zero-copy) plus the block's distinct values. Measured in
# process on the first 500k rows of bench/scale.py's 10M data (32k distinct queries, 61k items, 27k titles):
# pickling 0.19 s out + 0.20 s in as object columns, 0.03 + 0.02 s packed, 0.03 s to unpack all four.
# The encoding is pandas.factorize's, which validate needs anyway. It is lossless for what _read_file
# packs: contract text read from files (str, None for a missing cell), where the contract refuses NUL and
# UTF-8 decoding refuses lone surrogates, the two inputs pandas' string hashing can merge.
PACKED_COLUMNS = contract.TEXT_COLUMNS


def _pack(frame: pd.DataFrame) -> pd.DataFrame:
    """The block as stored: each object text column of PACKED_COLUMNS as a Categorical of its distinct
    values in first-occurrence order (code -1: missing)."""
    for col in PACKED_COLUMNS:
        if col in frame.columns and frame[col].dtype == object:
            values = frame[col].to_numpy(object)
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
            if any(values[i] is not None for i in np.flatnonzero(codes < 0)):
                continue  # NaN/NA for a missing cell (not from the contract): kept as written, unpacked
            values = pd.Index(np.asarray(uniques, dtype=object), dtype=object)
            frame[col] = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(values))
    return frame


def unpack(frame: pd.DataFrame) -> pd.DataFrame:
    """A block as the contract's frame: packed text columns back to object columns (str, None missing);
    every other column untouched. Idempotent."""
    packed = [
        c for c in PACKED_COLUMNS if c in frame.columns and isinstance(frame[c].dtype, pd.CategoricalDtype)
    ]
    if not packed:
        return frame
    return frame.assign(
        **{c: pd.Series(contract.text_values(frame[c]), index=frame.index, dtype=object) for c in packed}
    )


# --- cluster ------------------------------------------------------------------------------------------------


def connect(address: str | None = None) -> dict:
    """Join the cluster at `address` ('127.0.0.1:6379', 'auto'), or start a local one on loopback.

    Idempotent within a process. Returns {"address", "nodes", "cpus"}. Raises RayEngineError when the
    address answers nothing.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **kwargs)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            raise RayEngineError(f"cannot reach the Ray cluster at {address or 'local'}: {exc}") from None
        _quiet_data()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {
        "address": address or "local",
        "nodes": len(nodes),
        "cpus": float(ray.cluster_resources().get("CPU", 0)),
    }


def _quiet_data() -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _translate(exc: Exception) -> Exception:
    """One clear error for a failed task: its ContractError/ValueError as is, else a RayEngineError."""
    from ray.exceptions import RayTaskError

    cause = getattr(exc, "cause", None) if isinstance(exc, RayTaskError) else None
    if isinstance(cause, ContractError | ValueError):
        return cause
    first = (str(exc).splitlines() or [""])[0][:300]
    return RayEngineError(
        f"the Ray cluster failed a task ({type(exc).__name__}: {first}); nothing was written, rerun the stage"
    )


def _get(refs: Any) -> Any:
    """ray.get that turns a lost node, object or failed task into one clear error (see _translate).

    When one of a list of refs fails, the others are waited for and their errors collected here: tasks that
    depended on the failed one fail too, and Ray prints a traceback for every error nobody collects (7 of
    them for one bad value in an 8-reducer per-query stage). They are not cancelled: `ray.cancel` on a
    task whose dependency failed crashed the driver in Ray 2.60 (CHECK failure in
    TaskManager::CompletePendingTask, seen once in a fresh-clone `make test`).
    """
    import ray
    from ray.exceptions import RayError

    try:
        return ray.get(refs)
    except RayError as exc:
        for ref in refs if isinstance(refs, list) else []:
            with contextlib.suppress(Exception):
                ray.get(ref)
        raise _translate(exc) from None


def _get_stream(stream: Any) -> list[Any]:
    """Every object ref a streaming generator task yields (waits for the task to finish)."""
    from ray.exceptions import RayError

    try:
        return list(stream)
    except RayError as exc:
        raise _translate(exc) from None


# --- load ---------------------------------------------------------------------------------------------------


def _refusal(err: ContractError) -> dict:
    # ContractError's constructor takes six arguments, so it does not pickle through Ray: ship its fields.
    return {"refused": type(err).__name__, "fields": err.to_dict()}


def _rebuild(refusal: dict) -> ContractError:
    kind = getattr(contract, refusal["refused"], ContractError)
    f = refusal["fields"]
    return kind(f["file"], f["column"], f["rule"], f["observed"], f["examples"], f["hint"])


def _read_file(
    index: int,
    path: str,
    mapping: dict | None,
    chunk_rows: int,
    first_row: int | None,
    required: tuple[str, ...] = contract.REQUIRED_COLUMNS,
    not_null: tuple[str, ...] = (),
    aside: dict[str, str] | None = None,
):
    """Generator task: each coerced chunk with `row_id` and `augmented`, then one summary dict last.

    first_row: the file's first batch row when the files before it were counted from Parquet metadata;
    None: row ids are the file's own rows and load shifts them once every file's length is known.
    aside: input columns renamed before anything reads them ({name in the file: name in the blocks}).
    """
    cfg = ColumnMapping(**mapping) if mapping else None
    rows, units, columns, sizes = 0, [], None, []
    row_ids = None  # a file tailguard wrote (row_id + source_row_id): its whole row_id column, read once
    own_refusal: tuple[ContractError, list[str]] | None = None  # a chunk's error, and its own columns
    try:
        # iter_frames refuses a file whose chunks read ts differently (offsets, epoch units), as whole.
        for chunk in contract.iter_frames(
            path, cfg, chunk_rows, required=required, not_null=not_null, packed=True
        ):
            units.append((chunk.attrs.get("ts_kind") is not None, chunk.attrs.get("ts_unit")))
            if aside:
                chunk = chunk.rename(columns=aside)
            if own_refusal:
                continue  # a later chunk's contract error still comes first, as data.read_files orders them
            if row_ids is None and {"row_id", "source_row_id"} <= set(chunk.columns):
                row_ids = contract.read_columns(path, cfg, chunk_rows, ["row_id"])["row_id"]
            try:
                chunk = contract.own_columns(chunk, path, row_ids)  # as data.read_files reads them
            except ContractError as err:
                own_refusal = (err, [c for c in contract.OWN_COLUMNS if c in chunk.columns])
                continue
            columns = [str(c) for c in chunk.columns]
            frame = chunk.reset_index(drop=True)
            frame.attrs = {}
            frame["row_id"] = (first_row or 0) + chunk.index.to_numpy(np.int64)
            if "source_row_id" in frame.columns:  # the file's rows -> the batch's (load shifts them later)
                frame["source_row_id"] = (first_row or 0) + frame["source_row_id"].to_numpy(np.int64)
            if "augmented" not in frame.columns:
                frame["augmented"] = False
            rows += len(frame)
            sizes.append(len(frame))
            yield _pack(frame)
        if own_refusal:  # the whole file's own columns give the whole file's counts and first rows
            err, present = own_refusal
            contract.own_columns(contract.read_columns(path, cfg, chunk_rows, present), path)
            raise err  # not reached: what fails in a chunk fails in the whole file
    except ContractError as err:
        yield _refusal(err)
        return
    # The file's unit: the chunks holding values' (iter_frames made them agree), else the first chunk's.
    unit = next((u for has_values, u in units if has_values), units[0][1] if units else None)
    summary = {"index": index, "rows": rows, "columns": columns, "ts_unit": unit}
    yield summary | {"sizes": sizes, "first_row": first_row or 0}


def _parquet_rows(path: str) -> int | None:
    """Rows in a Parquet file's footer (no data read); None for another format or an unreadable footer."""
    try:
        import pyarrow.parquet as pq

        with open(path, "rb") as fh:
            if fh.read(4) != b"PAR1":
                return None
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # noqa: BLE001 - the read task reports the file's real fault under the contract
        return None


def _first_rows(counts: list[int | None]) -> list[int | None]:
    """Each file's first batch row where every file before it is Parquet (footer counts), else None."""
    firsts: list[int | None] = []
    start: int | None = 0
    for rows in counts:
        firsts.append(start)
        start = None if rows is None or start is None else start + rows
    return firsts


def _chunk_rows(counts: list[int | None], cpus: int) -> list[int]:
    """Rows per block of each file: a Parquet file (footer count) in equal blocks of at most the batch's
    target (BLOCKS_PER_CPU blocks per cluster CPU, clamped to MIN_/MAX_BLOCK_ROWS); a CSV file in
    DEFAULT_BLOCK_ROWS. E.g. 4 files of 2.5M rows: one block each on 1 or 2 CPUs, 8 of 1.25M on 4 CPUs."""
    total = sum(c for c in counts if c)
    target = min(MAX_BLOCK_ROWS, max(MIN_BLOCK_ROWS, -(-total // (BLOCKS_PER_CPU * max(1, cpus)))))
    chunks = []
    for rows in counts:
        if rows is None:
            chunks.append(DEFAULT_BLOCK_ROWS)
            continue
        blocks = max(1, -(-rows // target))
        chunks.append(max(1, -(-rows // blocks)))
    return chunks


def _shift_row_ids(frame: pd.DataFrame, offset: int, sources: bool = False) -> pd.DataFrame:
    """The block with row ids (and sources) moved by offset; sources=True: a block of a plain file in a batch
    whose other files have source_row_id gets its own rows as sources, as data.read_files fills them."""
    ids = ("row_id", "source_row_id") if "source_row_id" in frame.columns else ("row_id",)
    out = frame.assign(**{c: frame[c].to_numpy(np.int64) + offset for c in ids})
    if sources and "source_row_id" not in frame.columns:
        out["source_row_id"] = out["row_id"].to_numpy(np.int64, copy=True)
    return out


def load(
    uri: str | Path | list[Path],
    mapping: ColumnMapping | dict[str, str] | None = None,
    block_rows: int | None = None,
    required: tuple[str, ...] = contract.REQUIRED_COLUMNS,
    not_null: tuple[str, ...] = (),
    aside: dict[str, str] | None = None,
) -> RayBatch:
    """Read a batch (file, folder or s3:// URI) into a RayBatch under the data contract; never half-loaded.

    Every file is read by its own task, chunk by chunk; chunks are the blocks, of block_rows rows (None:
    sized to the cluster by _chunk_rows). Row ids are assigned while
    reading where the files before are Parquet (their footers give the counts), else by one shift task per
    block of a later file. Raises the same ContractError subclasses as data.load_batch (the first failing
    file in batch order), RayEngineError when the cluster fails. required / not_null: as contract.iter_frames
    takes them (the scorer needs only query and item_title, neither missing, as on pandas). aside: input
    columns renamed as read ({name in the files: name in the blocks}; `predict` keeps an input's own
    row_id or augmented this way, apart from the blocks' columns of those names).
    """
    import ray

    from tailguard.data import materialize

    # A list: files already materialized (the CLI downloads an s3:// batch once for fingerprint and read).
    files = [str(p) for p in (uri if isinstance(uri, list) else materialize(str(uri)))]
    cfg = mapping if isinstance(mapping, ColumnMapping) else ColumnMapping(columns=dict(mapping or {}))
    remote = ray.remote(num_returns="streaming")(_read_file)
    counts = [_parquet_rows(f) for f in files]
    firsts = _first_rows(counts)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    chunks = [block_rows] * len(files) if block_rows else _chunk_rows(counts, cpus)
    streams = [
        remote.remote(i, f, cfg.model_dump(), chunks[i], firsts[i], required, not_null, aside)
        for i, f in enumerate(files)
    ]
    per_file = [_get_stream(s) for s in streams]  # refs: chunks, then the summary (owned by this driver)
    summaries = _get([refs[-1] for refs in per_file])
    for summary in summaries:  # file order, like read_files: the first bad file is the one reported
        if "refused" in summary:
            raise _rebuild(summary)
    _same_shape(files, summaries)
    starts = np.cumsum([0] + [s["rows"] for s in summaries[:-1]])
    # pandas.concat's columns: the first file's, then each new one in order of appearance.
    # A file tailguard wrote keeps its `augmented` where it stands; other batches get it after row_id.
    seen = dict.fromkeys(c for s in summaries for c in s["columns"])
    columns = [*seen, "row_id", *([] if "augmented" in seen else ["augmented"])]
    blocks: list[Any] = []
    shift = ray.remote(_shift_row_ids)
    for refs, start, summary in zip(per_file, starts, summaries, strict=True):
        # A file after a CSV (or after a Parquet file whose footer disagreed with its rows) was numbered
        # from the wrong first row: one shift task per block puts it right.
        offset = int(start) - summary["first_row"]
        sources = "source_row_id" in seen and "source_row_id" not in summary["columns"]
        blocks += [shift.remote(ref, offset, sources) if offset or sources else ref for ref in refs[:-1]]
    units = sorted({s["ts_unit"] for s in summaries if s["ts_unit"]})
    files_meta = [
        {"file": f, "first_row": int(start), "rows": s["rows"]}
        for f, start, s in zip(files, starts, summaries, strict=True)
    ]
    rows = int(sum(s["rows"] for s in summaries))
    sizes = [n for s in summaries for n in s["sizes"]]
    return RayBatch(blocks, files_meta, columns, rows, units[0] if units else None, sizes)


def _same_shape(files: list[str], summaries: list[dict]) -> None:
    """Every file has the first file's contract columns and one ts unit across the batch (ContractError)."""
    first = sorted(set(summaries[0]["columns"]) & set(CANONICAL_COLUMNS))
    for path, summary in zip(files[1:], summaries[1:], strict=True):
        cols = sorted(set(summary["columns"]) & set(CANONICAL_COLUMNS))
        if cols != first:
            odd = sorted(set(cols) ^ set(first))
            raise ContractError(
                path, odd[0], "same_columns_in_every_file",
                f"contract columns {cols} differ from {Path(files[0]).name}'s {first}",
                hint="export every file of a batch with the same columns",
            )  # fmt: skip
    units = sorted({s["ts_unit"] for s in summaries if s["ts_unit"]})
    if len(units) > 1:
        raise ContractError(
            files[0], "ts", "same_ts_unit_in_every_file",
            f"ts is read as {units} in different files of one batch",
            hint="export every file's ts in one unit (or as ISO 8601)",
        )  # fmt: skip


# --- validate -----------------------------------------------------------------------------------------------
#
# validation.validate_frame's steps, split where a batch no longer fits one process. Its internal helpers
# (suite selection, the GX run, the collection of failures) are reused as they are, so the rules, messages
# and examples cannot drift apart between the engines.


FACT_COLUMNS = (*TEXT_KEYS, "category")
# _block_facts' returns: the small facts, a distinct-value frame per FACT_COLUMNS, the block's own factorize
# codes per TEXT_KEYS, then the label (int8; the fingerprint hashes it as float64). Only the first goes to
# the driver.
FACT_RETURNS = 1 + len(FACT_COLUMNS) + len(TEXT_KEYS) + 1


def _block_facts(frame: pd.DataFrame, suite_json: dict, parameters: dict, seen: list | None) -> tuple:
    """Per block (FACT_RETURNS values): {rows suite's GX result (index = batch row), rows, positives, rows
    whose category the previous batch never had}; distinct values with their first batch row per text
    column; the block's factorize codes (-1 for empty); the label as stored (int8). Absent columns give
    None."""
    from tailguard import validation as v

    facts: dict[str, Any] = {"rows": len(frame)}
    derived = v._derive(frame)
    # A packed column factorizes by its codes (same order, -1 missing) and gives a CategoricalIndex: as text.
    derived.uniques = {
        col: pd.Index(np.asarray(u, dtype=object), dtype=object) if isinstance(u, pd.CategoricalIndex) else u
        for col, u in derived.uniques.items()
    }
    row_ids = frame["row_id"].to_numpy(np.int64)
    rows = v._rows_frame(frame, derived)
    rows.index = pd.Index(row_ids)  # GX reports unexpected rows by index: the batch row, not the block row
    if suite_json["expectations"]:
        context = v._validation_context()
        with v._CONTEXT_LOCK:
            facts["rows_suite"] = v._run_suite(context, "rows", suite_json, rows, parameters).to_json_dict()
    distinct: dict[str, pd.DataFrame] = {}
    for col, uniques in derived.uniques.items():
        first = np.full(len(uniques), -1, dtype=np.int64)
        # Reversed: the first occurrence is written last and wins.
        valid = np.flatnonzero(derived.codes[col] >= 0)[::-1]
        first[derived.codes[col][valid]] = row_ids[valid]
        distinct[col] = pd.DataFrame(
            {"value": pd.Series(uniques.astype(object), dtype=object), "first": first}
        )
    if "label" in frame.columns and pd.api.types.is_numeric_dtype(frame["label"].dtype):
        facts["positives"] = int((frame["label"].to_numpy() == 1).sum())
    if "category" in derived.codes and seen is not None:
        codes = derived.codes["category"]
        unseen_value = ~derived.uniques["category"].astype(str).isin(seen)
        facts["unseen_category_rows"] = int(((codes >= 0) & unseen_value[np.maximum(codes, 0)]).sum())
    label = _labels_of(frame) if "label" in frame else np.zeros(0)
    codes = [derived.codes[c].astype(np.int32) if c in derived.codes else None for c in TEXT_KEYS]
    return (facts, *[distinct.get(c) for c in FACT_COLUMNS], *codes, label)


def _labels_of(frame: pd.DataFrame) -> np.ndarray:
    """A block's label as stored: int8 0/1 from the contract (1 B per row in the object store)."""
    return frame["label"].to_numpy()


def _merge_distinct(*parts: pd.DataFrame) -> pd.DataFrame:
    """Distinct values of several blocks, each with its first batch row; ordered by that row."""
    if not parts:
        return pd.DataFrame({"value": pd.Series(dtype=object), "first": pd.Series(dtype=np.int64)})
    both = pd.concat(parts, ignore_index=True)
    first = both.groupby("value", sort=False)["first"].min()
    return pd.DataFrame({"value": first.index.astype(object), "first": first.to_numpy()}).sort_values(
        "first", kind="stable", ignore_index=True
    )


def _tree_merge(refs: list[Any], fan_in: int = 8, merge_fn: Any = _merge_distinct) -> Any:
    """Merge per-block results on the cluster, fan_in at a time, with merge_fn (which takes any number of
    parts, none included): the ref of the one result left."""
    import ray

    merge = ray.remote(merge_fn)
    if not refs:
        return merge.remote()
    while len(refs) > 1:
        refs = [merge.remote(*refs[i : i + fan_in]) for i in range(0, len(refs), fan_in)]
    return refs[0]


_UNIQUES: dict[str, dict[str, pd.Index]] = {}  # per worker process: the batch's distinct values, by object id


def _batch_uniques(holder: list[Any]) -> dict[str, pd.Index]:
    """The batch's distinct values (an object ref in a list, so Ray passes the ref), fetched and hashed once
    per worker process rather than once per block: ~700k strings cost ~0.3 s to unpickle and hash."""
    import ray

    key = holder[0].hex()
    if key not in _UNIQUES:
        _UNIQUES.clear()
        _UNIQUES[key] = ray.get(holder[0])
    return _UNIQUES[key]


def _block_codes(holder: list[Any], n_items: int, parts: int, *local: Any) -> tuple:
    """Per block: the batch-wide codes of query/item_id/item_title (first-occurrence order, -1 for empty)
    from the block's own codes and distinct values, and the (query, item_id) pair keys in `parts` partitions.

    local: the block's codes per TEXT_KEYS, then its distinct-value frames per TEXT_KEYS (None: absent).
    """
    uniques = _batch_uniques(holder)
    codes: dict[str, np.ndarray] = {}
    for col, block_codes, values in zip(
        TEXT_KEYS, local[: len(TEXT_KEYS)], local[len(TEXT_KEYS) :], strict=True
    ):
        if block_codes is None:
            continue
        # -1 stays -1: index -1 of the appended sentinel.
        lookup = np.append(uniques[col].get_indexer(values["value"].to_numpy(object)), -1).astype(np.int64)
        codes[col] = lookup[block_codes]
    pair_parts = [np.zeros(0, np.int64)] * parts
    if "query" in codes and "item_id" in codes:
        # validation._duplicate_mask's key: query code * (items + 1) + item code + 1 (empty values included).
        pair = codes["query"] * (n_items + 1) + (codes["item_id"] + 1)
        part = pair % parts
        # pd.unique hashes; np.unique sorts: 0.02 vs 0.13 s per 500k-row block in 4 parts (numpy 2.4).
        pair_parts = [pd.unique(pair[part == p]) for p in range(parts)]
    return (*[codes.get(c) for c in TEXT_KEYS], *pair_parts)


def _count_distinct(*arrays: np.ndarray) -> int:
    # Hashing, not sorting: 0.30 vs 2.6 s for 3M int64 keys (numpy 2.4's np.unique, measured here).
    return int(len(pd.unique(np.concatenate(arrays)))) if arrays else 0


def _merge_rows_suite(blocks: list[dict], rows: int) -> dict:
    """One suite result from per-block ones: counts summed, the first examples in batch order, and success
    judged from the summed counts (mostly = 1 unless the expectation says otherwise)."""
    merged = dict(blocks[0])
    results = []
    for i, first in enumerate(blocks[0]["results"]):
        parts = [b["results"][i] for b in blocks]
        raised = [p for p in parts if (p.get("exception_info") or {}).get("raised_exception")]
        if raised:
            results.append(raised[0])
            continue
        res = [dict(p.get("result") or {}) for p in parts]
        if "observed_value" in res[0] or "unexpected_count" not in res[0]:
            # An aggregate (e.g. the column's type): every block has the same dtype; keep a failing one.
            results.append(next((p for p in parts if not p["success"]), first))
            continue
        total = {k: sum(int(r.get(k) or 0) for r in res) for k in ("element_count", "missing_count")}
        unexpected = sum(int(r.get("unexpected_count") or 0) for r in res)
        nonmissing = total["element_count"] - total["missing_count"]
        values = [x for r in res for x in (r.get("partial_unexpected_list") or [])]
        index = [x for r in res for x in (r.get("partial_unexpected_index_list") or [])]
        mostly = float((first.get("expectation_config") or {}).get("kwargs", {}).get("mostly") or 1.0)
        # GX's _mostly_success on the summed counts; with mostly = 1 (every rule here) it is `no unexpected`.
        success = unexpected == 0 if mostly >= 1 else (nonmissing - unexpected) / max(nonmissing, 1) >= mostly
        result = {
            **res[0],
            **total,
            "unexpected_count": unexpected,
            "missing_percent": 100 * total["missing_count"] / total["element_count"] if rows else None,
            "unexpected_percent": 100 * unexpected / nonmissing if nonmissing else None,
            "unexpected_percent_total": 100 * unexpected / total["element_count"] if rows else None,
            "unexpected_percent_nonmissing": 100 * unexpected / nonmissing if nonmissing else None,
            "partial_unexpected_list": values[: _max_examples()],
            "partial_unexpected_index_list": index[: _max_examples()],
        }
        if "partial_unexpected_counts" in result:
            counts = pd.Series(values[: _max_examples()], dtype=object).value_counts(sort=True)
            result["partial_unexpected_counts"] = [{"value": k, "count": int(c)} for k, c in counts.items()]
        results.append({**first, "success": bool(success), "result": result})
    merged["results"] = results
    merged["success"] = all(r["success"] for r in results)
    return merged


def _max_examples() -> int:
    from tailguard.validation import MAX_EXAMPLES

    return MAX_EXAMPLES


@dataclass
class _Distinct:
    """Distinct values of the batch's text columns in first-occurrence order (pandas.factorize's order)."""

    frames: dict[str, pd.DataFrame]

    def uniques(self, col: str) -> pd.Index:
        return pd.Index(self.frames[col]["value"].to_numpy(object), dtype=object)


def _fingerprint(
    batch: RayBatch, distinct: _Distinct, code_refs: list[tuple], label_refs: list[Any], parts: int
) -> tuple[str, int]:
    """(validation._content_sha256 of the batch, rows repeating an earlier (query, item_id) pair).

    The digest is sequential (codes of every row of a column, then its distinct values), so it streams the
    blocks' codes in batch order, one block in memory at a time. Pair keys are counted per partition on
    the cluster.
    """
    import ray

    digest = hashlib.sha256()
    for position, col in enumerate(TEXT_KEYS):
        if col not in distinct.frames:
            continue
        for refs in code_refs:
            digest.update(_get(refs[position]).astype(np.int64, copy=False).tobytes())
        digest.update("\x1f".join(map(str, distinct.uniques(col))).encode("utf-8", "surrogatepass"))
    if "label" in batch.columns:
        for ref in label_refs:  # float64, as validation._content_sha256 hashes the label
            digest.update(np.asarray(_get(ref), dtype=np.float64).tobytes())
    duplicates = 0
    if "query" in distinct.frames and "item_id" in distinct.frames:
        count = ray.remote(_count_distinct)
        first = len(TEXT_KEYS)
        partitions = [count.remote(*[refs[first + p] for refs in code_refs]) for p in range(parts)]
        duplicates = batch.rows - int(sum(_get(partitions)))
    return digest.hexdigest(), duplicates


def _batch_stats(batch: RayBatch, facts: list[dict], distinct: _Distinct, sha: str, dups: int) -> dict:
    """validation._stats from the cluster's per-block facts (same keys, same order, same values)."""
    rows = batch.rows
    stats: dict[str, Any] = {"rows": rows, "columns": list(batch.columns)}
    if all("positives" in f for f in facts) and "label" in batch.columns:
        stats["positive_share"] = float(sum(f["positives"] for f in facts) / rows) if rows else 0.0
    if "query" in distinct.frames and "item_id" in distinct.frames:
        stats["duplicate_pair_share"] = float(dups / rows) if rows else 0.0
    for col, key in (("query", "distinct_queries"), ("item_id", "distinct_items")):
        if col in distinct.frames:
            stats[key] = len(distinct.frames[col])
    if "item_title" in distinct.frames:
        lengths = distinct.uniques("item_title").astype(str).str.len().to_numpy()
        if len(lengths):
            stats["title_length"] = {
                "min": int(lengths.min()),
                "max": int(lengths.max()),
                "mean_distinct": float(lengths.mean()),
            }
    if "category" in distinct.frames:
        from tailguard.validation import MAX_CATEGORY_VALUES

        values = distinct.uniques("category").astype(str)
        stats["category_values"] = sorted(values.tolist())[:MAX_CATEGORY_VALUES]
        stats["category_values_truncated"] = len(values) > MAX_CATEGORY_VALUES
    if batch.ts_unit:
        stats["ts_unit"] = batch.ts_unit
    stats["content_sha256"] = sha
    return stats


def validate(
    batch: RayBatch,
    source: str,
    previous_stats: dict | None = None,
    policy: Any = None,
    suite_dir_path: str | Path | None = None,
) -> Any:
    """validation.validate_frame on a RayBatch: the same ValidationResult; never raises for bad data.

    Raises RayEngineError when the cluster fails mid-stage.
    """
    import time

    import ray

    from tailguard import validation as v

    started = time.perf_counter()
    policy = policy or v.ValidationPolicy()
    parameters = policy.parameters()
    directory = v.suite_dir(suite_dir_path)
    result = v.ValidationResult(source=str(source), failures=[], warnings=[], could_not_run=[], stats={})
    previous = previous_stats or None
    seen = previous.get("category_values") if previous else None
    if previous and previous.get("category_values_truncated"):
        seen = None
    # GX's first import and context take ~5 s: made in a thread while the cluster runs the facts pass.
    warm = threading.Thread(target=_warm_gx, name="tailguard-gx-warm")
    warm.start()
    blocks = batch.block_refs()
    rows_template = pd.DataFrame({c: pd.Series(dtype=object) for c in _rows_columns(batch.columns)})
    rows_json = v.load_suite_json("rows", directory)
    rows_suite, skipped = v._select_expectations(rows_json, rows_template, {"rows"})
    facts_task = ray.remote(_block_facts).options(num_returns=FACT_RETURNS)
    facts_refs = [facts_task.remote(b, rows_suite, parameters, seen) for b in blocks]
    del blocks
    facts = _get([f[0] for f in facts_refs])  # the small part; distinct values and codes stay on the cluster
    present = [(i, col) for i, col in enumerate(FACT_COLUMNS) if col in batch.columns]
    merged = _get([_tree_merge([f[1 + i] for f in facts_refs]) for i, _ in present])  # columns in parallel
    distinct = _Distinct({col: frame for (_, col), frame in zip(present, merged, strict=True)})
    uniques = ray.put({c: distinct.uniques(c) for c in TEXT_KEYS if c in distinct.frames})
    n_items = len(distinct.frames["item_id"]) if "item_id" in distinct.frames else 0
    parts = max(PAIR_PARTITIONS, -(-len(facts_refs) // 25))  # ~25 blocks' distinct pairs per reducer
    codes_task = ray.remote(_block_codes).options(num_returns=len(TEXT_KEYS) + parts)
    at = 1 + len(FACT_COLUMNS)
    code_refs = [
        codes_task.remote([uniques], n_items, parts, *f[at : at + len(TEXT_KEYS)], *f[1 : 1 + len(TEXT_KEYS)])
        for f in facts_refs
    ]
    # The driver judges the row and distinct-value suites while the cluster computes codes and pair keys.
    warm.join()  # two threads importing GX's circular modules at once can deadlock
    _judge_suites(result, batch, facts, distinct, rows_suite, skipped, parameters, directory)
    if "label" in batch.columns:
        batch.labels = [f[-1] for f in facts_refs]  # rebalance reuses them (RayBatch.label_refs)
    sha, dups = _fingerprint(batch, distinct, code_refs, [f[-1] for f in facts_refs], parts)
    result.stats = _batch_stats(batch, facts, distinct, sha, dups)
    _judge_batch(result, batch, facts, previous, parameters, directory)
    result.elapsed_s = time.perf_counter() - started
    return result


def _rows_columns(columns: list[str]) -> list[str]:
    """Columns validation._rows_frame keeps (the row suite's expectations are chosen from them)."""
    keep = ("query", "item_id", "item_title", "label", "price", "relevance", "position")
    return [c for c in keep if c in columns]


def _clip_json(suite_result: dict) -> dict:
    """The suite JSON as validate_frame stores it (long cell values clipped where validation does so)."""
    from tailguard import validation as v

    clip = getattr(v, "_clip_gx_json", None)
    return clip(suite_result) if clip else suite_result


def _warm_gx() -> None:
    """validation.warm_up in a background thread; a failure is left for the real call to raise."""
    from tailguard import validation as v

    with contextlib.suppress(Exception):
        v.warm_up()


def _judge_suites(
    result: Any,
    batch: RayBatch,
    facts: list[dict],
    distinct: _Distinct,
    rows_suite: dict,
    rows_skipped: list[str],
    parameters: dict,
    directory: Path,
) -> None:
    """Collect the row suite (merged from the blocks') and run the distinct-value suites on the driver."""
    from tailguard import contract as c
    from tailguard import validation as v

    source, files = result.source, batch.files
    result.skipped += rows_skipped
    if rows_suite["expectations"]:
        merged = _merge_rows_suite([f["rows_suite"] for f in facts], batch.rows)
        result.gx_results.append(_clip_json(merged))
        v._collect(v.suite_result_from_json(merged), source, files, parameters, None, "rows", None, result)
    context = v._validation_context()
    for name, col in (("titles", "item_title"), ("queries", "query")):
        if col not in distinct.frames:
            result.skipped.append(f"suite {name}: its column is absent")
            continue
        values = pd.Series(distinct.frames[col]["value"].to_numpy(object), dtype=object)
        frame = pd.DataFrame({col: values, col + v.VISIBLE_SUFFIX: c.visible_texts(values)})
        first_row = distinct.frames[col]["first"].to_numpy(np.int64)
        _run_and_collect(result, context, name, frame, first_row, f"distinct {col} values", set(),
                         parameters, directory, files, None)  # fmt: skip


def _judge_batch(
    result: Any, batch: RayBatch, facts: list[dict], previous: dict | None, parameters: dict, directory: Path
) -> None:
    """Run the batch suite on the driver over result.stats (and the previous batch's, when given)."""
    from tailguard import validation as v

    stub = v._Derived(codes={}, uniques={})  # the category share is counted per block on the cluster
    comparison, available = v._comparison_frame(result.stats, stub, previous)
    if previous and "unseen_category_rows" in (facts[0] if facts else {}):
        share = sum(f["unseen_category_rows"] for f in facts) / batch.rows if batch.rows else 0.0
        comparison["unseen_category_share"] = float(share)
        available.add("category_vs_previous")
    batch_values = comparison.iloc[0].to_dict()
    _run_and_collect(result, v._validation_context(), "batch", comparison, None, "batches", available,
                     parameters, directory, batch.files, batch_values)  # fmt: skip


def _run_and_collect(
    result: Any,
    context: Any,
    name: str,
    frame: pd.DataFrame,
    index_to_row: np.ndarray | None,
    unit: str,
    available: set[str],
    parameters: dict,
    directory: Path,
    files: list[dict],
    batch_values: dict | None,
) -> None:
    from tailguard import validation as v

    suite_json, skipped = v._select_expectations(v.load_suite_json(name, directory), frame, available)
    result.skipped += skipped
    if not suite_json["expectations"]:
        return
    with v._CONTEXT_LOCK:
        gx_result = v._run_suite(context, name, suite_json, frame, parameters)
    result.gx_results.append(_clip_json(gx_result.to_json_dict()))
    v._collect(gx_result, result.source, files, parameters, index_to_row, unit, batch_values, result, frame)


# --- rebalance ----------------------------------------------------------------------------------------------


def _repeats(labels: np.ndarray, config: Any, notes: list[str]) -> np.ndarray:
    """How many times each row counts after random_under / random_over: balance.py's samplers on the same
    seeded generator, in the same order, so the rows are the pandas path's (balance._resample_rows)."""
    from tailguard import balance as b

    rng = np.random.default_rng(config.seed)
    strategies = [s for s in b.ORDER if s in config.strategies]
    combined = np.arange(len(labels))
    if "random_under" in strategies:
        combined = b.random_under_positions(labels, config.ratio, rng)
        if len(combined) == len(labels):
            notes.append(
                f"random_under: already at or below {config.ratio} negatives per positive; nothing dropped"
            )
    repeats = np.zeros(len(labels), dtype=np.int32)
    repeats[combined] = 1
    if "random_over" in strategies:
        positives, copies = b.random_over_copies(labels[combined], config.over_ratio, rng)
        if not copies.any():
            notes.append(f"random_over: already at or above {config.over_ratio} positives per negative")
        np.add.at(repeats, combined[positives], copies.astype(np.int32))
    return repeats


def _compact_block(frame: pd.DataFrame, repeats: np.ndarray) -> tuple[pd.DataFrame, tuple[int, int, int]]:
    """(the block's kept rows once each, with the markers balance adds and `repeats`; (how many, augmented
    rows in, augmented rows out counting repeats)). A row read from a balanced file keeps its source, as
    balance._with_markers keeps it."""
    counts = repeats[frame["row_id"].to_numpy(np.int64)]
    keep = np.flatnonzero(counts)
    out = frame.take(keep).reset_index(drop=True)
    if "source_row_id" not in out.columns:
        out["source_row_id"] = out["row_id"].to_numpy(np.int64, copy=True)
    out["repeats"] = counts[keep]
    augmented = frame["augmented"].to_numpy(bool)
    return out, (len(out), int(augmented.sum()), int(counts[augmented].sum()))


def rebalance(batch: RayBatch, config: Any) -> tuple[RayBatch, dict]:
    """balance.rebalance(train, config, compact=True, report=False) on the cluster: (compact batch, report).

    Supports none, random_under and random_over (the resamplers that need only the labels); others raise
    BalanceConfigError naming the pandas engine. The compact batch's blocks hold the kept rows in batch order
    with `source_row_id` and `repeats`; its `rows` is the number of distinct rows kept.
    """
    import ray

    from tailguard.balance import BalanceConfigError, refuse_compact

    refuse_compact(batch.columns)
    other = sorted(set(config.strategies) - RAY_ONLY_STRATEGIES)
    if other:
        raise BalanceConfigError(
            f"strategy {other[0]!r} runs on the pandas engine only (the Ray engine resamples with "
            f"{sorted(RAY_ONLY_STRATEGIES)}); use --engine pandas"
        )
    blocks = batch.block_refs()
    parts = _get(batch.label_refs())
    labels = np.concatenate(parts) if parts else np.zeros(0, np.int8)
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        shown = pd.unique(labels[bad])[:5].tolist()
        raise BalanceConfigError(f"training frame: column 'label' must be 0/1; offending values {shown}")
    labels = labels.astype(np.int8, copy=False)
    needs = [s for s in ("random_under", "random_over") if s in config.strategies]
    if needs and not labels.any():
        raise BalanceConfigError(
            f"{needs[0]} would leave no positives: the training split ({len(labels)} rows) has no rows with "
            "label == 1"
        )
    notes: list[str] = []
    repeats = _repeats(labels, config, notes)
    shared = ray.put(repeats)  # read zero-copy by every block task from the object store
    compact = ray.remote(_compact_block).options(num_returns=2)
    out_blocks, size_refs = (
        zip(*[compact.remote(b, shared) for b in blocks], strict=True) if blocks else ((), ())
    )
    out_blocks = list(out_blocks)
    facts = _get(list(size_refs))
    sizes = [n for n, _, _ in facts]
    added = [c for c in ("source_row_id", "repeats") if c not in batch.columns]
    out = RayBatch(
        out_blocks, batch.files, batch.columns + added, int(sum(sizes)), batch.ts_unit, sizes,
    )  # fmt: skip
    kept = repeats > 0
    report = {
        "strategies": [s for s in ("random_under", "random_over") if s in config.strategies] or ["none"],
        "options": config.model_dump(mode="json"),
        "augmented_rows": sum(a for _, _, a in facts),  # rows read as augmented (a balanced file's)
        "augmented_rows_before": sum(a for _, a, _ in facts),
        "compact": True,
        "notes": notes,
        "before": {"rows": len(labels), "positives": int(labels.sum())},
        "after": {"rows": int(repeats.sum()), "positives": int(repeats[labels == 1].sum())},
        "distinct_rows": int(kept.sum()),
    }
    return out, report


# --- score and evaluate -------------------------------------------------------------------------------------
#
# Scoring: one actor per GPU (num_gpus=1 each) where the cluster has GPUs, else CPU actors; each loads every
# model once and scores the blocks handed to it with model.Scorer (the pandas path's scorer), so a score
# differs from `tailguard predict`'s only by float noise of batch shapes (< 1e-6, model.Scorer's note).
# Per-query aggregation: rows are shuffled by a hash of the query into partitions, so every query's rows
# meet in one task, which computes metrics.per_query_values (the pandas path's own function).
# metrics.json: the projected eval columns and the training (query, item_id) columns are collected to the
# driver and metrics.evaluate runs unchanged, so the two engines cannot drift. The bootstrap's pooled ROC and
# PR AUC are exact weighted passes over every eval row (metrics._Curve), not ratios of per-query sums, so
# the per-query table alone cannot feed it; eval sets (held-out queries) are the small side of a batch.

QUERY_PARTITIONS = 8  # per-query aggregation: at least 8 reducers ...
# ... and ~2.5M eval rows each at most: rows travel compact (~30 B each), but per_query_values' sorts and tie
# arrays take ~150 B per row while a reducer works (1.7 GB private at 30M rows, mostly the head query).
QUERY_ROWS_PER_PARTITION = 2_500_000


def _pack_folder(folder: Path) -> dict[str, bytes]:
    """A model folder as {relative path: bytes} (members/ of an ensemble included), for the object store:
    actors on other nodes cannot read the driver's disk."""
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    return {f.relative_to(folder).as_posix(): f.read_bytes() for f in files}


def _unpack_folder(files: dict[str, bytes], dest: Path) -> Path:
    """Write _pack_folder's files under dest (relative paths only: nothing outside dest is written)."""
    for name, data in files.items():
        target = (dest / name).resolve()
        if not target.is_relative_to(dest.resolve()):
            raise ValueError(f"model file {name!r} points outside its folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


class _ScoreActor:
    """A Ray Data actor holding one model.Scorer per score column: each block in, its row_id and scores out.

    Only row_id and the scores travel back through Ray Data: its Arrow blocks would retype other columns
    (a nullable int64 came back float64 beside a text column, 2**53 + 1 as 2**53); _attach_scores puts the
    scores on the input blocks, which keep their own dtypes.

    models: {column: [object ref of _pack_folder(model folder)]} (in a list, so Ray passes the ref): the
    actor writes each folder to its own temporary folder, on whichever node it runs.
    """

    def __init__(self, models: dict[str, list[Any]], batch_size: int, threads: int):
        import tempfile

        import ray

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from tailguard.model import Scorer

        self._tmp = tempfile.TemporaryDirectory(prefix="tailguard-score-")
        self.scorers = {}
        for col, holder in models.items():
            folder = _unpack_folder(ray.get(holder[0]), Path(self._tmp.name) / col)
            self.scorers[col] = Scorer(folder, batch_size=batch_size, threads=threads)

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        text = unpack(frame)  # the scorer reads text
        out = pd.DataFrame({"row_id": frame["row_id"].to_numpy(np.int64)})
        for col, scorer in self.scorers.items():
            out[col] = scorer(text).astype(np.float64)
        return out


def _actor_slots() -> tuple[int, int]:
    """(GPUs, scoring actor slots) of the cluster: one actor per GPU where there are GPUs, else per CPU."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    return gpus, gpus or max(1, int(resources.get("CPU", 1)))


def score(
    batch: RayBatch,
    models: dict[str, str | Path],
    batch_size: int = 256,
    actors: int | None = None,
    threads: int = 1,
) -> RayBatch:
    """Score a RayBatch with every model on cluster actors: {column: model folder} -> the batch plus columns.

    One actor per GPU (num_gpus=1) when the cluster has GPUs, else one per CPU (num_cpus=1, `threads` torch
    threads each), `actors` capping either. The actors return row ids and scores only; each input block
    gets its scores joined on row_id (_attach_scores), so blocks, rows and every other column's dtype are
    the input's. Scores are float64 of float32 probabilities. Raises ModelError for a model folder that
    does not load, RayEngineError when the cluster fails.
    """
    import ray

    from tailguard.model import ModelError, load_model

    for col, folder in models.items():
        if col in batch.columns:
            raise ValueError(f"score column {col!r} is already a column of the batch")
        load_model(Path(folder))  # fail here, once, rather than in every actor
        if (Path(folder) / "hybrid.json").exists():
            # A hybrid's BM25 reads a query's rows as one candidate set; blocks split queries.
            raise ModelError(f"{folder} is a hybrid model: score it with the pandas engine")
    gpus, slots = _actor_slots()
    n = max(1, min(actors or slots, slots, max(1, len(batch.block_rows))))
    dataset = ray.data.from_pandas_refs(batch.block_refs()).map_batches(
        _ScoreActor,
        fn_constructor_kwargs={
            "models": {c: [ray.put(_pack_folder(Path(d)))] for c, d in models.items()},
            "batch_size": batch_size,
            "threads": threads,
        },
        batch_format="pandas",
        batch_size=None,  # one call per block: block size already bounds memory
        concurrency=n,
        num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1,
        zero_copy_batch=False,
    )
    try:
        outputs = [ref for bundle in dataset.iter_internal_ref_bundles() for ref in bundle.block_refs]
        pieces = [ray.remote(_score_piece).options(num_returns=2).remote(ref) for ref in outputs]
        spans = _get([span for _, span in pieces])
        blocks = batch.block_refs()
        ranges = _get([ray.remote(_row_range).remote(b) for b in blocks])
        attach = ray.remote(_attach_scores).options(num_returns=2)
        # Actors finish blocks in any order, and Ray Data may cut or merge them: each input block takes the
        # pieces whose row ids reach into its range and joins them on row_id (unique in a batch).
        pairs = []
        for block, r in zip(blocks, ranges, strict=True):
            mine = [pieces[i][0] for i, span in enumerate(spans) if _meets(span, r)]
            pairs.append(attach.remote(block, list(models), *mine))
        refs = [frame for frame, _ in pairs]
        # A failed join fails here, in score; only the row counts come back, the blocks stay on the cluster.
        _get([rows for _, rows in pairs])
    except ModelError:
        raise
    except Exception as exc:  # a Ray Data execution error wraps the actor's failure
        raise _translate(exc) from None
    return RayBatch(
        refs, batch.files, batch.columns + list(models), batch.rows, batch.ts_unit, batch.block_rows
    )


def score_frame(
    frame: pd.DataFrame, models: dict[str, str | Path], batch_size: int = 256, threads: int = 1
) -> dict[str, np.ndarray]:
    """Score an in-memory frame (a run's eval split) on cluster actors: {name: model folder} -> {name:
    float32 probabilities aligned with frame's rows}, as model.predict gives them up to float noise of batch
    shapes (< 1e-6). Only query and item_title travel, cut into ~4 blocks per actor slot.

    Raises ModelError as `score` does (a hybrid model is refused: score it with model.predict),
    RayEngineError when the cluster fails.
    """
    import ray

    # Private score column names: a batch's own `score` column (an old ranker's, kept by the contract)
    # must not collide with them; only the columns the scorer reads are shipped.
    work = pd.DataFrame({
        "query": frame["query"].to_numpy(object), "item_title": frame["item_title"].to_numpy(object),
        "row_id": np.arange(len(frame), dtype=np.int64),
    })  # fmt: skip
    columns = {f"_score_{i}": name for i, name in enumerate(models)}
    size = max(256, -(-len(work) // (4 * _actor_slots()[1])))
    parts = [work.iloc[i : i + size] for i in range(0, len(work), size)]
    batch = RayBatch(
        [ray.put(p) for p in parts], [], list(work.columns), len(work), None,
        [len(p) for p in parts],
    )  # fmt: skip
    scored = score(batch, {col: models[name] for col, name in columns.items()}, batch_size, threads=threads)
    out = _collect(scored, ["row_id", *columns])
    order = np.argsort(out["row_id"].to_numpy(np.int64), kind="stable")
    return {name: out[col].to_numpy(np.float64)[order].astype(np.float32) for col, name in columns.items()}


def _row_range(frame: pd.DataFrame) -> tuple[int, int]:
    """A block's smallest and largest row id; (0, -1) when it has no rows."""
    ids = frame["row_id"].to_numpy(np.int64)
    return (int(ids.min()), int(ids.max())) if len(ids) else (0, -1)


def _meets(span: tuple[int, int], block: tuple[int, int]) -> bool:
    return span[0] <= span[1] and block[0] <= block[1] and span[0] <= block[1] and block[0] <= span[1]


def _score_piece(block: Any) -> tuple[pd.DataFrame, tuple[int, int]]:
    """A piece Ray Data's actors wrote (Arrow or pandas: row_id and scores) as a numpy-typed frame, and its
    row id range. Ray Data >= 2.56 converts to Arrow-backed dtypes (double[pyarrow], ...) unless its
    DataContext says otherwise."""
    from ray.data import DataContext
    from ray.data.block import BlockAccessor

    numpy_dtypes = DataContext.get_current().copy()
    numpy_dtypes.enable_arrow_backed_pandas_conversion = False
    with DataContext.current(numpy_dtypes):  # this conversion only; the process's context is untouched
        frame = BlockAccessor.for_block(block).to_pandas()
    return frame, _row_range(frame)


def _attach_scores(
    block: pd.DataFrame, columns: list[str], *pieces: pd.DataFrame
) -> tuple[pd.DataFrame, int]:
    """(the input block, untouched, plus the score columns joined from the pieces on row_id as float64; its
    rows). Raises RuntimeError when a row of the block got no score (a piece lost on the way)."""
    if not pieces:
        pieces = (pd.DataFrame({"row_id": np.zeros(0, np.int64), **{c: np.zeros(0) for c in columns}}),)
    scores = pd.concat(pieces, ignore_index=True)
    at = pd.Index(scores["row_id"].to_numpy(np.int64)).get_indexer(block["row_id"].to_numpy(np.int64))
    if (at < 0).any():
        raise RuntimeError(f"scoring lost {int((at < 0).sum())} row(s) of a block; rerun the stage")
    return block.assign(**{c: scores[c].to_numpy(np.float64)[at] for c in columns}), len(block)


def _eval_columns(columns: list[str], score_columns: dict[str, str]) -> list[str]:
    keep = ["row_id", "query", "item_id", "label", "relevance", "category"]
    return [c for c in keep if c in columns] + list(score_columns.values())


def _project(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    # reindex: a column only some files have is NaN in the others' blocks, as pandas.concat makes it.
    return unpack(frame.reindex(columns=columns))


def _collect(batch: RayBatch, columns: list[str]) -> pd.DataFrame:
    """The batch's `columns` on the driver, in batch order (only those columns leave the cluster)."""
    import ray

    task = ray.remote(_project)
    parts = _get([task.remote(b, columns) for b in batch.block_refs()])
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.concat(parts, ignore_index=True)


def _finite_column(frame: pd.DataFrame, col: str, where: str = "") -> np.ndarray:
    """A numeric eval column as float64, or ValueError naming the column, batch rows and values (a CSV keeps
    extra columns as text; an empty cell or a word must not become a silent NaN).

    where: what the count covers, e.g. " of a block" in a task that sees one block.
    """
    if col not in frame.columns:  # a column only other files have: NaN here, as pandas.concat makes it
        frame = frame.assign(**{col: np.nan})
    column = frame[col]
    values, bad = contract.finite_column(frame, col)
    if bad.size:
        raise ValueError(
            f"eval batch: column {col!r} must be a finite number in every row; {bad.size} rows{where} are "
            f"not, e.g. batch rows {frame['row_id'].iloc[bad[:5]].tolist()} with values "
            f"{column.iloc[bad[:5]].tolist()}"
        )
    return values


def _query_partition(queries: np.ndarray, parts: int) -> np.ndarray:
    """Each distinct query's partition: a process-independent hash, the same for a query in every block. A
    lone surrogate (which UTF-8 cannot encode) is hashed as U+FFFD; valid text hashes as itself either way."""
    try:
        hashed = pd.util.hash_array(queries, categorize=False)
    except UnicodeEncodeError:
        safe = [q.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for q in queries]
        hashed = pd.util.hash_array(np.asarray(safe, dtype=object), categorize=False)
    return hashed % np.uint64(parts)


# One reducer's share of one block: (distinct queries, an int32 index into them per row, float64 numerics).
QueryPiece = tuple[np.ndarray, np.ndarray, pd.DataFrame]


def _text_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(per row a code, the distinct values: object array) in first-occurrence order, values named as
    metrics.evaluate names them (`astype(str)`: a missing value is "None", merged with a typed "None")."""
    if not isinstance(column.dtype, pd.CategoricalDtype):
        codes, uniques = pd.factorize(column.astype(str).to_numpy(object))
        return codes, np.asarray(uniques, dtype=object)
    # A packed column: factorize its int codes, then name only the distinct values (-1, missing, is None).
    codes, present = pd.factorize(column.cat.codes.to_numpy())
    named = pd.Series(np.append(np.asarray(column.cat.categories, dtype=object), None)[present], dtype=object)
    merged, uniques = pd.factorize(named.astype(str).to_numpy(object))
    return merged[codes], np.asarray(uniques, dtype=object)


def _split_by_query(
    frame: pd.DataFrame, numeric: list[str], parts: int
) -> tuple[QueryPiece, ...] | QueryPiece:
    """A block's eval rows split into `parts` pieces by a hash of the query (_query_partition).

    Each piece is (its distinct queries as text: object array; per row an int32 index into them; the
    `numeric` columns as float64). Query text travels once per block and query, not once per row: a reducer
    holds ~4 + 8 * len(numeric) bytes per row instead of the rows' strings (~300 B per row with the demo's
    columns). Queries are text as metrics.evaluate names them (`astype(str)`: a missing query is "None").
    One part: the piece itself, since a task with one return stores its value, not a 1-tuple.
    Raises ValueError naming batch rows for a non-finite label, relevance or score.
    """
    codes, uniques = _text_codes(frame["query"])
    rows = pd.DataFrame({c: _finite_column(frame, c, " of a block") for c in numeric})
    if parts == 1:
        return uniques, codes.astype(np.int32), rows
    part_of = _query_partition(uniques, parts)
    # Renumber each part's queries 0..m-1 so a piece's index points into its own distinct queries only.
    local = np.empty(len(uniques), dtype=np.int32)
    key = part_of[codes]
    # One stable sort and slices instead of `parts` boolean filters over every column (~3x less copying).
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(parts + 1, dtype=np.uint64))
    ordered = rows.take(order).reset_index(drop=True)
    ordered_codes = codes[order]
    pieces = []
    for p in range(parts):
        mine = np.flatnonzero(part_of == p)
        local[mine] = np.arange(len(mine), dtype=np.int32)
        sl = slice(bounds[p], bounds[p + 1])
        pieces.append((uniques[mine], local[ordered_codes[sl]], ordered.iloc[sl]))
    return tuple(pieces)


def _per_query_part(score_columns: dict[str, str], k: int, *pieces: QueryPiece) -> pd.DataFrame:
    """Per query of one partition: rows, positives and each model's per-query ROC AUC, nDCG@k, MRR and
    recall@k (metrics.per_query_values; NaN where undefined)."""
    from tailguard.metrics import kernels as m

    # Batch-wide query codes from the pieces' distinct queries: exact (no hash stands for a query).
    offsets = np.cumsum([0] + [len(u) for u, _, _ in pieces])
    piece_codes, names = pd.factorize(np.concatenate([u for u, _, _ in pieces]), sort=True)
    q = np.concatenate([piece_codes[offsets[i] + idx] for i, (_, idx, _) in enumerate(pieces)])
    df = pd.concat([f for _, _, f in pieces], ignore_index=True)
    y = df["label"].to_numpy(dtype=np.float64)
    gain = m._gain(df, y)
    n = len(names)
    out = pd.DataFrame({
        "query": pd.Series(np.asarray(names, dtype=object), dtype=object),
        "rows": np.bincount(q, minlength=n),
        "positives": np.bincount(q, weights=y, minlength=n).astype(np.int64),
    })  # fmt: skip
    mask = np.ones(len(df), dtype=bool)
    for model, col in score_columns.items():
        s = df[col].to_numpy(dtype=np.float64)
        values = m.per_query_values(q, n, y, gain, m._Ranked(q, n, s), mask, k)
        for metric, arr in values.items():
            out[f"{model}.{metric}"] = arr
    return out


def per_query_table(
    batch: RayBatch, score_columns: dict[str, str], k: int = 10, partitions: int | None = None
) -> pd.DataFrame:
    """Per-query statistics aggregated on the cluster: one row per query, sorted by query.

    score_columns maps a model name to its score column ({"candidate": "score", ...}). Columns: query, rows,
    positives, and per model `<model>.roc_auc_per_query`, `.ndcg_at_k`, `.mrr`, `.recall_at_k` (the pandas
    path's per_query_values; the means of the defined values are metrics.json's overall per-query metrics).
    Memory: each of `partitions` reducers (default: QUERY_PARTITIONS, more past QUERY_ROWS_PER_PARTITION
    rows each) gets ~1/partitions of the eval rows plus every row of the queries hashed to it, as an int32
    query index and float64 label, relevance and scores (_split_by_query), plus its queries' text once per
    block; per_query_values then takes ~150 B per row (measured: 462 MB for 3M rows, one model). The
    reducer with the head query is the largest (the demo's head query holds 11.4% of all rows).
    Raises ValueError naming batch rows for a non-finite label, relevance or score, RayEngineError when the
    cluster fails.
    """
    import ray

    partitions = partitions or max(QUERY_PARTITIONS, -(-batch.rows // QUERY_ROWS_PER_PARTITION))
    numeric = ["label", *(["relevance"] if "relevance" in batch.columns else []), *score_columns.values()]
    split = ray.remote(_split_by_query).options(num_returns=partitions)
    pieces = [split.remote(b, list(dict.fromkeys(numeric)), partitions) for b in batch.block_refs()]
    if partitions == 1:
        pieces = [[p] for p in pieces]
    reduce = ray.remote(_per_query_part)
    tables = _get([reduce.remote(score_columns, k, *[p[i] for p in pieces]) for i in range(partitions)])
    return pd.concat(tables, ignore_index=True).sort_values("query", ignore_index=True)


def _block_train_counts(frame: pd.DataFrame) -> TrainCounts:
    """One block's training rows per item and per query, named from its codes (_text_codes); a compact
    block's rows count `repeats` times (metrics.slices.row_weights)."""
    from tailguard.metrics import TrainCounts
    from tailguard.metrics.slices import row_weights

    weights = row_weights(frame)

    def counts(column: pd.Series) -> pd.Series:
        codes, names = _text_codes(column)
        summed = np.bincount(codes, weights=weights, minlength=len(names)).astype(np.int64)
        return pd.Series(summed, index=pd.Index(names, dtype=object))

    rows = len(frame) if weights is None else int(weights.sum())
    return TrainCounts(counts(frame["item_id"]), counts(frame["query"]), rows)


def _merge_train_counts(*parts: TrainCounts) -> TrainCounts:
    from tailguard.metrics import TrainCounts

    return TrainCounts.merged(list(parts))


def train_counts(batch: RayBatch, fan_in: int = 8) -> TrainCounts:
    """The training batch's rows per item and per query (metrics.TrainCounts), summed on the cluster.

    Only distinct items and queries reach the driver, never the training rows: the counts of a batch are
    ~100 B per distinct key (Python str plus int64) against ~120 B per row for its two text columns.
    Equal to TrainCounts.of(batch.to_pandas()). Raises ValueError naming a missing query or item_id column,
    RayEngineError when the cluster fails.
    """
    import ray

    missing = [c for c in ("query", "item_id") if c not in batch.columns]
    if missing:
        raise ValueError(f"train frame: missing column(s) {missing}; has {batch.columns[:12]}")
    refs = [ray.remote(_block_train_counts).remote(b) for b in batch.block_refs()]
    return _get(_tree_merge(refs, fan_in, _merge_train_counts))


def evaluate(
    eval_batch: RayBatch,
    train: RayBatch | pd.DataFrame,
    score_columns: dict[str, str],
    config: Any = None,
) -> Evaluation:
    """metrics.json of the eval batch's score columns ({"candidate": col, "production": col}) on the cluster.

    Only the columns evaluate reads leave the cluster (query, item_id, label, relevance, category, scores),
    and of the training batch only its counts per item and per query (train_counts); then metrics.evaluate
    runs on them: the same Evaluation as the pandas path on the same rows, exactly (evaluate's canonical
    row order ignores the block order).
    Raises ValueError as metrics.evaluate does, RayEngineError when the cluster fails.
    """
    from tailguard.metrics import evaluate as evaluate_frame

    missing = [c for c in score_columns.values() if c not in eval_batch.columns]
    if missing:
        raise ValueError(f"eval batch: no score column(s) {missing}; has {eval_batch.columns[:12]}")
    eval_df = _collect(eval_batch, _eval_columns(eval_batch.columns, score_columns))
    known = train if isinstance(train, pd.DataFrame) else train_counts(train)
    # A CSV keeps extra columns as text (the contract types only its own columns): parse them here.
    scores = {model: _finite_column(eval_df, col) for model, col in score_columns.items()}
    return evaluate_frame(eval_df.drop(columns=["row_id"], errors="ignore"), known, scores, config)


# --- fine-tune across nodes ---------------------------------------------------------------------------------
#
# model.train runs unchanged inside Ray Train's TorchTrainer: Ray starts one worker per GPU (or CPU), sets
# RANK / WORLD_SIZE / MASTER_ADDR and the process group (gloo on CPU, nccl on GPU), and model._distributed
# picks them up. Checkpoints go to the store (model.push_checkpoint, rank 0) and every worker pulls the newest
# one before training, so a group restarted after a worker died resumes from the last checkpoint
# (FailureConfig.max_failures), on any node. The finished model is uploaded to the store by rank 0.


def _train_worker(cfg: dict) -> None:
    """One Ray Train worker: pull the newest checkpoint, run model.train, rank 0 pushes checkpoints/model."""
    import shutil
    import tempfile

    import ray.train

    from tailguard import model
    from tailguard.data import load_batch
    from tailguard.store import open_store

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rank = ray.train.get_context().get_world_rank()
    store = open_store(cfg["store"])
    work = Path(tempfile.mkdtemp(prefix=f"tailguard-train-r{rank}-"))
    try:
        checkpoints = work / "checkpoints"
        model.pull_checkpoint(store, cfg["checkpoint_prefix"], checkpoints)
        frame = load_batch(cfg["data"])

        def push(folder: Path) -> None:
            model.push_checkpoint(store, cfg["checkpoint_prefix"], folder)

        config = model.TrainConfig(**cfg["config"])
        model.train(
            frame,
            config,
            work / "model",
            checkpoint_dir=checkpoints,
            on_checkpoint=push if rank == 0 else None,
        )
        if rank == 0:
            store.upload_dir(work / "model", cfg["output_prefix"].rstrip("/"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def train(
    data: str,
    config: dict,
    store_uri: str,
    output_prefix: str,
    checkpoint_prefix: str,
    workers: int = 2,
    max_failures: int = 1,
) -> dict:
    """Fine-tune with model.train on `workers` Ray Train workers (one GPU each when the cluster has GPUs).

    data: a batch every node can read (s3:// URI or a shared path); config: TrainConfig fields; the model
    lands in the store under output_prefix, checkpoints under checkpoint_prefix. Run it from inside the
    cluster (a Ray job's entrypoint), not from a remote driver. Returns {"workers", "use_gpu", "model_keys"}.
    Raises RayEngineError when training fails more than max_failures times.
    """
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from tailguard.store import open_store

    use_gpu = ray.cluster_resources().get("GPU", 0) >= workers
    cfg = {
        "data": str(data), "config": dict(config), "store": store_uri,
        "output_prefix": output_prefix, "checkpoint_prefix": checkpoint_prefix,
    }  # fmt: skip
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(failure_config=FailureConfig(max_failures=max_failures)),
    )
    try:
        trainer.fit()
    except Exception as exc:  # Ray Train wraps the worker's error (TrainingFailedError)
        first = (str(exc).splitlines() or [""])[0][:300]
        raise RayEngineError(
            f"Ray Train failed ({type(exc).__name__}: {first}); checkpoints stay in the store"
        ) from None
    keys = open_store(store_uri).list_keys(output_prefix.rstrip("/") + "/")
    return {"workers": workers, "use_gpu": use_gpu, "model_keys": keys}


# The job's environment is the cluster's own (its nodes hold the store credentials, infra/ray); only these
# switches travel with the job. Credentials never do: a job's env_vars are readable in the job table.
JOB_ENV = ("HF_HUB_OFFLINE", "TAILGUARD_OFFLINE", "TAILGUARD_TORCH_THREADS")
JOB_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
RESULT_MARKER = "tailguard-train-result: "  # the job's last words: the line submit_train reads back


def job_address(address: str) -> str:
    """A Ray dashboard address for job submission: http(s)://host[:port], no user or password in it.

    Raises RayEngineError otherwise (Ray's client would import a module named after any other scheme, and
    a password in the address would be echoed in messages).
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(address)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        shown = address if parts is None or not parts.username else "<address with credentials>"
        raise RayEngineError(
            f"Ray job address {shown!r} must be http(s)://host:port of the cluster's dashboard, without "
            "credentials (Ray's token authentication uses RAY_AUTH_TOKEN_PATH)"
        )
    return address


def submit_train(
    address: str,
    data: str,
    config: dict,
    store_uri: str,
    output_prefix: str,
    checkpoint_prefix: str,
    workers: int = 2,
    python: str = "python",
    timeout_s: float = 24 * 3600,
) -> dict:
    """`train` as a Ray job submitted to the dashboard at `address` (http://head:8265): its driver runs
    inside the cluster (`python -m tailguard.ray_engine train ...`), as Ray Train needs, while this process
    only submits and waits. The job uses the cluster nodes' environment (store credentials included) plus
    JOB_ENV's switches. `python` may hold arguments ("python -u"). Returns train's facts plus {"job_id"}.

    Raises RayEngineError for a bad address, when the dashboard does not answer, or the job fails, is
    stopped or outlives timeout_s; a job still running when waiting stops (an error, a cancelled flow run)
    is stopped, so a retry never races it. Failure messages end with the job log's last lines.
    """
    import json
    import shlex

    from ray.job_submission import JobSubmissionClient

    args = [*shlex.split(python), "-m", "tailguard.ray_engine", "train", "--data", data, "--config",
            json.dumps(config), "--store", store_uri, "--output-prefix", output_prefix, "--checkpoint-prefix",
            checkpoint_prefix, "--workers", str(workers)]  # fmt: skip
    env = {k: os.environ[k] for k in JOB_ENV if k in os.environ}
    try:
        client = JobSubmissionClient(job_address(address))
        job_id = client.submit_job(entrypoint=shlex.join(args), runtime_env={"env_vars": env})
    except RayEngineError:
        raise
    except Exception as exc:  # noqa: BLE001 - connection refused, auth, HTTP errors: one line
        first = (str(exc).splitlines() or [""])[0][:300]
        raise RayEngineError(f"cannot submit the Ray job to {address}: {first}") from None
    status = _wait_for_job(client, job_id, timeout_s)
    logs = client.get_job_logs(job_id).strip().splitlines()
    results = [line for line in logs if line.startswith(RESULT_MARKER)]
    if not status.endswith("SUCCEEDED") or not results:
        tail = " | ".join(logs[-5:])[-600:] or "(no log)"
        raise RayEngineError(f"Ray job {job_id} {status.rsplit('.', 1)[-1]}: {tail}")
    return {**json.loads(results[-1].removeprefix(RESULT_MARKER)), "job_id": job_id}


def _wait_for_job(client: Any, job_id: str, timeout_s: float) -> str:
    """Poll the job until it ends; its status. Stops the job if waiting ends first (RayEngineError)."""
    import time

    deadline, status = time.monotonic() + timeout_s, ""
    try:
        while not status.endswith(JOB_TERMINAL):
            if time.monotonic() > deadline:
                raise RayEngineError(f"Ray job {job_id} ran past {timeout_s:.0f} s")
            status = str(client.get_job_status(job_id))
            if not status.endswith(JOB_TERMINAL):
                time.sleep(2)
        return status
    except BaseException as exc:
        with contextlib.suppress(Exception):
            client.stop_job(job_id)
        if isinstance(exc, RayEngineError) or not isinstance(exc, Exception):  # cancellation: as it came
            raise
        first = (str(exc).splitlines() or [""])[0][:300]
        raise RayEngineError(f"lost Ray job {job_id} while waiting ({first}); it was stopped") from None


def main(argv: list[str] | None = None) -> None:
    """Entrypoint of a Ray job (`ray job submit -- python -m tailguard.ray_engine train ...`): the driver
    then runs inside the cluster, as Ray Train needs (a remote client is unreliable for training)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m tailguard.ray_engine")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="model.train under Ray Train; model and checkpoints in the store")
    t.add_argument("--data", required=True, help="batch every node can read (s3:// URI or shared path)")
    t.add_argument("--config", default="{}", help="TrainConfig fields as JSON")
    t.add_argument("--store", required=True)
    t.add_argument("--output-prefix", required=True)
    t.add_argument("--checkpoint-prefix", required=True)
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--max-failures", type=int, default=1)
    args = parser.parse_args(argv)
    connect(os.environ.get("TAILGUARD_RAY_ADDRESS") or "auto")
    out = train(
        args.data, json.loads(args.config), args.store, args.output_prefix, args.checkpoint_prefix,
        args.workers, args.max_failures,
    )  # fmt: skip
    print(RESULT_MARKER + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
