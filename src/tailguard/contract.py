"""The data contract: required columns, dtypes, the label rule, and one typed error for every breach."""

from __future__ import annotations

import codecs
import csv
import difflib
import functools
import gzip
import re
import sys
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
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
# Optional columns that, once a file has them, need a value in every row (an empty gain is not 0).
NOT_NULL_WHEN_PRESENT = ("relevance",)
CANONICAL_COLUMNS = REQUIRED_COLUMNS + ("relevance", "category", "price", "ts", "user_id", "position")
# Label spellings accepted as 0/1: integers, their float/str forms, and booleans as CSV writers spell them.
LABEL_VALUES = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}
SNIFF_BYTES = 64 * 1024
# pyarrow's CSV block (its default, 1 MiB): one row must fit in it, so a longer row is refused (row_size).
CSV_BLOCK_BYTES = 1 << 20
OTHER_DELIMITERS = (";", "\t", "|")
MAX_EXAMPLES = 5


class ContractError(Exception):
    """A batch breaks the data contract; the message names file, column, rule, offending values and a fix."""

    check = 0  # coerce_frame's number for the check that raised (0: not raised by one of its checks)
    attrs: dict = {}  # noqa: RUF012 - coerce_frame sets a new dict per error: the frame's attrs so far

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


class InputTooLarge(UnreadableInput):
    """The file is past a size limit (rule `size_limit`): decompressed bytes, decoded bytes or rows."""


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


def finite_column(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(frame[column] as float64 with NaN for a missing or non-numeric cell, positions of the non-finite
    rows). Shared by the readers of `relevance` (training targets, evaluation gains), which word their own
    errors from the positions."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values, np.flatnonzero(~np.isfinite(values))


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


# --- visible text ---------------------------------------------------------------------------------------
#
# Blank and length rules judge what the model sees. BERT-style tokenizers drop control (Cc) and format (Cf)
# characters and split on whitespace, so a query of U+200B (zero-width space) or U+FEFF (BOM) reaches the
# model empty. Visible text is: NFKC-normalised (fullwidth/compatibility forms folded, U+00A0 -> space),
# without Cc/Cf characters and the other Default_Ignorable_Code_Points (Unicode DerivedCoreProperties:
# Hangul fillers, variation selectors, combining grapheme joiner), and without leading/trailing whitespace
# (str.strip: every Zs space, U+2028/2029, tabs). A value whose visible text is empty is blank.

# Default_Ignorable_Code_Point outside Cc/Cf (Unicode 15 DerivedCoreProperties.txt).
_IGNORABLE_RANGES = (
    "\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef"
)
_PLAIN_ASCII = re.compile(r"[ -~]*")


@functools.cache
def _invisible() -> re.Pattern[str]:
    # Built once (~0.3 s) from the running Python's Unicode tables, so new Cf characters are included.
    chars = (chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in ("Cc", "Cf"))
    ranges = "".join(re.escape(ch) for ch in chars)
    return re.compile(f"[{ranges}{_IGNORABLE_RANGES}]+")


# Dropped by BERT's normalizer (tokenizers' BertNormalizer clean_text: U+FFFD and every "other" category,
# private use Co included; strip_accents: combining marks) or unassigned (Cn: no glyph, no vocabulary entry).
_DROPPED_CATEGORIES = ("Co", "Cn")
_MARK_CATEGORIES = ("Mn", "Me")


def _drop_unseen(text: str) -> str:
    r"""Drop U+FFFD, private-use and unassigned characters, and combining marks with no base character.

    A mark is lone when nothing but marks (or nothing) stands between it and the start of the text or a
    space: "\u0301" and " \u0301\u0308" carry no letter, so the tokenizer keeps nothing of them; the
    accent of "e\u0301" stays (NFC recomposes it to "\u00e9").
    """
    out: list[str] = []
    has_base = False
    for ch in unicodedata.normalize("NFD", text):
        category = unicodedata.category(ch)
        if ch == "\ufffd" or category in _DROPPED_CATEGORIES:
            continue
        if category in _MARK_CATEGORIES:
            if has_base:
                out.append(ch)
            continue
        has_base = not ch.isspace()
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


def visible_text(value: str) -> str:
    r"""What a tokenizer sees of `value`: NFKC, no Cc/Cf/default-ignorable characters, outer space stripped.

    Also dropped: U+FFFD, private-use (Co) and unassigned (Cn) characters, and combining marks (Mn/Me)
    with no base character (see _drop_unseen); BERT's normalizer drops all of them.
    visible_text("\u200b") == "", visible_text("\ufeffdrill ") == "drill",
    visible_text("\uff44rill") == "drill", visible_text("\u0301") == "", visible_text("\ue000") == "".
    """
    if _PLAIN_ASCII.fullmatch(value):  # fast path: printable ASCII (most catalogue text) needs no tables
        return value.strip()
    return _drop_unseen(_invisible().sub("", unicodedata.normalize("NFKC", value))).strip()


def visible_texts(values: pd.Series | pd.Index) -> pd.Series:
    """visible_text of every value (None stays None), as an object Series aligned with `values`."""
    series = pd.Series(values, dtype=object) if isinstance(values, pd.Index) else values.astype(object)
    return series.map(lambda v: visible_text(v) if isinstance(v, str) else v)


# --- reading ----------------------------------------------------------------------------------------------
#
# One reader for every file tailguard reads or rewrites (batches, predict input, metrics predictions and
# train files, the staged training frame). CSV goes through pyarrow's streaming reader with every column
# typed as string: the exact text of each cell is kept ('NA', 'null', 'nan' and '0000741' stay as
# written), only an empty cell is missing, and a row whose field count differs from the header's is an
# error (pandas would silently use the first column as an index, or pad short rows with NaN).


def _head_bytes(path: Path, size: int) -> tuple[bytes, bytes]:
    """(raw first bytes, decompressed first bytes); gzip corruption is raised as UnreadableInput."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(size)
    except OSError as exc:
        raise UnreadableInput(
            path, None, "readable", f"cannot open ({exc.strerror})", hint="make the file readable"
        ) from None
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


def _sniff(path: Path) -> tuple[bytes, bytes]:
    if not path.exists():
        raise UnreadableInput(path, None, "exists", "no such file", hint="check the path or s3:// URI")
    if not path.is_file():
        raise UnreadableInput(path, None, "is_file", "not a regular file", hint="point at a file or a folder")
    if path.stat().st_size == 0:
        raise UnreadableInput(
            path, None, "not_empty", "the file is empty (0 bytes)", hint="re-export the batch"
        )
    raw, head = _head_bytes(path, SNIFF_BYTES)
    if head[:4] == b"PK\x03\x04":
        raise UnreadableInput(
            path,
            None,
            "format",
            "this is a ZIP/XLSX archive, not CSV or Parquet",
            hint="export as CSV or Parquet",
        )
    return raw, head


@dataclass(frozen=True)
class InputLimits:
    """Caps of one input file: decompressed or decoded bytes, and rows (max_input_bytes, max_rows)."""

    max_bytes: int
    max_rows: int


def input_limits() -> InputLimits:
    """The caps from the settings (TAILGUARD_MAX_INPUT_BYTES, TAILGUARD_MAX_ROWS), read now."""
    from tailguard.settings import get_settings

    settings = get_settings()
    return InputLimits(settings.max_input_bytes, settings.max_rows)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _too_large(path: Path, what: str, seen: str, limit: str, setting: str) -> InputTooLarge:
    return InputTooLarge(
        path,
        None,
        "size_limit",
        f"{what} {seen} exceeds the limit of {limit}; nothing was loaded",
        hint=f"split the batch into smaller files, or raise {setting} if the workers have the memory "
        "(reading takes ~4.5x the text size)",
    )


def _check_text_size(path: Path, raw: bytes, limits: InputLimits) -> int:
    """Refuse CSV text past max_bytes before parsing; a gzip is inflated once, streaming, to count it.
    Returns the text's size in bytes (after gunzip).

    Counting first keeps a bomb (4 GiB in 10 MB of gzip) from being parsed into memory: inflating runs at
    ~0.5 GB/s in 1 MiB reads (1 GiB in 2 s measured), so the default cap costs at most ~2 s per file.
    """
    if not raw.startswith(b"\x1f\x8b"):
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise _too_large(
                path, "the file's size", _mib(size), _mib(limits.max_bytes), "TAILGUARD_MAX_INPUT_BYTES"
            )
        return size
    seen = 0
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                seen += len(chunk)
                if seen > limits.max_bytes:
                    packed = _mib(path.stat().st_size)
                    raise _too_large(
                        path, "the gunzipped text", f"(more than {_mib(seen)} from {packed})",
                        _mib(limits.max_bytes), "TAILGUARD_MAX_INPUT_BYTES",
                    )  # fmt: skip
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UnreadableInput(
            path, None, "readable_gzip", f"truncated or corrupt gzip stream ({exc})",
            hint="the upload was cut short; re-upload the complete file (`gzip -t FILE` checks it)",
        ) from None  # fmt: skip
    return seen


def _plain_bytes(batch: Any) -> int:
    """A record batch's bytes as plain columns: a dictionary column (read_dictionary) counts the text its
    rows reference plus 4 B of offset per row, as its plain read would. Its own nbytes would count the
    whole dictionary in every batch: the reader hands each batch the row group's dictionary so far (34
    dictionaries for 40 batches of one 40k-row group), which refused a 5 MiB file against a 64 MiB cap."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for column in batch.columns:
        if not pa.types.is_dictionary(column.type):
            total += column.nbytes
            continue
        lengths = pc.binary_length(column.dictionary)
        referenced = pc.sum(pc.take(lengths, column.indices)).as_py() or 0
        total += int(referenced) + 4 * len(column) + (len(column) + 7) // 8
    return total


def _capped_tables(
    path: Path, batches: Iterator[Any], chunk_rows: int | None, limits: InputLimits, count_bytes: bool
) -> Iterator[Any]:
    """Regroup record batches into pyarrow tables of chunk_rows rows (None: one table), refusing the file
    (InputTooLarge) as soon as its rows, or with count_bytes its decoded bytes, pass the limits."""
    import pyarrow as pa

    rows = decoded = buffered = 0
    pending: list = []
    for batch in batches:
        rows += batch.num_rows
        decoded += _plain_bytes(batch)
        if rows > limits.max_rows:
            raise _too_large(
                path,
                "the row count",
                f"(more than {rows:,})",
                f"{limits.max_rows:,} rows",
                "TAILGUARD_MAX_ROWS",
            )
        if count_bytes and decoded > limits.max_bytes:
            raise _too_large(
                path,
                "the decoded data",
                f"(more than {_mib(decoded)})",
                _mib(limits.max_bytes),
                "TAILGUARD_MAX_INPUT_BYTES",
            )
        pending.append(batch)
        buffered += batch.num_rows
        if chunk_rows and buffered >= chunk_rows:
            table = pa.Table.from_batches(pending)
            full = buffered - buffered % chunk_rows
            for offset in range(0, full, chunk_rows):
                yield table.slice(offset, chunk_rows)
            rest = table.slice(full)
            pending, buffered = rest.to_batches(), rest.num_rows
    if buffered:
        yield pa.Table.from_batches(pending)


def iter_table(
    path: str | Path,
    mapping: ColumnMapping | dict[str, str] | None = None,
    chunk_rows: int | None = None,
    limits: InputLimits | None = None,
    packed: bool = False,
) -> Iterator[pd.DataFrame]:
    """Stream one CSV/TSV/Parquet file (optionally gzipped) as received, `chunk_rows` rows at a time.

    CSV cells come back as the exact strings in the file (object dtype); only an empty cell is None.
    Parquet columns keep the file's types. Each chunk's index is the 0-based data-row number in the file,
    so errors found in a chunk name the same row a full read would. chunk_rows None: one chunk.

    limits (default: input_limits() from the settings) caps the file before anything is loaded: CSV text
    by its size (a gzip inflated once to count), Parquet by the rows and uncompressed bytes in its
    metadata; rows (and Parquet's decoded bytes) are counted again while streaming.

    Raises UnreadableInput (a ContractError) for a file that is missing, empty, corrupt, in the wrong
    encoding or format, or has a row with more or fewer fields than its header (rule `field_count`);
    InputTooLarge (rule `size_limit`) past a limit. A streaming caller may have consumed earlier chunks
    when a later one raises.
    packed: a Parquet file's string columns that map onto TEXT_COLUMNS come back as pandas Categoricals
    (decoded from the file's dictionaries); CSV cells are unchanged.
    """
    path = Path(path)
    cfg = _as_mapping(mapping)
    limits = limits or input_limits()
    raw, head = _sniff(path)
    if head.startswith(b"PAR1") or raw.startswith(b"PAR1"):
        text = tuple(cfg.columns.get(c, c) for c in TEXT_COLUMNS) if packed else ()
        yield from _iter_parquet(path, chunk_rows, limits, text)
    else:
        _check_text_size(path, raw, limits)
        yield from _iter_csv(path, head, cfg, chunk_rows, limits)


def read_table(
    path: str | Path,
    mapping: ColumnMapping | dict[str, str] | None = None,
    limits: InputLimits | None = None,
    packed: bool = False,
) -> pd.DataFrame:
    """Read one whole file as received (see iter_table): every row, nothing coerced.

    Returns an (n_rows, n_columns) frame: CSV cells as the exact strings in the file (object dtype, None
    for an empty cell), Parquet columns in the file's types; the index is the 0-based data-row number.
    Raises UnreadableInput (missing, empty, corrupt, wrong encoding or format, a ragged row) or
    InputTooLarge (past `limits`, default the settings' max_input_bytes / max_rows); both are ContractErrors.
    """
    chunks = list(iter_table(path, mapping, None, limits, packed))
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks)


def source_types(path: str | Path, mapping: ColumnMapping | dict[str, str] | None = None) -> dict[str, Any]:
    """Column name -> pyarrow type as stored: string for every CSV column, the schema's type for Parquet.

    Used to fix an output schema once per file, so chunks written later are never cast to the types
    pandas happened to infer for the first chunk.
    """
    import pyarrow as pa

    path = Path(path)
    raw, head = _sniff(path)
    if head.startswith(b"PAR1") or raw.startswith(b"PAR1"):
        return {f.name: f.type for f in _parquet_file(path).schema_arrow}
    header, _ = _csv_header(path, head, _as_mapping(mapping))
    return {h.strip(): pa.string() for h in header}


def _parquet_file(path: Path, read_dictionary: list[str] | None = None) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path, read_dictionary=read_dictionary)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UnreadableInput(
            path, None, "readable_parquet", f"cannot read Parquet ({exc})", hint="re-export the complete file"
        ) from None


# Parquet is decoded 65,536 rows at a time so the decoded-bytes cap is checked before a row group (40M
# rows of one dictionary value in 477 KB) is expanded in memory.
_PARQUET_BATCH = 65_536


def _check_parquet_metadata(path: Path, metadata: Any, limits: InputLimits) -> None:
    """Refuse from the footer alone: rows and uncompressed bytes past the limits, before any page is read."""
    if metadata.num_rows > limits.max_rows:
        raise _too_large(
            path, "the row count in the Parquet metadata", f"({metadata.num_rows:,})",
            f"{limits.max_rows:,} rows", "TAILGUARD_MAX_ROWS",
        )  # fmt: skip
    uncompressed = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if uncompressed > limits.max_bytes:
        raise _too_large(
            path, "the uncompressed size in the Parquet metadata", f"({_mib(uncompressed)})",
            _mib(limits.max_bytes), "TAILGUARD_MAX_INPUT_BYTES",
        )  # fmt: skip


def _is_text_type(kind: Any) -> bool:
    import pyarrow as pa

    return any(f(kind) for f in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                  pa.types.is_large_binary))  # fmt: skip


def _decoded_nbytes(array: Any) -> int:
    """Bytes `array` takes once every dictionary in it is expanded (what a plain read allocates), from the
    dictionary's value lengths and the indices, without expanding anything."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):
        if _is_text_type(kind.value_type):
            lengths = pc.binary_length(array.dictionary).cast(pa.int64())
            # + 8 bytes of offsets a value: the widest (large_string) layout, never an underestimate.
            return int(pc.sum(pc.take(lengths, array.indices)).as_py() or 0) + 8 * len(array)
        per_value = _decoded_nbytes(array.dictionary) // max(len(array.dictionary), 1)
        return len(array) * max(per_value, 1)
    if pa.types.is_struct(kind):
        return len(array) // 8 + 1 + sum(_decoded_nbytes(array.field(k)) for k in range(kind.num_fields))
    if pa.types.is_nested(kind) and hasattr(array, "values"):  # list, large_list, fixed_size_list, map
        return 8 * len(array) + _decoded_nbytes(array.values)
    return int(array.nbytes)


def _parquet_decoded_bytes(path: Path, pf: Any, limits: InputLimits) -> int:
    """The decoded size in bytes of every column of a Parquet file, refused (InputTooLarge, rule
    size_limit) past limits.max_bytes before any dictionary is expanded.

    The footer's total_byte_size counts a dictionary-encoded column as its dictionary plus its indices:
    one 100 KB title repeated 30,000 times is ~100 KB there and 3 GB decoded (3.9 GB peak RSS measured).
    So text columns are read once more, one column and row group at a time, with their dictionaries kept
    (4 bytes of index a row), and their decoded size is summed from the value lengths; fixed-width
    columns count rows x width. The extra read costs about one pass over the text columns.
    """
    import pyarrow.parquet as pq

    md = pf.metadata
    columns = [md.schema.column(j) for j in range(md.num_columns)]
    text_leaves = [c.path for c in columns if c.physical_type in ("BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY")]
    dict_file = pq.ParquetFile(path, read_dictionary=text_leaves) if text_leaves else pf
    total = 0
    for i in range(md.num_row_groups):
        rows = md.row_group(i).num_rows
        for field in pf.schema_arrow:
            try:
                total += rows * max(field.type.bit_width // 8, 1)
            except ValueError:  # not fixed width: text, binary, nested
                column = dict_file.read_row_group(i, columns=[field.name]).column(0)
                total += sum(_decoded_nbytes(chunk) for chunk in column.chunks)
            if total > limits.max_bytes:
                raise _too_large(
                    path, "the decoded data (counted from the Parquet dictionaries before decoding)",
                    f"(more than {_mib(total)})", _mib(limits.max_bytes), "TAILGUARD_MAX_INPUT_BYTES",
                )  # fmt: skip
    return total


def input_bytes(path: str | Path, limits: InputLimits | None = None) -> int:
    """The decompressed size of one input file in bytes, counted without loading it: CSV text after
    gunzip (a gzip is inflated once, streaming, ~2 s per GiB) or Parquet's decoded columns (see
    _parquet_decoded_bytes). data.read_files sums it to cap a whole batch before any file is read.

    Raises InputTooLarge (rule size_limit) past the per-file limits, UnreadableInput for an unreadable file.
    """
    import pyarrow as pa

    path = Path(path)
    limits = limits or input_limits()
    raw, head = _sniff(path)
    if not (head.startswith(b"PAR1") or raw.startswith(b"PAR1")):
        return _check_text_size(path, raw, limits)
    pf = _parquet_file(path)
    _check_parquet_metadata(path, pf.metadata, limits)
    try:
        return _parquet_decoded_bytes(path, pf, limits)
    except (pa.ArrowException, OSError) as exc:
        raise UnreadableInput(
            path, None, "readable_parquet", f"cannot read Parquet ({exc})", hint="re-export the complete file"
        ) from None


_NULLABLE_INTS: dict[Any, Any] = {}


def _nullable_ints() -> dict[Any, Any]:
    import pyarrow as pa

    if not _NULLABLE_INTS:
        pairs = [(pa.int8(), pd.Int8Dtype()), (pa.int16(), pd.Int16Dtype()),
                 (pa.int32(), pd.Int32Dtype()), (pa.int64(), pd.Int64Dtype()),
                 (pa.uint8(), pd.UInt8Dtype()), (pa.uint16(), pd.UInt16Dtype()),
                 (pa.uint32(), pd.UInt32Dtype()), (pa.uint64(), pd.UInt64Dtype())]  # fmt: skip
        _NULLABLE_INTS.update(pairs)
    return _NULLABLE_INTS


def _iter_parquet(
    path: Path, chunk_rows: int | None, limits: InputLimits, packed: tuple[str, ...] = ()
) -> Iterator[pd.DataFrame]:
    """Parquet chunks (see iter_table); the string columns named in `packed` come back as Categoricals."""
    import pyarrow as pa

    pf = _parquet_file(path)
    _check_parquet_metadata(path, pf.metadata, limits)
    schema = pf.schema_arrow
    names = schema.names
    _refuse_repeated_names(path, names, "column names repeat:", [], "rename the duplicates")
    if pf.metadata.num_rows == 0:
        raise UnreadableInput(path, None, "has_rows", "the table has columns but no rows", hint="re-export")
    for field in schema:
        unusable = pa.types.is_nested(field.type) or pa.types.is_binary(field.type)
        if unusable and field.name in CANONICAL_COLUMNS:
            raise BadValues(
                path,
                field.name,
                "scalar_type",
                f"Parquet type {field.type} cannot hold a {field.name}",
                hint="write scalar columns (string, integer, float)",
            )
    start = 0
    try:
        _parquet_decoded_bytes(path, pf, limits)  # before any page is expanded: a dictionary bomb stops here
        dictionary = [f.name for f in schema if f.name in packed and pa.types.is_string(f.type)]
        if dictionary:
            # Decoded straight to codes + distinct values: no Python str per cell (0.11 s against 0.39 s
            # to read and pack a 500k-row block of the bench's four text columns).
            pf = _parquet_file(path, dictionary)
        batches = pf.iter_batches(batch_size=min(chunk_rows or _PARQUET_BATCH, _PARQUET_BATCH))
        for table in _capped_tables(path, batches, chunk_rows, limits, count_bytes=True):
            frame = _parquet_frame(table)
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame
    except (pa.ArrowException, OSError) as exc:
        raise UnreadableInput(
            path, None, "readable_parquet", f"cannot read Parquet ({exc})", hint="re-export the complete file"
        ) from None


def _parquet_frame(table: Any) -> pd.DataFrame:
    import pyarrow as pa

    # Nullable integer dtypes: an int64 id column with a null stays integers ("741"), not 741.0.
    # ignore_metadata: a column pandas saved as its index (df.set_index("request_id").to_parquet()) is a
    # column of the file; pandas' metadata would make it the index, which the reader then drops.
    try:
        return table.to_pandas(types_mapper=_nullable_ints().get, ignore_metadata=True)
    except ValueError:
        # A dictionary page repeating a value cannot be a Categorical: read those columns as plain text.
        plain = [pa.string() if pa.types.is_dictionary(f.type) else f.type for f in table.schema]
        return table.cast(
            pa.schema([f.with_type(t) for f, t in zip(table.schema, plain, strict=True)])
        ).to_pandas(types_mapper=_nullable_ints().get, ignore_metadata=True)


def _csv_header(path: Path, head: bytes, cfg: ColumnMapping) -> tuple[list[str], str]:
    """The header's field names as written (unstripped) and the delimiter; header faults raise."""
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
    stripped = [h.strip() for h in header]
    _refuse_repeated_names(
        path, stripped, "header repeats column names", [lines[0][:120]], "rename or drop the repeated columns"
    )
    return header, delimiter


def _refuse_repeated_names(path: Path, names: list[str], what: str, examples: list, hint: str) -> None:
    """UnreadableInput (rule unique_column_names) naming the first repeated column, when one repeats."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UnreadableInput(path, dupes[0], "unique_column_names", f"{what} {dupes}", examples, hint=hint)


def _open_csv(path: Path, header: list[str], delimiter: str, cfg: ColumnMapping, bad_rows: list) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    def on_bad_row(row: Any) -> str:
        bad_rows.append(row)
        return "error"

    utf8 = cfg.encoding.lower().replace("-", "") in ("utf8", "utf8sig")
    stream = pa.OSFile(str(path))
    with open(path, "rb") as fh:
        if fh.read(2) == b"\x1f\x8b":
            stream = pa.CompressedInputStream(stream, "gzip")
    # use_threads=False: the invalid-row handler then gets the row's record number (None when parallel).
    read = pacsv.ReadOptions(
        column_names=header,
        skip_rows=1,
        use_threads=False,
        encoding="utf8" if utf8 else cfg.encoding,
        block_size=CSV_BLOCK_BYTES,
    )
    # newlines_in_values: quoted titles may hold line breaks (pandas' default accepted them too).
    parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_bad_row)
    convert = pacsv.ConvertOptions(
        column_types={h: pa.string() for h in header},
        strings_can_be_null=True,
        null_values=[""],
        quoted_strings_can_be_null=True,
    )
    return pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)


def _iter_csv(
    path: Path, head: bytes, cfg: ColumnMapping, chunk_rows: int | None, limits: InputLimits
) -> Iterator[pd.DataFrame]:
    import pyarrow as pa

    header, delimiter = _csv_header(path, head, cfg)
    names = [h.strip() for h in header]
    bad_rows: list = []
    start = 0
    try:
        reader = _open_csv(path, header, delimiter, cfg, bad_rows)
        # Text size was capped before parsing (_check_text_size); rows are counted here.
        for table in _capped_tables(path, reader, chunk_rows, limits, count_bytes=False):
            frame = table.to_pandas()
            frame.columns = names
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            _check_repeated_header(path, frame)
            yield frame
    except (pa.ArrowException, OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise _csv_failure(path, cfg, delimiter, len(header), bad_rows, exc) from None
    if start == 0:
        raise UnreadableInput(
            path,
            None,
            "has_rows",
            f"header only ({len(header)} columns, 0 rows)",
            [delimiter.join(header)[:120]],
            hint="the export produced no rows; check the upstream query",
        )


def _csv_failure(
    path: Path, cfg: ColumnMapping, delimiter: str, expected: int, bad_rows: list, exc: Exception
) -> UnreadableInput:
    """Translate a pyarrow/zlib failure into the one ContractError a person can act on."""
    if bad_rows:
        row = bad_rows[0]
        line = _physical_line(path, cfg, delimiter, row.number) if row.number else None
        where = f"line {line}" if line else "a row"
        return UnreadableInput(
            path,
            None,
            "field_count",
            f"{where} has {row.actual_columns} field(s) but the header has {row.expected_columns}",
            [{"line": line, "text": row.text[:120]}],
            hint="quote fields that contain the delimiter, drop stray trailing delimiters, "
            "or check the delimiter",
        )
    text = str(exc)
    if "straddl" in text:
        # With quoted line breaks allowed, pyarrow needs each row inside one block of CSV_BLOCK_BYTES.
        return UnreadableInput(
            path,
            None,
            "row_size",
            f"a row is longer than {CSV_BLOCK_BYTES // 2**20} MiB (a cell of megabytes or an unclosed quote)",
            hint="check for an unbalanced '\"' quote; titles and queries are at most a few KB",
        )
    if "UTF8" in text or isinstance(exc, UnicodeDecodeError):
        return UnreadableInput(
            path,
            None,
            "encoding",
            f"not valid {cfg.encoding} past the first {SNIFF_BYTES} bytes",
            hint="re-encode the file as UTF-8 (iconv -f latin1 -t utf-8)",
        )
    if isinstance(exc, EOFError | zlib.error) or any(w in text.lower() for w in ("gzip", "zlib", "compress")):
        # A truncated upload surfaces mid-stream: read_table returns nothing, so nothing half-loads.
        return UnreadableInput(
            path,
            None,
            "readable_gzip",
            f"truncated or corrupt gzip stream ({text.strip()[:200]})",
            hint="the upload was cut short; re-upload the complete file (`gzip -t FILE` checks it)",
        )
    return UnreadableInput(
        path, None, "csv_syntax", f"cannot parse CSV ({text.strip()[:200]})", hint="re-export the file as CSV"
    )


def _physical_line(path: Path, cfg: ColumnMapping, delimiter: str, record: int) -> int | None:
    """1-based file line where CSV record `record` starts (header = record 1; blank lines not counted).

    pyarrow numbers records, not lines; quoted fields with line breaks make the two differ, so the
    error path re-reads the file once with the csv module to name the line a person opens.
    """
    encoding = "utf-8-sig" if cfg.encoding.lower() in ("utf-8", "utf8") else cfg.encoding
    opener = gzip.open if _head_bytes(path, 2)[0] == b"\x1f\x8b" else open
    try:
        with opener(path, "rt", encoding=encoding, newline="", errors="replace") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            count, start = 0, 1
            for fields in reader:
                if fields:
                    count += 1
                    if count == record:
                        return start
                start = reader.line_num + 1
    except (OSError, EOFError, csv.Error, zlib.error):
        return None
    return None


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


def _check_repeated_header(path: Path, df: pd.DataFrame) -> None:
    """Concatenated exports repeat the header line inside the data; those rows are not data."""
    cols = list(df.columns[: min(3, len(df.columns))])
    mask = np.ones(len(df), dtype=bool)
    for c in cols:
        mask &= (df[c] == c).to_numpy()
    if mask.any():
        rows = [int(r) for r in df.index[mask][:MAX_EXAMPLES]]
        raise UnreadableInput(
            path,
            cols[0],
            "repeated_header",
            f"the header line repeats as data in {int(mask.sum())} row(s)",
            [{"row": r} for r in rows],
            hint="files were concatenated with their headers; keep only the first header",
        )


# --- coercion ---------------------------------------------------------------------------------------------


def read_frame(
    path: str | Path,
    mapping: ColumnMapping | dict[str, str] | None = None,
    required: tuple[str, ...] = REQUIRED_COLUMNS,
    numeric: tuple[str, ...] = (),
    not_null: tuple[str, ...] = (),
    limits: InputLimits | None = None,
) -> pd.DataFrame:
    """Read one file and coerce it to the contract (read_table + coerce_frame); never half-loaded.

    required: the contract columns this caller needs (a batch: REQUIRED_COLUMNS; predict input: query,
    item_title; a metrics train file: query, item_id). numeric: extra columns that must hold finite
    numbers (e.g. a predictions file's `score`). not_null: columns where an empty cell is refused here
    (predict, metrics) rather than left to validation's `not_null` rule (batches).
    limits: size caps (default: the settings', see iter_table).
    Returns coerce_frame's frame: one row per data row of the file, index = 0-based data-row number.
    Raises (all ContractErrors, naming file, column, rule and example rows) UnreadableInput / InputTooLarge
    from reading, MissingColumn for a required column absent after the mapping, BadValues for a value
    that is not of its column's type (e.g. a label outside 0/1).
    """
    # Parquet text is read from the file's dictionaries and coerced to object columns sharing one str per
    # distinct value: 1.6 s against 2.3 s per 2.5M-row file of the bench, and no str object per cell.
    table = read_table(path, mapping, limits, packed=True)
    frame = coerce_frame(table, str(path), mapping, required, numeric, not_null)
    frame.attrs = {k: v for k, v in frame.attrs.items() if k.endswith("_unit")}  # kinds: for iter_frames
    return frame


def iter_frames(
    path: str | Path,
    mapping: ColumnMapping | dict[str, str] | None = None,
    chunk_rows: int = 100_000,
    required: tuple[str, ...] = REQUIRED_COLUMNS,
    numeric: tuple[str, ...] = (),
    not_null: tuple[str, ...] = (),
    packed: bool = False,
) -> Iterator[pd.DataFrame]:
    """Stream read_frame's result, chunk_rows rows at a time (same dtypes, rules and errors).

    Each chunk's index is the file's 0-based data-row number. Chunks before a bad one have already been
    yielded when it raises: a caller that must not half-load collects them before using any.
    packed: text columns read from a Parquet file's string columns stay Categoricals (see packed_text)
    rather than object columns: the same values and errors, without a Python str per cell.
    """
    yield from _checked_frames(str(path), mapping, chunk_rows, required, numeric, not_null, packed, ())


@dataclass
class _FileReading:
    """What each chunk of a file decides alone that a whole read decides once: how each datetime column
    is read. `iso`: columns known to be ISO text (a chunk held non-digit text), so digits-only chunks after
    it are ISO too (20260105), as in a whole read; `kinds`/`checks`: each column's kinds so far and the
    number of its coerce_frame check."""

    iso: tuple[str, ...]
    kinds: dict[str, set[str]]
    checks: dict[str, int]

    def add(self, attrs: dict) -> None:
        """One chunk's reading: a coerced frame's attrs, or a BadValues' (what it read before failing)."""
        for col in DATETIME_COLUMNS:
            kind = attrs.get(f"{col}_kind")
            if kind:
                self.kinds.setdefault(col, set()).add(kind)
                self.checks[col] = attrs[f"{col}_check"]
                if kind.startswith("iso8601") and col not in self.iso:
                    self.iso = (*self.iso, col)

    def mismatch(self, source: str) -> BadValues | None:
        """A column whose chunks were read differently (offsets or none, epoch units, digits and ISO)."""
        for col, seen in self.kinds.items():
            if len(seen) > 1:
                err = BadValues(
                    source, col, "datetime", f"chunks of the file read {col} differently: {sorted(seen)}"
                )
                err.check = self.checks[col]
                return err
        return None


def _checked_frames(
    source: str, mapping: Any, chunk_rows: int, required: tuple, numeric: tuple, not_null: tuple,
    packed: bool, iso: tuple[str, ...], skip: int = 0,
) -> Iterator[pd.DataFrame]:  # fmt: skip
    """iter_frames' chunks from the `skip`th on, `iso` columns read as ISO text from the first chunk."""
    reading = _FileReading(iso, {}, {})
    checks = (source, mapping, chunk_rows, numeric, not_null, packed)
    chunks = iter_table(source, mapping, chunk_rows, packed=packed)
    for index, chunk in enumerate(chunks):
        try:
            frame = coerce_frame(chunk, source, mapping, required, numeric, not_null, packed, reading.iso)
        except BadValues as err:
            reading.add(err.attrs)
            whole = _whole_file_error(err, chunks, reading, *checks)
            if whole is None and err.column in DATETIME_COLUMNS and err.column not in iso:
                # Digits-only ts (20260105) refused as an epoch in this chunk while the whole file is ISO
                # text: read the file again with the column as ISO, yielding from this chunk on.
                again = (*iso, err.column)
                yield from _checked_frames(
                    source, mapping, chunk_rows, required, numeric, not_null, packed, again, index
                )
                return
            raise (whole or err) from None
        reading.add(frame.attrs)
        if index >= skip:
            yield frame
    mismatch = reading.mismatch(source)
    if mismatch is not None:
        raise _whole_column_error(mismatch, *checks) or mismatch


def _whole_file_error(
    first: BadValues, rest: Iterator[pd.DataFrame], reading: _FileReading, source: str, mapping: Any,
    chunk_rows: int, numeric: tuple, not_null: tuple, packed: bool,
) -> BadValues | None:  # fmt: skip
    """The error a whole-file read (read_frame) gives for a file whose chunk raised `first`; None where the
    whole file passes (a ts chunk read alone as an epoch in an ISO file).

    Each later chunk is checked too (one chunk in memory at a time; a read error there is raised, as a
    whole read raises it before any check), and so is the agreement of the chunks' ts readings. The file's
    first failing check is the lowest-numbered one raised by any chunk, since every check before it passed
    in every chunk; that check's column is then read alone and checked whole, so rule, counts and example
    rows are the whole file's (a chunk's own error counted only its rows: "9 value(s)" of a file's 29).
    """
    for chunk in rest:
        try:
            reading.add(
                coerce_frame(chunk, source, mapping, (), numeric, not_null, packed, reading.iso).attrs
            )
        except BadValues as later:
            reading.add(later.attrs)
            first = later if later.check < first.check else first
    mismatch = reading.mismatch(source)
    if mismatch is not None and mismatch.check < first.check:
        first = mismatch
    return _whole_column_error(first, source, mapping, chunk_rows, numeric, not_null, packed)


def _whole_column_error(
    err: BadValues, source: str, mapping: Any, chunk_rows: int, numeric: tuple, not_null: tuple, packed: bool
) -> BadValues | None:
    """coerce_frame's error for err's column read alone from the whole file; None if it passes."""
    whole = read_columns(source, mapping, chunk_rows, [err.column])
    try:
        coerce_frame(whole, source, None, (), numeric, not_null)
    except BadValues as whole:
        return whole
    return None


# Columns tailguard itself writes into a batch: row_id (the batch row number), augmented (a row made by
# augmentation) and source_row_id (the row it was made from). `balance --out` writes all three, and its file
# is read again (`train --data balanced.parquet`): the loader numbers rows anew, so source_row_id must follow.
OWN_COLUMNS = ("row_id", "augmented", "source_row_id")
_OWN_HINT = (
    "row_id, augmented and source_row_id are tailguard's own columns, written together by `tailguard "
    "balance`; rename a column of your own that has one of these names (e.g. export_row_id)"
)


def read_columns(source: str | Path, mapping: Any, chunk_rows: int, columns: list[str]) -> pd.DataFrame:
    """Some columns of a whole file as read, in one pass (before coercion; index: the file's data rows)."""
    cfg = _as_mapping(mapping)
    parts = [_apply_mapping(c, str(source), cfg)[columns] for c in iter_table(source, mapping, chunk_rows)]
    return pd.concat(parts) if parts else pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})


def own_columns(frame: pd.DataFrame, source: str | Path, row_ids: pd.Series | None = None) -> pd.DataFrame:
    """A coerced file (or a chunk of one; index: the file's data rows) with tailguard's own columns read as
    the batch's: `augmented` as bool, `source_row_id` as the file's data row (0-based) of the row whose
    `row_id` it names, and `row_id` dropped (the loader numbers the batch's rows).

    A file of `tailguard balance` has all three: without the remapping, the rows numbered anew would make
    every source_row_id point at another row (the trainer's validation split follows it to a query), and
    without `augmented` its augmented rows would validate. A source_row_id naming no row of the file (its
    source was not kept) points at its own row. row_ids: the whole file's row_id column when `frame` is one
    chunk (None: `frame` is the whole file). A file without these columns is returned unchanged.

    A row_id repeated in the file (random_over's copies, written out) is named by its first row.

    Raises BadValues (rule `own_columns`) for row_id or source_row_id without the other, a missing or
    non-integer id, or an `augmented` value other than true/false/1/0.
    """
    present = [c for c in OWN_COLUMNS if c in frame.columns]
    if not present:
        return frame
    source = str(source)
    out = frame.copy()
    if "augmented" in present:
        out["augmented"] = _own_flag(frame["augmented"], source)
    ids = [c for c in ("row_id", "source_row_id") if c in present]
    if len(ids) == 1:
        other = "source_row_id" if ids == ["row_id"] else "row_id"
        raise BadValues(
            source, ids[0], "own_columns",
            f"the file has {ids[0]!r} but no {other!r}, so it is not a file tailguard wrote", hint=_OWN_HINT,
        )  # fmt: skip
    if ids:
        whole = _own_ids(frame["row_id"] if row_ids is None else row_ids, source, "row_id")
        # random_over written out repeats a row's row_id on each copy: a source names the first of them.
        first = ~whole.duplicated().to_numpy()
        sources = _own_ids(frame["source_row_id"], source, "source_row_id")
        at = pd.Index(whole.to_numpy()[first]).get_indexer(sources.to_numpy())
        own = frame.index.to_numpy(np.int64)
        positions = whole.index.to_numpy(np.int64)[first]
        out["source_row_id"] = np.where(at >= 0, positions[np.maximum(at, 0)], own)
        out = out.drop(columns="row_id")
    return out


def _own_ids(series: pd.Series, source: str, col: str) -> pd.Series:
    try:
        numbers = _coerce_numeric(series, source, col, integer=True)
    except BadValues as err:  # text or fractions: not an id tailguard wrote
        raise BadValues(source, col, "own_columns", err.detail, err.examples, hint=_OWN_HINT) from None
    missing = numbers.isna().to_numpy()
    if missing.any():
        raise BadValues(
            source, col, "own_columns", f"{int(missing.sum())} row(s) have no {col}",
            _bad_examples(series, missing), hint=_OWN_HINT,
        )  # fmt: skip
    return numbers.astype(np.int64)


def _binary_codes(series: pd.Series) -> np.ndarray:
    """Per row 1/0 from text or bools as LABEL_VALUES reads them (true/false, 1/0, 1.0/0.0; any case, outer
    spaces), int16; -1 for any other value and for a missing cell."""
    codes, uniques = _factorized(series)
    mapped = np.array(
        [int(u) if isinstance(u, bool) else LABEL_VALUES.get(str(u).strip().lower(), -1) for u in uniques],
        dtype=np.int16,
    )
    return np.append(mapped, -1)[codes]  # code -1 (missing) reads the appended -1


def _own_flag(series: pd.Series, source: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(series.dtype) and not series.isna().any():
        return series.to_numpy(dtype=bool)
    values = _binary_codes(series)
    bad = values < 0
    if bad.any():
        raise BadValues(
            source, "augmented", "own_columns", f"{int(bad.sum())} row(s) are not true/false",
            _bad_examples(series, bad), hint=_OWN_HINT,
        )  # fmt: skip
    return values.astype(bool)


def output_schema(
    columns: list[str], stored: dict[str, Any], mapping: ColumnMapping | dict[str, str] | None = None
) -> Any:
    """The pyarrow schema of a rewritten file, fixed once from the contract and the source's stored types.

    columns: the coerced frame's columns in order; stored: source_types() of the input file. Contract
    columns get their contract type, every other column its stored type (all CSV columns are strings),
    and a column the source lacks (e.g. `score`) float64. Writing every chunk with this schema keeps a
    later chunk from being cast to what pandas inferred for the first one ('0000741' staying text).
    """
    import pyarrow as pa

    renamed = {source: canonical for canonical, source in _as_mapping(mapping).columns.items()}
    stored = {renamed.get(name, name): typ for name, typ in stored.items()}
    fixed: dict[str, Any] = {c: pa.string() for c in TEXT_COLUMNS}
    fixed |= {c: pa.float64() for c in FLOAT_COLUMNS} | {c: pa.int64() for c in INT_COLUMNS}
    fixed |= {"label": pa.int8()} | {c: pa.timestamp("ns", tz="UTC") for c in DATETIME_COLUMNS}
    fields = []
    for col in columns:
        typ = fixed.get(col) or stored.get(col) or pa.float64()
        fields.append(pa.field(col, typ))
    return pa.schema(fields)


def coerce_frame(
    df: pd.DataFrame,
    source: str | Path,
    mapping: ColumnMapping | dict[str, str] | None = None,
    required: tuple[str, ...] = REQUIRED_COLUMNS,
    numeric: tuple[str, ...] = (),
    not_null: tuple[str, ...] = (),
    packed: bool = False,
    iso_text: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Rename mapped columns and coerce contract columns to their dtypes; never half-coerced.

    Returns a new frame, same rows and index: contract columns in their types (query, item_id,
    item_title, category, user_id: the exact strings; label: int8 0/1; relevance, price: float64;
    position: integers; ts: datetime64 in UTC, naive times read as UTC), every other column as given.
    No non-missing value ever becomes missing. The unit an epoch-integer `ts` was read in is kept in
    `attrs["ts_unit"]`. packed: a Categorical text column of strings stays one (packed_text), else as above.
    iso_text: datetime columns whose text is ISO 8601 even where every value is digits (iter_frames: a later
    chunk of a file whose earlier text was not all digits).
    Raises MissingColumn for a `required` column absent after the mapping (with a --columns hint from
    the closest names), BadValues naming the column, the rule and example rows for a value that cannot
    be read in its column's type, a non-finite `numeric` value or an empty `not_null` cell.
    """
    cfg = _as_mapping(mapping)
    df = _apply_mapping(df, str(source), cfg)
    missing = [c for c in required if c not in df.columns]
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
    step = 0  # the check that raised, numbered the same in every chunk: iter_frames finds the file's first
    try:
        for col in (*TEXT_COLUMNS, "label", *FLOAT_COLUMNS, *numeric, *INT_COLUMNS, *DATETIME_COLUMNS):
            step += 1
            if col in out.columns:
                _refuse_nul(out[col], str(source), col)
        for col in TEXT_COLUMNS:
            step += 1
            if col in out.columns:
                out[col] = _coerce_text(out[col], str(source), col, packed)
        step += 1
        if "label" in out.columns:
            out["label"] = _coerce_label(out["label"], str(source))
        for col in FLOAT_COLUMNS + tuple(numeric):
            step += 1
            if col in out.columns:
                out[col] = _coerce_numeric(out[col], str(source), col, integer=False, finite=col in numeric)
        for col in INT_COLUMNS:
            step += 1
            if col in out.columns:
                out[col] = _coerce_numeric(out[col], str(source), col, integer=True)
        for col in DATETIME_COLUMNS:
            step += 1
            if col in out.columns:
                out[col], unit, kind = _coerce_datetime(out[col], str(source), col, col in iso_text)
                out.attrs[f"{col}_unit"] = unit
                out.attrs[f"{col}_kind"] = kind
                out.attrs[f"{col}_check"] = step
        # relevance is a gain: an empty cell would become gain 0 (a "not relevant" the file never said).
        for col in (*NOT_NULL_WHEN_PRESENT, *not_null):
            step += 1
            _refuse_empty(out, str(source), col)
    except BadValues as err:
        err.check = step
        err.attrs = dict(out.attrs)  # how the checks before it read ts: iter_frames compares chunks' readings
        raise
    return out


def _refuse_empty(out: pd.DataFrame, source: str, col: str) -> None:
    empty = out[col].isna().to_numpy() if col in out.columns else np.zeros(0, bool)
    if empty.any():
        shown = pd.Series(text_values(out[col]), index=out.index) if col in TEXT_COLUMNS else out[col]
        raise BadValues(
            source,
            col,
            "not_null",
            f"{int(empty.sum())} row(s) have an empty {col}",
            _bad_examples(shown, empty),
            hint=f"every row needs a {col} (only an empty cell is missing; 'NA' is text)"
            + ("; or drop the column and label is the gain" if col in NOT_NULL_WHEN_PRESENT else ""),
        )


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
    # The index is the file's data-row number (iter_table sets it per chunk), not the chunk position.
    rows = np.flatnonzero(bad)[:MAX_EXAMPLES]
    return [{"row": _jsonable(series.index[r]), "value": _jsonable(series.iloc[r])} for r in rows]


def _has_nul(values: np.ndarray) -> bool:
    try:
        return "\x00" in "".join(values)  # all text: one C-level join (~0.1 s per 1M cells)
    except TypeError:  # missing cells (None) or non-text values: str() each
        return "\x00" in "".join(map(str, values))


def _refuse_nul(series: pd.Series, source: str, col: str) -> None:
    """Raise BadValues for a NUL character (U+0000) in a text cell of a contract column.

    pandas' string hash tables compare text only up to a NUL: factorize(['a\\x00b', 'a\\x00c', 'a']) gives
    one value (pandas 2.3), so every distinct count, duplicate check, code, per-query metric and coercion
    built on it would merge different cells, and validation's control-character rule, which reads distinct
    values, would never see the NUL. No query, id, title or number has one, so the file is refused. Cost:
    one join per 64k cells, ~0.2 s per 1M rows of the demo's four text columns.
    """
    categorical = isinstance(series.dtype, pd.CategoricalDtype)  # a dictionary-encoded Parquet column
    if not categorical and series.dtype != object and not pd.api.types.is_string_dtype(series.dtype):
        return
    # A categorical's distinct values are its categories: check those, then find the rows using them.
    values = np.asarray(series.cat.categories, dtype=object) if categorical else series.to_numpy(object)
    if not any(_has_nul(values[i : i + 65_536]) for i in range(0, len(values), 65_536)):
        return
    bad = np.fromiter((isinstance(v, str) and "\x00" in v for v in values), bool, len(values))
    if categorical:
        # A chunk sliced from a row group keeps the group's whole dictionary: judge the rows, not categories.
        bad = np.append(bad, False)[series.cat.codes.to_numpy()]  # code -1 (missing) reads the appended False
        if not bad.any():
            return
    raise BadValues(
        source,
        col,
        "no_nul",
        f"{int(bad.sum())} value(s) hold a NUL character (U+0000)",
        _bad_examples(series, bad),
        hint=f"remove NUL characters from {col} upstream; no text cell may contain one",
    )


def _factorized(series: pd.Series) -> tuple[np.ndarray, pd.Index]:
    # Coerce distinct values once and broadcast back: batches repeat values heavily (10M rows, ~1k labels).
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return codes, pd.Index(uniques)


def _none_for_missing(series: pd.Series) -> pd.Series:
    """An object column with None for every missing cell, as a CSV's empty cell and a plain Parquet null
    read: a dictionary column's NaN or a string column's pd.NA would otherwise be named "nan" / "<NA>"
    where the same cell in another file is "None" (metrics name a missing query by astype(str))."""
    if pd.api.types.infer_dtype(series, skipna=False) == "string":  # no missing cell: 8 ms per 500k, isna 32
        return series
    missing = series.isna().to_numpy()
    if not missing.any() or all(v is None for v in series.to_numpy(object)[missing]):
        return series
    values = series.to_numpy(object, copy=True)
    values[missing] = None
    return pd.Series(values, index=series.index, name=series.name, dtype=object)


def packed_text(series: pd.Series) -> pd.Series:
    """A Categorical text column with its categories in order of first use and none unused (code -1:
    missing): the form ray_engine stores blocks in, whatever dictionary the file had (a chunk of a row
    group keeps the whole group's dictionary, in the writer's order)."""
    codes = series.cat.codes.to_numpy()
    order_codes, order = pd.factorize(codes)  # order: the old codes (-1 included) in order of first use
    used = order >= 0
    lookup = np.where(used, np.cumsum(used) - 1, -1)
    categories = pd.Index(np.asarray(series.cat.categories, dtype=object)[order[used]], dtype=object)
    return pd.Series(
        pd.Categorical.from_codes(lookup[order_codes], dtype=pd.CategoricalDtype(categories)),
        index=series.index,
        name=series.name,
    )


def text_values(series: pd.Series) -> np.ndarray:
    """A text column as the contract gives it (object: str, None where missing), packed or not."""
    if not isinstance(series.dtype, pd.CategoricalDtype):
        return series.to_numpy(object)
    codes = series.cat.codes.to_numpy()
    # Index -1 (missing) reads the appended None, as the contract represents a missing cell.
    return np.append(np.asarray(series.cat.categories, dtype=object), None)[codes]


def _coerce_text(series: pd.Series, source: str, col: str, packed: bool = False) -> pd.Series:
    if isinstance(series.dtype, pd.CategoricalDtype):
        if pd.api.types.infer_dtype(series.cat.categories, skipna=False) == "string":
            if packed:
                return packed_text(series)
            return pd.Series(text_values(series), index=series.index, name=series.name, dtype=object)
        series = series.astype(object)
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return _none_for_missing(series.astype(object))
    kind = pd.api.types.infer_dtype(series, skipna=True)
    if kind in ("string", "empty"):
        return _none_for_missing(series)
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
    # Integers as ids/queries are fine as text ("123"). A float column is refused: its exact text is already
    # lost (2.0 was "2" or "2.0"? 0.1 prints "0.1" but is 0.1000000000000000055...), and any rule guessing
    # it back depends on the neighbours (one 1.5 in a chunk used to turn "2" into "2.0").
    if pd.api.types.is_float_dtype(series.dtype) or pd.api.types.is_complex_dtype(series.dtype):
        present = series.notna().to_numpy()
        if not present.any():  # an all-empty column (pandas reads it as float NaN): missing, not numbers
            return pd.Series(None, index=series.index, dtype=object, name=series.name)
        raise BadValues(
            source,
            col,
            "text_type",
            f"{col} is stored as {series.dtype} numbers, not text; their exact spelling is lost",
            _bad_examples(series, present),
            hint=f"write {col} as a string (or integer) column, e.g. df[{col!r}].astype(str) before saving",
        )
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
        values = _binary_codes(series)
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


def _coerce_numeric(
    series: pd.Series, source: str, col: str, integer: bool, finite: bool = False
) -> pd.Series:
    """Numbers from a numeric column or from text; text that is not a number is refused, never NaN.

    finite=True (a predictions file's score): a missing value is refused too (rule `not_null`).
    """
    hint = f"{col} must be a number (decimal point '.', no currency signs) or empty"
    if pd.api.types.is_bool_dtype(series.dtype):
        series = series.astype(np.int8)
    if pd.api.types.is_numeric_dtype(series.dtype):
        numbers = series.astype(float)
    else:
        codes, uniques = _factorized(series)
        converted = pd.to_numeric(pd.Series(uniques.astype(str).str.strip()), errors="coerce").to_numpy(float)
        # Code -1 (empty) reads the appended NaN; an all-empty column has no uniques to index.
        numbers = pd.Series(np.append(converted, np.nan)[codes], index=series.index)
        # 'nan', 'NaN', 'n/a', 'abc' and '' after stripping all come back NaN: text is never turned missing.
        bad = (codes >= 0) & np.isnan(numbers.to_numpy())
        if bad.any():
            raise BadValues(
                source, col, "numeric", f"{int(bad.sum())} value(s) are not numbers",
                _bad_examples(series, bad), hint=hint,
            )  # fmt: skip
    values = numbers.to_numpy()
    # inf/-inf ('inf', '1e999' in text, or stored in Parquet) are not prices, positions or scores.
    bad = np.isinf(values) | (np.isnan(values) if finite else False)
    if bad.any():
        rule = "finite" if np.isinf(values).any() else "not_null"
        raise BadValues(
            source, col, rule, f"{int(bad.sum())} value(s) are missing or infinite",
            _bad_examples(series, bad), hint=hint,
        )  # fmt: skip
    if not integer:
        return numbers.rename(col)
    bad = ~np.isnan(values) & ((values != np.floor(values)) | (np.abs(values) >= 2.0**53))
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


# Epoch integers are read in the unit their magnitude implies: [1e8, 1e11) seconds is 1973-03 .. 5138, and
# each finer unit is the same window times 1e3. Below 1e8 (0, 42, 20260105) the unit is a guess: refused.
EPOCH_UNITS = (("s", 1e8), ("ms", 1e11), ("us", 1e14), ("ns", 1e17))
EPOCH_MAX = 1e20
_DIGITS = r"^\s*-?\d+(?:\.\d+)?\s*$"


def _as_utc(series: pd.Series) -> pd.Series:
    return series.dt.tz_convert("UTC") if series.dt.tz is not None else series.dt.tz_localize("UTC")


def _coerce_datetime(
    series: pd.Series, source: str, col: str, iso: bool = False
) -> tuple[pd.Series, str | None, str | None]:
    """(UTC timestamps, how they were read: 'timestamp', 'iso8601' or 'epoch_s'/'_ms'/'_us'/'_ns', and the
    kind of values: the unit, 'iso8601+offset' for ISO text with offsets, None where no value is present).

    Text is ISO 8601 unless every value is a plain number (and not `iso`), which is then an epoch like a
    numeric column;
    Parquet and CSV give the same result for the same values. Unparseable values raise BadValues. The
    choices are the whole series': chunks of one file must agree on the kind (iter_frames checks).
    """
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return _as_utc(series).rename(col), "timestamp", "timestamp" if series.notna().any() else None
    if pd.api.types.is_bool_dtype(series.dtype):
        raise BadValues(
            source,
            col,
            "datetime",
            "booleans are not timestamps",
            _bad_examples(series, np.ones(len(series), bool)),
        )
    if pd.api.types.is_numeric_dtype(series.dtype):
        parsed, unit = _epoch(series, source, col)
        return parsed, unit, unit
    text = series.astype(object).where(series.notna(), None)
    present = text.dropna().astype(str)
    if not iso and len(present) and present.str.match(_DIGITS).all():
        stripped = present.str.strip()
        ints = {i: int(v) for i, v in stripped.items()} if stripped.str.fullmatch(r"-?\d+").all() else {}
        if ints and max(abs(v) for v in ints.values()) < 2**63:
            # Exact integers (Int64 from the digits, never via float: 1.767e18 ns is past 2**53).
            numbers = pd.Series(pd.array([ints.get(i) for i in series.index], "Int64"), index=series.index)
        else:
            numbers = pd.to_numeric(text.where(text.notna(), np.nan), errors="coerce")
        parsed, unit = _epoch(numbers, source, col, shown=series)
        return parsed, unit, unit
    kind = _refuse_offset_mix(series, source, col)
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
    bad = (parsed.isna() & series.notna()).to_numpy()
    if bad.any():
        raise BadValues(
            source,
            col,
            "datetime",
            f"{int(bad.sum())} value(s) are not ISO-8601 timestamps",
            _bad_examples(series, bad),
            hint=f"write {col} as ISO 8601, e.g. 2026-11-28T13:25:01Z, or as epoch numbers in one unit",
        )
    return parsed.rename(col), "iso8601", kind


# A time of day followed by a UTC designator or offset: ...T10:00:00Z, ...T10:00+05:30, ...T10:00:00.5-0800.
# The time part is required so that a date's own "-05" (2026-01-05) is not taken for an offset.
_UTC_OFFSET = re.compile(r"[Tt ]\d{2}(?::?\d{2}){0,2}(?:[.,]\d+)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)\s*$")


def _refuse_offset_mix(series: pd.Series, source: str, col: str) -> str | None:
    """Refuse ISO text mixing values with and without a UTC offset (rule `datetime`); else the values'
    kind: "iso8601+offset", "iso8601" (none has an offset) or None (no value).

    pandas reads an offset-less value as UTC, unless an earlier value had an offset, then in that
    offset's zone: 2026-01-05T10:00:00 was 04:30 UTC after a +05:30 row and 10:00 UTC otherwise. A file
    of only offset-less values is read as UTC; a mix has no reading that is independent of row order.
    """
    codes, uniques = _factorized(series)
    if not len(uniques):
        return None
    with_offset = np.array([bool(_UTC_OFFSET.search(str(u))) for u in uniques])
    if with_offset.all() or not with_offset.any():
        return "iso8601+offset" if with_offset.all() else "iso8601"
    row_offset = np.where(codes >= 0, with_offset[np.maximum(codes, 0)], False)
    row_plain = (codes >= 0) & ~row_offset
    minority = row_plain if row_plain.sum() <= row_offset.sum() else row_offset
    raise BadValues(
        source,
        col,
        "datetime",
        f"{int(row_offset.sum())} value(s) have a UTC offset and {int(row_plain.sum())} have none; "
        "a value without an offset cannot be placed in time next to values with one",
        _bad_examples(series, minority),
        hint=f"write every {col} with its offset (2026-01-05T10:00:00Z, +05:30) or none (read as UTC)",
    )


def _epoch(
    numbers: pd.Series, source: str, col: str, shown: pd.Series | None = None
) -> tuple[pd.Series, str | None]:
    """Epoch numbers -> UTC timestamps in the one unit their magnitudes imply (see EPOCH_UNITS).

    shown: the values as written (CSV text), used for the examples of an error.
    """
    shown = numbers if shown is None else shown
    values = numbers.to_numpy(dtype=float, na_value=np.nan)
    present = ~np.isnan(values)
    if not present.any():
        return pd.Series(pd.NaT, index=numbers.index, dtype="datetime64[ns, UTC]", name=col), None
    hint = f"write {col} as ISO 8601 or as epoch seconds/ms/us/ns after 1973-03-03 (one unit per file)"
    out_of_range = present & ((values < EPOCH_UNITS[0][1]) | (values >= EPOCH_MAX) | ~np.isfinite(values))
    if out_of_range.any():
        raise BadValues(
            source, col, "epoch_unit",
            f"{int(out_of_range.sum())} value(s) are numbers whose epoch unit cannot be told "
            f"(outside [{EPOCH_UNITS[0][1]:.0e}, {EPOCH_MAX:.0e}) or not finite)",
            _bad_examples(shown, out_of_range), hint=hint,
        )  # fmt: skip
    bounds = np.array([low for _, low in EPOCH_UNITS])
    unit_index = np.searchsorted(bounds, values[present], side="right") - 1
    units = np.unique(unit_index)
    if len(units) > 1:
        tally = [int((unit_index == u).sum()) for u in units]
        counts = {EPOCH_UNITS[int(u)][0]: n for u, n in zip(units, tally, strict=True)}
        bad = np.zeros(len(values), bool)
        bad[np.flatnonzero(present)[unit_index == units[int(np.argmin(tally))]]] = True
        raise BadValues(
            source, col, "epoch_unit", f"epoch values imply different units in one column {counts}",
            _bad_examples(shown, bad), hint=hint,
        )  # fmt: skip
    unit = EPOCH_UNITS[int(units[0])][0]
    try:
        if pd.api.types.is_integer_dtype(numbers.dtype):
            # Integers stay integers: 1.767e18 ns is past float64's 2**53 and would lose nanoseconds.
            parsed = pd.to_datetime(numbers.astype("Int64"), unit=unit, utc=True)
        else:
            parsed = pd.to_datetime(pd.Series(values, index=numbers.index), unit=unit, utc=True)
    except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime) as exc:
        raise BadValues(
            source, col, "epoch_unit", f"epoch values in {unit} fall outside 1677-2262 ({exc})",
            _bad_examples(shown, present), hint=hint,
        ) from None  # fmt: skip
    # ns whatever the unit: a chunk with no value is NaT in ns, so every chunk of a file gets one dtype.
    return parsed.astype("datetime64[ns, UTC]").rename(col), f"epoch_{unit}"
