"""Scoring files in chunks and writing frames out: what `tailguard predict` and `tailguard balance` write.

Output is Parquet with the data contract's fixed schema (query/item_id stay strings even when all-digit)
or CSV with RFC 4180 line ends, optionally with Excel-safe text cells. Input is read by the contract's
one reader (tailguard.contract), so the same rows are refused here as in the retrain flow.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

# Cells a spreadsheet evaluates as a formula (OWASP "CSV injection"): =HYPERLINK(...), +cmd|..., @SUM(...).
# RFC 4180 line ends: Python's csv writer quotes a field holding any character of the line terminator,
# so with "\r\n" a bare CR in a title is quoted; with pandas' "\n" it was written raw and read back as a
# line break ('\r=1+1' came back '=1+1').
CSV_LINE_END = "\r\n"
FORMULA_CHARS = ("=", "+", "-", "@", "\t", "\r")
PARQUET_SUFFIXES = (".parquet", ".pq")


class ScoringError(Exception):
    """A batch that cannot be scored (a model error on a chunk, a hybrid query split across files, a
    model folder that does not load, a cluster failure); the message names the file and the cause."""


@dataclass(frozen=True)
class Scored:
    """What predict wrote: rows scored, throughput in (query, item) pairs/s (tokenizing included; None
    on Ray) and the device the model ran on."""

    rows: int
    pairs_per_s: float | None = None
    device: str = ""


def _formula_like(value: object) -> bool:
    return isinstance(value, str) and value[:1] in FORMULA_CHARS


def excel_safe_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells and column names starting with = + - @ tab or CR get a leading
    single quote (a header cell is a cell too: a column named =HYPERLINK(...) would run in the header row).

    Spreadsheets show the quote-prefixed text as typed instead of running it; numbers are untouched. The
    output is no longer the exact input strings, so it is opt-in (--excel-safe), never what metrics reads.
    """
    out = frame.copy(deep=False)
    out.columns = [f"'{c}" if _formula_like(c) else c for c in out.columns]
    for col in out.columns:
        texts = out[col].astype(object)
        risky = texts.map(_formula_like).to_numpy(bool)
        if risky.any():
            out[col] = texts.where(~risky, "'" + texts.where(risky, "").astype(str))
    return out


def write_frame(frame: pd.DataFrame, out: Path, excel_safe: bool = False) -> None:
    """Write a whole frame to out (.parquet/.pq with the contract's column types, else exact CSV)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix in PARQUET_SUFFIXES:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from tailguard.contract import output_schema

        # Contract columns get the contract's types (query/item_id strings even when all-digit or empty).
        inferred = {f.name: f.type for f in pa.Schema.from_pandas(frame, preserve_index=False)}
        schema = output_schema(list(frame.columns), inferred)
        pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), out)
    else:
        written = excel_safe_cells(frame) if excel_safe else frame
        written.to_csv(out, index=False, lineterminator=CSV_LINE_END)


RAY_SCORE = "_tailguard_score"  # the score column while a batch is on the cluster
SCORED_TEXT = ("query", "item_title")  # what a scorer reads: required and never missing, on both engines


def read_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Coerced chunks of at most chunk_rows rows from a CSV/Parquet file (the contract's one reader).

    Query, item_id and title text stay the exact strings in the file; a missing query or title (an empty
    CSV cell, a Parquet null) is a ContractError (the model would score the text 'None').
    """
    from tailguard.contract import iter_frames

    yield from iter_frames(path, None, chunk_rows, required=SCORED_TEXT, not_null=SCORED_TEXT)


def write_scored(frame: pd.DataFrame, out: Path, schema: Any, writer: Any, first: bool, excel_safe: bool):
    """Append one scored frame to out: Parquet with the contract's fixed schema (returns the open
    writer), or exact CSV (optionally Excel-safe cells). Shared by the pandas and Ray predict paths."""
    if out.suffix in PARQUET_SUFFIXES:
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = writer or pq.ParquetWriter(out, schema)
        writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
        return writer
    written = excel_safe_cells(frame) if excel_safe else frame
    written.to_csv(out, mode="a", header=first, index=False, lineterminator=CSV_LINE_END)
    return writer


class ScoredOutput:
    """predict's output file, appended frame by frame (`append`) and closed once on leaving the `with`.

    `rows` counts the rows written; the Parquet writer opens on the first frame with that frame's schema.
    """

    def __init__(self, out: Path, excel_safe: bool) -> None:
        self.out, self.excel_safe, self.writer, self.rows = out, excel_safe, None, 0
        self.columns: list[str] | None = None

    def __enter__(self) -> ScoredOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()

    def append(self, frame: pd.DataFrame, schema: Any, source: Path | str) -> None:
        """Write `frame` (read from `source`). Raises ContractError when its columns (or, for Parquet, its
        schema) differ from the first frame's: one file has one header, so a CSV would put cells under the
        wrong names and pyarrow would drop a column only later files have."""
        from tailguard.contract import ContractError

        columns = [str(c) for c in frame.columns]
        differs = self.columns is not None and columns != self.columns
        if differs or (
            self.writer is not None and schema is not None and not schema.equals(self.writer.schema)
        ):
            raise ContractError(
                str(source), None, "same_columns_in_every_file",
                f"columns {columns} differ from the first file's {self.columns}",
                hint="score files with the same columns together, or one at a time",
            )  # fmt: skip
        self.columns = columns
        self.writer = write_scored(frame, self.out, schema, self.writer, self.rows == 0, self.excel_safe)
        self.rows += len(frame)


def _hybrid_guard(scorer: Any, path: Path, chunk: pd.DataFrame, seen_queries: set[str]) -> None:
    """A hybrid's BM25 feature reads a query's rows as one candidate set (tailguard.hybrid): a query that
    continues from an earlier file would get scores that depend on how the batch was split."""
    if getattr(scorer, "hybrid", None) is None:
        return
    again = seen_queries.intersection(chunk["query"])
    if again:
        raise ScoringError(
            f"{path}: a hybrid model scores each query's rows together, but queries "
            f"{sorted(again)[:3]} continue from an earlier file; put each query in one file"
        )
    seen_queries.update(chunk["query"])


def score_files(scorer: Any, files: list[Path], out: Path, chunk_rows: int, excel_safe: bool = False) -> int:
    """Score every file chunk by chunk into `out`; returns the rows written.

    Parquet output has one schema fixed from the contract; files whose columns differ are a ContractError.
    A hybrid model scores whole files (chunks splitting a query would make its scores depend on the chunk
    size). Raises ScoringError for a model error or a split hybrid query, ContractError for bad input.
    """
    from tailguard.model import ModelError

    chunk_rows = sys.maxsize if getattr(scorer, "hybrid", None) is not None else chunk_rows
    seen_queries: set[str] = set()
    with ScoredOutput(out, excel_safe) as sink:
        for path in files:
            schema = None
            for chunk in read_chunks(Path(path), chunk_rows):
                _hybrid_guard(scorer, path, chunk, seen_queries)
                try:
                    chunk = chunk.assign(score=scorer(chunk))
                except ModelError as err:
                    raise ScoringError(f"{path}: {err}") from None
                if out.suffix in PARQUET_SUFFIXES:
                    schema = schema or scored_schema(list(chunk.columns), path)
                sink.append(chunk, schema, path)
    return sink.rows


def scored_schema(columns: list[str], path: Path | str) -> Any:
    """The Parquet schema of a scored file: contract.output_schema from the source's stored types, where
    `score` is the new float column even when the input had its own (an older ranker's, often text)."""
    from tailguard.contract import output_schema, source_types

    stored = {name: typ for name, typ in source_types(path).items() if name != "score"}
    return output_schema(columns, stored)


def _aside_names(files: list[Path]) -> dict[str, str]:
    """{input column: private name} for the input's columns named as the Ray engine's own (row_id, augmented,
    source_row_id, its score column): they travel under the private name and are written back under their
    own, so `predict --engine ray` keeps them as the pandas engine does."""
    from tailguard.contract import OWN_COLUMNS, source_types

    names = {name for path in files for name in source_types(path)}
    aside = {}
    for name in (*OWN_COLUMNS, RAY_SCORE):
        if name in names:
            private = f"_tailguard_input_{name}"
            while private in names:
                private += "_"
            aside[name] = private
    return aside


def score_on_ray(model_dir: Path, data: str, out: Path, batch_size: int, excel_safe: bool) -> int:
    """Score on Ray actors (ray_engine.score) and write `out` block by block; returns the rows written.

    The batch is read under the scorer's contract (SCORED_TEXT), as on pandas; scores are float32 and an
    input's own `score` column is overwritten in place, as on pandas; Parquet output has one schema per
    file and files whose columns differ are refused, as on pandas. Raises ScoringError for a refused batch,
    a model that does not load or a cluster failure, leaving no output file.
    """
    from tailguard import ray_engine
    from tailguard.contract import ContractError
    from tailguard.data import materialize
    from tailguard.engine import EngineError, ray_session
    from tailguard.model import ModelError
    from tailguard.validation import _file_of

    try:
        ray_session()
        files = materialize(data)
        aside = _aside_names(files)
        batch = ray_engine.load(files, required=SCORED_TEXT, not_null=SCORED_TEXT, aside=aside)
        back = {private: name for name, private in aside.items()}
        # A private column name: the input may have its own `score` column (an older ranker's).
        scored = ray_engine.score(batch, {RAY_SCORE: model_dir}, batch_size=batch_size)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        schemas: dict[str, Any] = {}
        with ScoredOutput(out, excel_safe) as sink:
            for block in scored.frames():  # one block on the driver at a time, in batch order
                frame = block.drop(columns=["row_id", "augmented"])
                score = frame.pop(RAY_SCORE).astype("float32")
                frame = frame.rename(columns=back)  # the input's own row_id, augmented, ... under their names
                frame["score"] = score  # in place, as chunk.assign(score=)
                schema = None
                first = [int(block["row_id"].iloc[0])] if len(block) else []
                path = _file_of(first, scored.files, str(files[0]))  # the block's own input file
                if out.suffix in PARQUET_SUFFIXES:  # from the contract and the block's own file
                    if path not in schemas:
                        schemas[path] = scored_schema(list(frame.columns), path)
                    schema = schemas[path]
                sink.append(frame, schema, path)
        return sink.rows
    except (EngineError, ContractError, ModelError, FileNotFoundError, RuntimeError, ValueError) as err:
        out.unlink(missing_ok=True)
        raise ScoringError(str(err)) from None


def _clear_of_input(data: str, out: Path) -> None:
    """ScoringError when `out` is the input file or lies inside the input folder: the output is replaced
    before or while the input is read, so the input would be lost or scored into itself."""
    if "://" in str(data):
        return
    source, target = Path(data).resolve(), Path(out).resolve()
    if target == source or source in target.parents:
        where = "is the input file" if target == source else "is inside the input folder"
        raise ScoringError(f"--out {out} {where} {data}: write the scores to another path")


def predict_file(
    model_dir: Path,
    data: str,
    out: Path,
    *,
    batch_size: int = 256,
    chunk_rows: int = 100_000,
    excel_safe: bool = False,
    engine: str = "",
) -> Scored:
    """Score `data` (file, folder or s3:// URI) with the model in model_dir into `out` plus a `score` column.

    engine: pandas or ray ('' = TAILGUARD_ENGINE, else pandas). A refused input or a model error leaves
    no half-written output. Raises ScoringError (model, engine, hybrid split) or ContractError (input).
    """
    from tailguard.contract import ContractError
    from tailguard.data import materialize
    from tailguard.engine import EngineError, choose
    from tailguard.model import ModelError, Scorer

    _clear_of_input(data, out)
    try:
        ray = choose(engine or None) == "ray"
    except EngineError as err:
        raise ScoringError(str(err)) from None
    if ray:
        return Scored(score_on_ray(model_dir, data, out, batch_size, excel_safe))
    try:
        scorer = Scorer(model_dir, batch_size=batch_size)
        files = materialize(data)
    except (ModelError, FileNotFoundError) as err:
        raise ScoringError(str(err)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    try:
        rows = score_files(scorer, files, out, chunk_rows, excel_safe)
    except (ContractError, ScoringError):
        out.unlink(missing_ok=True)  # a refused input or a model error leaves no half-written output behind
        raise
    return Scored(rows, scorer.pairs_per_s, scorer.device.type)


def production_model_dir(registry: Any) -> Path:
    """The production model of `registry`, fetched and verified into a fresh temporary folder."""
    model_dir = Path(tempfile.mkdtemp(prefix="tailguard-production-"))
    return Path(registry.fetch_model("production", model_dir))
