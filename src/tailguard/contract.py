"""The data contract: required columns, dtypes, the label rule, and one typed error for every breach."""

from __future__ import annotations

import codecs
import csv
import difflib
import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

REQUIRED_COLUMNS = ("query", "item_id", "item_title", "label")
TEXT_COLUMNS = ("query", "item_id", "item_title", "category", "user_id")
FLOAT_COLUMNS = ("relevance", "price")
INT_COLUMNS = ("position",)
DATETIME_COLUMNS = ("ts",)
CANONICAL_COLUMNS = REQUIRED_COLUMNS + ("relevance", "category", "price", "ts", "user_id", "position")
# Label spellings accepted as 0/1: integers, their float/str forms, and booleans as CSV writers spell them.
LABEL_VALUES = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}
SNIFF_BYTES = 64 * 1024
OTHER_DELIMITERS = (";", "\t", "|")
MAX_EXAMPLES = 5


class ContractError(Exception):
    """A batch breaks the data contract; the message names file, column, rule, offending values and a fix."""

    def __init__(
        self,
        file: str | Path,
        column: str | None,
        rule: str,
        detail: str,
        examples: list | None = None,
        hint: str = "",
    ):
        self.file = str(file)
        self.column = column
        self.rule = rule
        self.detail = detail
        self.examples = list(examples or [])[:MAX_EXAMPLES]
        self.hint = hint
        super().__init__(self.message())

    def message(self) -> str:
        """One readable paragraph: where, which rule, what was seen, how to fix it."""
        where = f"column '{self.column}'" if self.column else "the whole file"
        text = f"{self.file}: {where} breaks rule '{self.rule}': {self.detail}"
        if self.examples:
            text += "; examples: " + ", ".join(_show(e) for e in self.examples)
        if self.hint:
            text += f". Fix: {self.hint}"
        return text

    def to_dict(self) -> dict:
        """JSON-able form, shaped like a validation failure so both can be reported the same way."""
        return {
            "kind": "contract",
            "error": type(self).__name__,
            "file": self.file,
            "column": self.column,
            "rule": self.rule,
            "observed": self.detail,
            "examples": [_jsonable(e) for e in self.examples],
            "hint": self.hint,
            "severity": "error",
        }


class UnreadableInput(ContractError):
    """The file cannot be read as a table: missing, empty, corrupt, wrong encoding or format."""


class MissingColumn(ContractError):
    """A required column (or a mapped source column) is absent."""


class BadValues(ContractError):
    """Values in a column cannot be coerced to the contract dtype or break the label rule."""


class ColumnMapping(BaseModel):
    """How a real-world file's columns map onto the contract, and how its text is spelled."""

    columns: dict[str, str] = Field(
        default_factory=dict, description="canonical name -> name in the file, e.g. {'query': 'search_term'}."
    )
    delimiter: str | None = Field(None, description="CSV delimiter; None: ',' for .csv, tab for .tsv.")
    encoding: str = Field("utf-8", description="Text encoding of CSV files; a UTF-8 BOM is always accepted.")


def parse_columns(spec: str) -> dict[str, str]:
    """Parse 'query=search_term,item_id=product_uid' into {'query': 'search_term', 'item_id': ...}."""
    mapping: dict[str, str] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        canonical, sep, source = (s.strip() for s in part.partition("="))
        if not sep or not canonical or not source:
            raise ContractError(
                "--columns",
                canonical or None,
                "mapping_syntax",
                f"cannot read mapping entry {part!r}",
                hint="write canonical=source pairs separated by commas, e.g. query=search_term,item_id=uid",
            )
        if canonical not in CANONICAL_COLUMNS:
            raise ContractError(
                "--columns",
                canonical,
                "mapping_target",
                f"{canonical!r} is not a contract column",
                hint=f"map onto one of {', '.join(CANONICAL_COLUMNS)}",
            )
        mapping[canonical] = source
    return mapping


def _as_mapping(mapping: ColumnMapping | dict[str, str] | None) -> ColumnMapping:
    if mapping is None:
        return ColumnMapping()
    if isinstance(mapping, ColumnMapping):
        return mapping
    return ColumnMapping(columns=dict(mapping))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value if not isinstance(value, str) or len(value) <= 200 else value[:200] + "..."
    return repr(value)[:200]


# --- reading ----------------------------------------------------------------------------------------------


def _head_bytes(path: Path, size: int) -> tuple[bytes, bytes]:
    """(raw first bytes, decompressed first bytes); gzip corruption is raised as UnreadableInput."""
    with open(path, "rb") as fh:
        raw = fh.read(size)
    if not raw.startswith(b"\x1f\x8b"):
        return raw, raw
    try:
        with gzip.open(path, "rb") as fh:
            return raw, fh.read(size)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise UnreadableInput(
            path,
            None,
            "readable_gzip",
            f"corrupt or truncated gzip ({exc})",
            hint="re-upload the complete file",
        ) from None


def read_table(path: str | Path, mapping: ColumnMapping | dict[str, str] | None = None) -> pd.DataFrame:
    """Read one CSV/TSV/Parquet file (optionally gzipped) as received; every failure is a ContractError."""
    path = Path(path)
    cfg = _as_mapping(mapping)
    if not path.exists():
        raise UnreadableInput(path, None, "exists", "no such file", hint="check the path or s3:// URI")
    if not path.is_file():
        raise UnreadableInput(path, None, "is_file", "not a regular file", hint="point at a file or a folder")
    if path.stat().st_size == 0:
        raise UnreadableInput(
            path, None, "not_empty", "the file is empty (0 bytes)", hint="re-export the batch"
        )
    raw, head = _head_bytes(path, SNIFF_BYTES)
    if head.startswith(b"PAR1") or raw.startswith(b"PAR1"):
        return _read_parquet(path)
    if head[:4] == b"PK\x03\x04":
        raise UnreadableInput(
            path,
            None,
            "format",
            "this is a ZIP/XLSX archive, not CSV or Parquet",
            hint="export as CSV or Parquet",
        )
    return _read_csv(path, head, cfg)


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UnreadableInput(
            path, None, "readable_parquet", f"cannot read Parquet ({exc})", hint="re-export the complete file"
        ) from None
    names = table.column_names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UnreadableInput(
            path,
            dupes[0],
            "unique_column_names",
            f"column names repeat: {dupes}",
            hint="rename the duplicates",
        )
    if table.num_rows == 0:
        raise UnreadableInput(path, None, "has_rows", "the table has columns but no rows", hint="re-export")
    for field in table.schema:
        unusable = pa.types.is_nested(field.type) or pa.types.is_binary(field.type)
        if unusable and field.name in CANONICAL_COLUMNS:
            raise BadValues(
                path,
                field.name,
                "scalar_type",
                f"Parquet type {field.type} cannot hold a {field.name}",
                hint="write scalar columns (string, integer, float)",
            )
    return table.to_pandas()


def _decode_head(path: Path, head: bytes, encoding: str) -> str:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UnreadableInput(
            path,
            None,
            "encoding",
            "the file is UTF-16 (byte-order mark FF FE / FE FF)",
            hint=f"re-encode as {encoding}: iconv -f UTF-16 -t UTF-8 FILE > FILE.utf8.csv",
        )
    if b"\x00" in head:
        raise UnreadableInput(
            path,
            None,
            "format",
            "binary content (NUL bytes) where CSV text was expected",
            hint="upload CSV (UTF-8) or Parquet",
        )
    decoder = codecs.getincrementaldecoder(
        "utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding
    )()
    try:
        return decoder.decode(head, final=False)
    except UnicodeDecodeError as exc:
        line = head[: exc.start].count(b"\n") + 1
        bad = head[max(0, exc.start - 10) : exc.end + 10]
        raise UnreadableInput(
            path,
            None,
            "encoding",
            f"not valid {encoding} at byte {exc.start} (line {line})",
            [bad],
            hint="re-encode as UTF-8 (iconv -f latin1 -t utf-8) or name the file's real encoding",
        ) from None


def _read_csv(path: Path, head: bytes, cfg: ColumnMapping) -> pd.DataFrame:
    text = _decode_head(path, head, cfg.encoding)
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise UnreadableInput(
            path, None, "has_header", "no header line", hint="the first line must name the columns"
        )
    name = path.name.lower().removesuffix(".gz")
    delimiter = cfg.delimiter or ("\t" if name.endswith(".tsv") else ",")
    header = next(csv.reader([lines[0]], delimiter=delimiter))
    if len(header) == 1:
        for other in OTHER_DELIMITERS:
            if other != delimiter and len(lines[0].split(other)) > 1:
                raise UnreadableInput(
                    path,
                    None,
                    "delimiter",
                    f"header has one column with delimiter {delimiter!r} but splits on {other!r}",
                    [lines[0][:120]],
                    hint=f"pass the delimiter explicitly (--delimiter {other!r}) or re-export with commas",
                )
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise UnreadableInput(
            path,
            dupes[0],
            "unique_column_names",
            f"header repeats column names {dupes}",
            [lines[0][:120]],
            hint="rename or drop the repeated columns",
        )
    encoding = "utf-8-sig" if cfg.encoding.lower() in ("utf-8", "utf8") else cfg.encoding
    try:
        # Everything as text first: coercion happens in coerce_frame, where bad values get named.
        # Only empty cells are missing; literal 'NA'/'null' are legitimate query text.
        df = pd.read_csv(
            path,
            sep=delimiter,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding=encoding,
            compression="infer",
            on_bad_lines="error",
            skipinitialspace=False,
        )
    except pd.errors.EmptyDataError:
        raise UnreadableInput(
            path, None, "has_header", "no columns to read", hint="re-export the batch"
        ) from None
    except pd.errors.ParserError as exc:
        raise UnreadableInput(
            path,
            None,
            "field_count",
            f"rows do not match the header ({str(exc).strip()})",
            hint="quote fields that contain the delimiter, or check the delimiter",
        ) from None
    except UnicodeDecodeError as exc:
        raise UnreadableInput(
            path,
            None,
            "encoding",
            f"not valid {cfg.encoding} past the first {SNIFF_BYTES} bytes ({exc.reason})",
            hint="re-encode the file as UTF-8 (iconv -f latin1 -t utf-8)",
        ) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # A truncated upload surfaces here, mid-parse, before any row is returned: nothing half-loads.
        raise UnreadableInput(
            path,
            None,
            "readable_gzip",
            f"truncated or corrupt gzip stream ({exc})",
            hint="the upload was cut short; re-upload the complete file (`gzip -t FILE` checks it)",
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise UnreadableInput(
            path,
            None,
            "has_rows",
            f"header only ({len(df.columns)} columns, 0 rows)",
            [lines[0][:120]],
            hint="the export produced no rows; check the upstream query",
        )
    _check_repeated_header(path, df)
    return df


def _check_repeated_header(path: Path, df: pd.DataFrame) -> None:
    """Concatenated exports repeat the header line inside the data; those rows are not data."""
    cols = list(df.columns[: min(3, len(df.columns))])
    mask = np.ones(len(df), dtype=bool)
    for c in cols:
        mask &= (df[c] == c).to_numpy()
    if mask.any():
        rows = np.flatnonzero(mask)[:MAX_EXAMPLES].tolist()
        raise UnreadableInput(
            path,
            cols[0],
            "repeated_header",
            f"the header line repeats as data in {int(mask.sum())} row(s)",
            [{"row": r} for r in rows],
            hint="files were concatenated with their headers; keep only the first header",
        )


# --- coercion ---------------------------------------------------------------------------------------------


def coerce_frame(
    df: pd.DataFrame, source: str | Path, mapping: ColumnMapping | dict[str, str] | None = None
) -> pd.DataFrame:
    """Rename mapped columns and coerce contract columns to their dtypes; never half-coerced."""
    cfg = _as_mapping(mapping)
    df = _apply_mapping(df, str(source), cfg)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        present = [str(c) for c in df.columns]
        guesses = {m: difflib.get_close_matches(m, present, n=1, cutoff=0.6) for m in missing}
        suggestion = ",".join(f"{m}={g[0]}" for m, g in guesses.items() if g)
        hint = (
            f"map them with --columns {suggestion}"
            if suggestion
            else "map them with --columns query=<name>,..."
        )
        raise MissingColumn(
            source,
            missing[0],
            "required_columns",
            f"missing {missing}; the file has {present[:20]}",
            hint=hint,
        )
    out = df.copy(deep=False)
    for col in TEXT_COLUMNS:
        if col in out.columns:
            out[col] = _coerce_text(out[col], str(source), col)
    out["label"] = _coerce_label(out["label"], str(source))
    for col in FLOAT_COLUMNS:
        if col in out.columns:
            out[col] = _coerce_numeric(out[col], str(source), col, integer=False)
    for col in INT_COLUMNS:
        if col in out.columns:
            out[col] = _coerce_numeric(out[col], str(source), col, integer=True)
    for col in DATETIME_COLUMNS:
        if col in out.columns:
            out[col] = _coerce_datetime(out[col], str(source), col)
    return out


def _apply_mapping(df: pd.DataFrame, source: str, cfg: ColumnMapping) -> pd.DataFrame:
    renames: dict[str, str] = {}
    for canonical, name in cfg.columns.items():
        if name in df.columns:
            renames[name] = canonical
        elif name != canonical:
            # Strict even when the file happens to have the canonical name: a stale mapping is a config bug.
            raise MissingColumn(
                source,
                canonical,
                "mapped_column",
                f"the mapping says {canonical}={name} but the file has no column {name!r} "
                f"(columns: {[str(c) for c in df.columns][:20]})",
                hint="fix the --columns mapping to name a column that exists",
            )
    clash = [c for c in renames.values() if c in df.columns and c not in renames]
    if clash:
        raise MissingColumn(
            source,
            clash[0],
            "unique_column_names",
            f"mapping onto {clash[0]!r} clashes with an existing column",
            hint=f"drop or rename the file's own {clash[0]!r} column",
        )
    return df.rename(columns=renames) if renames else df


def _bad_examples(series: pd.Series, bad: np.ndarray) -> list[dict]:
    rows = np.flatnonzero(bad)[:MAX_EXAMPLES]
    return [{"row": int(r), "value": _jsonable(series.iloc[r])} for r in rows]


def _factorized(series: pd.Series) -> tuple[np.ndarray, pd.Index]:
    # Coerce distinct values once and broadcast back: batches repeat values heavily (10M rows, ~1k labels).
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return codes, pd.Index(uniques)


def _coerce_text(series: pd.Series, source: str, col: str) -> pd.Series:
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return series.astype(object)
    kind = pd.api.types.infer_dtype(series, skipna=True)
    if kind in ("string", "empty"):
        return series
    if kind in ("bytes", "mixed") or series.dtype == object:
        bad = series.map(lambda v: isinstance(v, bytes | list | dict | tuple | set | np.ndarray)).to_numpy(
            bool
        )
        if bad.any():
            raise BadValues(
                source,
                col,
                "text",
                f"{int(bad.sum())} value(s) are not text",
                _bad_examples(series, bad),
                hint=f"{col} must be a plain string in every row",
            )
    # Numbers as ids/queries are fine as text ("123"), but floats from a NaN-holed int column are not "123.0".
    if pd.api.types.is_float_dtype(series.dtype):
        whole = series.dropna()
        if (whole == np.floor(whole)).all():
            return series.astype("Int64").astype(str).where(series.notna(), None).astype(object)
    return series.astype(str).where(series.notna(), None).astype(object)


def _coerce_label(series: pd.Series, source: str) -> pd.Series:
    hint = "label must be 0 or 1 in every row (also accepted: true/false); map graded scores to 0/1 upstream"
    null = series.isna().to_numpy()
    if null.any():
        raise BadValues(
            source,
            "label",
            "not_null",
            f"{int(null.sum())} row(s) have no label",
            _bad_examples(series, null),
            hint=hint,
        )
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype(np.int8)
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy()
        bad = ~np.isin(values, (0, 1))
    else:
        codes, uniques = _factorized(series)
        mapped = np.array(
            [
                LABEL_VALUES.get(str(u).strip().lower(), -1) if not isinstance(u, bool) else int(u)
                for u in uniques
            ],
            dtype=np.int16,
        )
        values = mapped[codes]
        bad = values < 0
    if bad.any():
        raise BadValues(
            source,
            "label",
            "label_binary",
            f"{int(bad.sum())} row(s) have a label other than 0/1",
            _bad_examples(series, bad),
            hint=hint,
        )
    return pd.Series(np.asarray(values, dtype=np.int8), index=series.index, name="label")


def _coerce_numeric(series: pd.Series, source: str, col: str, integer: bool) -> pd.Series:
    if pd.api.types.is_bool_dtype(series.dtype):
        series = series.astype(np.int8)
    if pd.api.types.is_numeric_dtype(series.dtype):
        numbers = series.astype(float)
    else:
        codes, uniques = _factorized(series)
        converted = pd.to_numeric(pd.Series(uniques.astype(str).str.strip()), errors="coerce").to_numpy(float)
        numbers = pd.Series(np.where(codes >= 0, converted[codes], np.nan), index=series.index)
        bad = (codes >= 0) & np.isnan(numbers.to_numpy())
        if bad.any():
            raise BadValues(
                source,
                col,
                "numeric",
                f"{int(bad.sum())} value(s) are not numbers",
                _bad_examples(series, bad),
                hint=f"{col} must be a number (decimal point '.', no currency signs) or empty",
            )
    if not integer:
        return numbers.rename(col)
    values = numbers.to_numpy()
    bad = ~np.isnan(values) & (values != np.floor(values))
    if bad.any():
        raise BadValues(
            source,
            col,
            "integer",
            f"{int(bad.sum())} value(s) are not whole numbers",
            _bad_examples(series, bad),
            hint=f"{col} must be a whole number",
        )
    return numbers.astype("Int64").rename(col)


def _coerce_datetime(series: pd.Series, source: str, col: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return series
    if pd.api.types.is_numeric_dtype(series.dtype):
        return pd.to_datetime(series, unit="s", utc=True, errors="coerce").rename(col)
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
    bad = (parsed.isna() & series.notna()).to_numpy()
    if bad.any():
        raise BadValues(
            source,
            col,
            "datetime",
            f"{int(bad.sum())} value(s) are not ISO-8601 timestamps",
            _bad_examples(series, bad),
            hint=f"write {col} as ISO 8601, e.g. 2026-11-28T13:25:01Z",
        )
    return parsed.rename(col)
