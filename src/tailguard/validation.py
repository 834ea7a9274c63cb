"""Batch validation with Great Expectations (the only module that imports it): row, text and batch suites."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tailguard.contract import visible_texts

SUITE_NAMES = ("rows", "titles", "queries", "batch")
MAX_EXAMPLES = 5
VISIBLE_SUFFIX = "_visible"  # distinct-value frames carry `<col>_visible` for the blank and length rules
MAX_CATEGORY_VALUES = 10_000
EXPECTATIONS_ENV = "TAILGUARD_EXPECTATIONS_DIR"


class ValidationPolicy(BaseModel):
    """Bands for batch-level checks; each is a parameter of a suite in expectations/ (see its README)."""

    min_rows: int = Field(
        100, ge=1, description="Fewest rows a batch may have (a 1-row batch is an export bug)."
    )
    row_count_ratio_min: float = Field(
        0.25, gt=0, description="Smallest rows/previous-rows ratio accepted (a 4x drop is a partial export)."
    )
    row_count_ratio_max: float = Field(
        4.0,
        gt=0,
        description="Largest rows/previous-rows ratio accepted (a 10x jump is a duplicated export).",
    )
    positive_share_min: float = Field(
        0.005, ge=0, le=1, description="Lowest share of label=1 (a batch of only negatives teaches nothing)."
    )
    positive_share_max: float = Field(
        0.95,
        ge=0,
        le=1,
        description="Highest share of label=1 (only positives means the negatives were lost).",
    )
    positive_share_max_shift: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Largest absolute change of the positive share against the previous batch.",
    )
    # Interaction logs repeat pairs legitimately (one row per impression: ~40% in the demo generator, 0% in
    # Home Depot judgements); a 2x fan-out join alone adds 50%, so 0.5 separates the two.
    max_duplicate_pair_share: float = Field(
        0.5, ge=0, le=1, description="Highest share of rows repeating an earlier (query, item_id) pair."
    )
    max_unseen_category_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Highest share of rows whose category the previous batch never had (warning).",
    )
    title_min_length: int = Field(1, ge=0, description="Shortest item_title in characters.")
    title_max_length: int = Field(
        1_000, ge=1, description="Longest item_title in characters (100k = a dump)."
    )
    query_max_length: int = Field(500, ge=1, description="Longest query in characters.")

    def parameters(self) -> dict[str, Any]:
        """The values the suites reference as {"$PARAMETER": name}."""
        return self.model_dump()


@dataclass
class Failure:
    """One failed rule: where, what was seen, up to 5 offending rows/values, and how bad it is."""

    file: str
    column: str
    rule: str
    observed: str
    severity: str = "error"
    examples: list = field(default_factory=list)
    unexpected_count: int | None = None
    expectation: str = ""
    guards: str = ""

    def line(self) -> str:
        """One line naming file, column, rule, observed value and examples."""
        text = f"[{self.severity}] {self.file}: column '{self.column}' rule '{self.rule}': {self.observed}"
        if self.examples:
            text += "; examples: " + ", ".join(_show_example(e) for e in self.examples)
        return text

    def to_dict(self) -> dict:
        """JSON-able form."""
        return {
            "kind": "validation",
            "file": self.file,
            "column": self.column,
            "rule": self.rule,
            "observed": self.observed,
            "severity": self.severity,
            "examples": self.examples,
            "unexpected_count": self.unexpected_count,
            "expectation": self.expectation,
            "guards": self.guards,
        }


@dataclass
class ValidationResult:
    """Outcome of validate_frame: errors fail the batch, warnings are kept, could_not_run is its own state."""

    source: str
    failures: list[Failure]
    warnings: list[Failure]
    could_not_run: list[dict]
    stats: dict
    skipped: list[str] = field(default_factory=list)
    gx_results: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def success(self) -> bool:
        """True when no error-severity rule failed and every expectation could run."""
        return not self.failures and not self.could_not_run

    def summary_line(self) -> str:
        """One line for logs and the CLI."""
        rows = self.stats.get("rows", 0)
        if self.could_not_run:
            return (
                f"{self.source}: validation could not run ({len(self.could_not_run)} expectation(s) errored)"
            )
        if self.failures:
            rules = ", ".join(sorted({f"{f.column}:{f.rule}" for f in self.failures}))
            return f"{self.source}: REFUSED, {len(self.failures)} rule(s) failed on {rows} rows ({rules})"
        warn = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return (
            f"{self.source}: OK, {rows} rows, positive share {self.stats.get('positive_share', 0):.3f}{warn} "
            f"({self.elapsed_s:.2f} s)"
        )

    def message(self) -> str:
        """Multi-line report: the summary, then one line per failed rule, could-not-run and warning."""
        lines = [self.summary_line()]
        for item in self.could_not_run:
            lines.append(
                f"[could not run] {item['file']}: column '{item['column']}' rule '{item['rule']}': "
                f"{item['exception']}"
            )
        lines += [f.line() for f in self.failures]
        lines += [w.line() for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-able result, kept in quarantine/<batch>/validation.json and used for data docs."""
        return {
            "source": self.source,
            "success": self.success,
            "status": "could_not_run" if self.could_not_run else ("passed" if self.success else "failed"),
            "summary": self.summary_line(),
            "failures": [f.to_dict() for f in self.failures],
            "warnings": [w.to_dict() for w in self.warnings],
            "could_not_run": self.could_not_run,
            "skipped": self.skipped,
            "stats": self.stats,
            "elapsed_s": round(self.elapsed_s, 3),
            "gx_results": self.gx_results,
        }


class ValidationRecord(BaseModel):
    """validation.json: the one shape `tailguard validate` and the retrain flow record for a batch.

    stage says which check decided ("contract": the file could not be read under the data contract, so
    GX never ran; "validation": the GX suites ran), status the outcome. failures/warnings are dicts with
    file, column, rule, observed, severity and examples (ContractError.to_dict / validation.Failure).
    """

    model_config = ConfigDict(extra="allow")

    source: str = Field(description="The batch as given: path, folder or s3:// URI.")
    batch_id: str | None = Field(None, description="Content id ('b-' + 16 hex) when the files were read.")
    success: bool
    stage: Literal["contract", "validation"]
    status: Literal["passed", "failed", "could_not_run"]
    summary: str = ""
    failures: list[dict[str, Any]] = Field(default_factory=list)
    warnings: list[dict[str, Any]] = Field(default_factory=list)
    could_not_run: list[dict[str, Any]] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    stats: dict[str, Any] | None = None
    previous_batch_id: str | None = None
    elapsed_s: float = 0.0
    gx_results: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def contract_refusal(cls, source: str, error: dict, batch_id: str | None = None) -> ValidationRecord:
        """The record of a batch the data contract refused (error: ContractError.to_dict())."""
        where = f"column '{error.get('column')}' rule '{error.get('rule')}'"
        return cls(
            source=source, batch_id=batch_id, success=False, stage="contract", status="failed",
            summary=f"{source}: REFUSED by the data contract ({where})",
            failures=[{**error, "severity": "error"}],
        )  # fmt: skip

    @classmethod
    def from_outcome(
        cls, outcome: ValidationResult, batch_id: str | None = None, previous_batch_id: str | None = None
    ) -> ValidationRecord:
        """The record of a GX validation (outcome: ValidationResult from validate_frame)."""
        return cls(
            **outcome.to_dict(), stage="validation", batch_id=batch_id, previous_batch_id=previous_batch_id
        )

    def add_failure(self, failure: dict) -> None:
        """Refuse the batch for one more rule (a record-level check such as a duplicate batch)."""
        self.failures.append({**failure, "severity": "error"})
        self.success, self.status = False, "failed"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to validation.json."""
        return self.model_dump(mode="json")


class ValidationFailed(Exception):
    """Raised by raise_for_result: the batch is refused (or could not be validated); carries the result."""

    def __init__(self, result: ValidationResult):
        self.result = result
        super().__init__(result.message())


class ValidationCouldNotRun(ValidationFailed):
    """An expectation itself errored (GX exception_info): the data was not judged."""


def raise_for_result(result: ValidationResult) -> ValidationResult:
    """Raise ValidationCouldNotRun / ValidationFailed unless the batch passed; return it otherwise."""
    if result.could_not_run:
        raise ValidationCouldNotRun(result)
    if not result.success:
        raise ValidationFailed(result)
    return result


# --- suites -----------------------------------------------------------------------------------------------


def suite_dir(override: str | Path | None = None) -> Path:
    """Where the suites live: the argument, $TAILGUARD_EXPECTATIONS_DIR, or <repo>/expectations."""
    candidates = [override, os.environ.get(EXPECTATIONS_ENV)]
    here = Path(__file__).resolve()
    candidates += [parent / "expectations" for parent in here.parents[:4]]
    for candidate in candidates:
        if candidate and (Path(candidate) / "rows.json").is_file():
            return Path(candidate)
    raise FileNotFoundError(
        f"no expectation suites found (looked in {[str(c) for c in candidates if c]}); "
        f"set {EXPECTATIONS_ENV} to the folder holding rows.json"
    )


def load_suite_json(name: str, directory: str | Path | None = None) -> dict:
    """The suite JSON as stored in git."""
    return json.loads((suite_dir(directory) / f"{name}.json").read_text())


# --- vectorised statistics --------------------------------------------------------------------------------


@dataclass
class _Derived:
    """Factorized text columns, computed once and shared by stats, duplicate check and GX frames."""

    codes: dict[str, np.ndarray]
    uniques: dict[str, pd.Index]


def _derive(df: pd.DataFrame) -> _Derived:
    codes: dict[str, np.ndarray] = {}
    uniques: dict[str, pd.Index] = {}
    for col in ("query", "item_id", "item_title", "category"):
        if col in df.columns:
            # One hash pass per text column (≈0.1 s per 1M rows) replaces every later string pass:
            # nulls, duplicates, lengths and regexes are then checked on distinct values only.
            c, u = pd.factorize(df[col], use_na_sentinel=True)
            codes[col], uniques[col] = c, pd.Index(u)
    return _Derived(codes, uniques)


def _content_sha256(df: pd.DataFrame, derived: _Derived) -> str:
    digest = hashlib.sha256()
    for col in ("query", "item_id", "item_title"):
        if col in derived.codes:
            digest.update(derived.codes[col].astype(np.int64).tobytes())
            digest.update("\x1f".join(map(str, derived.uniques[col])).encode("utf-8", "surrogatepass"))
    if "label" in df.columns:
        digest.update(np.asarray(df["label"].to_numpy(), dtype=np.float64).tobytes())
    return digest.hexdigest()


def _duplicate_mask(derived: _Derived) -> np.ndarray | None:
    if "query" not in derived.codes or "item_id" not in derived.codes:
        return None
    q = derived.codes["query"].astype(np.int64)
    i = derived.codes["item_id"].astype(np.int64)
    pair = q * (len(derived.uniques["item_id"]) + 1) + (i + 1)
    return pd.Series(pair).duplicated().to_numpy()


def _stats(df: pd.DataFrame, derived: _Derived) -> dict:
    rows = len(df)
    stats: dict[str, Any] = {"rows": rows, "columns": [str(c) for c in df.columns]}
    if "label" in df.columns and pd.api.types.is_numeric_dtype(df["label"].dtype):
        stats["positive_share"] = float(np.mean(df["label"].to_numpy() == 1)) if rows else 0.0
    dup = _duplicate_mask(derived)
    if dup is not None:
        stats["duplicate_pair_share"] = float(dup.mean()) if rows else 0.0
    for col, key in (("query", "distinct_queries"), ("item_id", "distinct_items")):
        if col in derived.uniques:
            stats[key] = len(derived.uniques[col])
    if "item_title" in derived.uniques:
        lengths = derived.uniques["item_title"].astype(str).str.len().to_numpy()
        if len(lengths):
            stats["title_length"] = {
                "min": int(lengths.min()),
                "max": int(lengths.max()),
                "mean_distinct": float(lengths.mean()),
            }
    if "category" in derived.uniques:
        values = derived.uniques["category"].astype(str)
        stats["category_values"] = sorted(values.tolist())[:MAX_CATEGORY_VALUES]
        stats["category_values_truncated"] = len(values) > MAX_CATEGORY_VALUES
    if df.attrs.get("ts_unit"):
        stats["ts_unit"] = df.attrs["ts_unit"]  # how ts was read: iso8601, timestamp or epoch_s/ms/us/ns
    stats["content_sha256"] = _content_sha256(df, derived)
    return stats


def batch_stats(df: pd.DataFrame) -> dict:
    """JSON-able statistics of a batch, kept with an accepted batch and used as previous_stats next time."""
    return _stats(df, _derive(df))


def _comparison_frame(stats: dict, derived: _Derived, previous: dict | None) -> tuple[pd.DataFrame, set[str]]:
    """One-row frame of batch-level numbers for the batch suite, and which inputs are available."""
    available = {"rows"}
    row = {"rows": stats["rows"]}
    if "positive_share" in stats:
        row["positive_share"] = stats["positive_share"]
        available.add("positive_share")
    if "duplicate_pair_share" in stats:
        row["duplicate_pair_share"] = stats["duplicate_pair_share"]
        available.add("duplicate_pair_share")
    if previous:
        available.add("previous")
        prev_rows = max(int(previous.get("rows", 0)), 1)
        row["row_count_ratio"] = stats["rows"] / prev_rows
        if "positive_share" in stats and "positive_share" in previous:
            row["positive_share_shift"] = abs(stats["positive_share"] - float(previous["positive_share"]))
            available.add("positive_share_shift")
        row["identical_to_previous"] = int(stats["content_sha256"] == previous.get("content_sha256"))
        seen = previous.get("category_values")
        if "category" in derived.codes and seen is not None and not previous.get("category_values_truncated"):
            codes = derived.codes["category"]
            unseen_value = ~derived.uniques["category"].astype(str).isin(seen)
            unseen = (codes >= 0) & unseen_value[np.maximum(codes, 0)]
            row["unseen_category_share"] = float(unseen.mean()) if len(codes) else 0.0
            available.add("category_vs_previous")
    return pd.DataFrame([row]), available


# --- GX adapter -------------------------------------------------------------------------------------------


@dataclass
class _GXContext:
    """An ephemeral GX context with one dataframe batch definition per suite, built once per process."""

    context: Any
    batch_definitions: dict[str, Any]


_CONTEXT: _GXContext | None = None
_CONTEXT_LOCK = threading.RLock()  # one GX context per process: validations take turns


def _gx_context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _validation_context() -> _GXContext:
    # Adding a data source re-serialises the context config as YAML (0.37 s of 1.8 s for a 2k-row batch,
    # profiled), so the definitions are made once; the frame itself is passed at validate time.
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            context = _gx_context()
            source = context.data_sources.add_pandas("tailguard")
            definitions = {
                name: source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
                for name in SUITE_NAMES
            }
            _CONTEXT = _GXContext(context, definitions)
        return _CONTEXT


def warm_up() -> None:
    """Import GX and make this process's validation context ahead of use (the first import takes ~5 s): the
    Ray engine calls it in a thread while the cluster works. Raises whatever the import or context raises."""
    from great_expectations.core.expectation_validation_result import (  # noqa: F401 - the import is the point
        ExpectationSuiteValidationResult,
    )

    _validation_context()


def _select_expectations(
    suite_json: dict, frame: pd.DataFrame, available: set[str]
) -> tuple[dict, list[str]]:
    """Drop expectations on absent optional columns or on inputs this batch lacks (no previous batch)."""
    kept, skipped = [], []
    for exp in suite_json.get("expectations", []):
        meta = exp.get("meta", {})
        column = exp.get("kwargs", {}).get("column")
        requires = set(meta.get("requires", []))
        if meta.get("optional") and column not in frame.columns:
            skipped.append(f"{meta.get('rule', exp['type'])}: column {column} absent")
        elif not requires <= available:
            skipped.append(f"{meta.get('rule', exp['type'])}: needs {sorted(requires - available)}")
        else:
            kept.append(exp)
    return {**suite_json, "expectations": kept}, skipped


def _run_suite(context, name: str, suite_json: dict, frame: pd.DataFrame, parameters: dict) -> Any:
    import great_expectations as gx
    from great_expectations.validator.v1_validator import Validator

    suite = gx.ExpectationSuite(**suite_json)
    definition = context.batch_definitions[name]
    # The validator batch.validate() builds, used directly: get_batch() then validate() loads (and hashes,
    # for GX's batch markers) the frame twice; this loads it once (1.74 s of 9.1 s at 1M rows, profiled).
    validator = Validator(
        batch_definition=definition,
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES},
    )
    return validator.validate_expectation_suite(suite, expectation_parameters=parameters)


def _exception_message(info: dict) -> str | None:
    """GX puts exception_info either flat or keyed by metric id; return the first raised message."""
    if not info:
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return value.get("exception_message") or "expectation raised"
    return None


def _file_of(rows: list[int], files: list[dict] | None, source: str) -> str:
    if not files or not rows:
        return source
    row = rows[0]
    for entry in files:
        if entry["first_row"] <= row < entry["first_row"] + entry["rows"]:
            return entry["file"]
    return source


def _row_examples(
    res: dict, index_to_row: np.ndarray | None, regex: str | None = None, originals: pd.Series | None = None
) -> tuple[list, list[int]]:
    values = res.get("partial_unexpected_list") or []
    index = res.get("partial_unexpected_index_list") or []
    if originals is not None and len(index) >= len(values):
        # A rule judged on visible text shows the value as written ('\u200b', not the empty visible text).
        values = [originals.iloc[int(i)] for i in index[: len(values)]]
    examples, rows = [], []
    for pos, value in enumerate(values[:MAX_EXAMPLES]):
        item: dict[str, Any] = {"value": _clip(value, regex)}
        if pos < len(index):
            row = int(index[pos]) if index_to_row is None else int(index_to_row[int(index[pos])])
            item["row"] = row
            rows.append(row)
        examples.append(item)
    return examples, rows


def _show_example(example: Any) -> str:
    if isinstance(example, dict) and "row" in example:
        return f"row {example['row']}: {example.get('value')!r}"
    if isinstance(example, dict):
        return repr(example.get("value"))
    return repr(example)


def _clip(value: Any, regex: str | None = None) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return None
    match = re.search(regex, value) if regex and isinstance(value, str) and len(value) > 80 else None
    if match:
        # Show what the rule matched, not just the start of a long title (HTML entities sit mid-title).
        start, end = max(0, match.start() - 30), min(len(value), match.end() + 30)
        return f"...{value[start:end]}... ({len(value)} chars)"
    if isinstance(value, str) and len(value) > 80:
        return value[:77] + f"... ({len(value)} chars)"
    if isinstance(value, np.generic):
        return value.item()
    return value


# GX's raw result echoes offending cells whole: one 200 MB title made a 400 MB validation.json (it sits in
# partial_unexpected_list and again in partial_unexpected_counts). Kept results hold 20 values of 200 chars.
GX_VALUE_CHARS = 200
GX_LIST_ITEMS = 20


def _clip_raw(value: Any) -> Any:
    if isinstance(value, str) and len(value) > GX_VALUE_CHARS:
        return value[:GX_VALUE_CHARS] + f"... ({len(value)} chars)"
    if isinstance(value, bytes):
        return _clip_raw(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: _clip_raw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clip_raw(v) for v in value[:GX_LIST_ITEMS]]
    return value


def _clip_gx_json(suite_result: dict) -> dict:
    """A GX suite result (to_json_dict()) with every expectation's `result` and exception text clipped:
    strings to GX_VALUE_CHARS characters, lists to GX_LIST_ITEMS items. Expectation configs stay whole."""
    results = []
    for item in suite_result.get("results", []):
        item = dict(item)
        for key in ("result", "exception_info"):
            if key in item:
                item[key] = _clip_raw(item[key])
        results.append(item)
    return {**suite_result, "results": results}


def _observed(res: dict, unit: str) -> str:
    if "observed_value" in res:
        return f"{res['observed_value']}"
    count = res.get("unexpected_count")
    total = res.get("element_count")
    if count is None:
        return "failed"
    share = f" ({100 * count / total:.2f}%)" if total else ""
    return f"{count} of {total} {unit}{share}"


def _bounds(kwargs: dict, parameters: dict) -> str:
    def resolve(v):
        return parameters.get(v["$PARAMETER"]) if isinstance(v, dict) and "$PARAMETER" in v else v

    lo, hi = resolve(kwargs.get("min_value")), resolve(kwargs.get("max_value"))
    if "value_set" in kwargs:
        return f"allowed {kwargs['value_set']}"
    if lo is not None and hi is not None:
        return f"allowed [{lo}, {hi}]"
    return f"allowed >= {lo}" if lo is not None else f"allowed <= {hi}"


def _collect(
    gx_result,
    source: str,
    files: list[dict] | None,
    parameters: dict,
    index_to_row: np.ndarray | None,
    unit: str,
    batch_values: dict | None,
    out: ValidationResult,
    frame: pd.DataFrame | None = None,
) -> None:
    for er in gx_result.results:
        config = er.expectation_config
        kwargs = dict(config.kwargs)
        meta = dict(config.meta or {})
        column = meta.get("column") or kwargs.get("column") or "*"
        rule = meta.get("rule") or config.type
        error = _exception_message(er.exception_info or {})
        if error is not None:
            out.could_not_run.append(
                {
                    "file": source,
                    "column": column,
                    "rule": rule,
                    "expectation": config.type,
                    "exception": error,
                }
            )
            continue
        if er.success:
            continue
        res = dict(er.result or {})
        judged = str(kwargs.get("column", ""))
        originals = None
        if frame is not None and judged.endswith(VISIBLE_SUFFIX) and column in frame.columns:
            originals = frame[column]
        examples, rows = _row_examples(res, index_to_row, kwargs.get("regex"), originals)
        if batch_values is not None:
            stat = kwargs.get("column")
            observed = f"{stat}={_clip(batch_values.get(stat))}, {_bounds(kwargs, parameters)}"
            examples = []
        else:
            observed = _observed(res, unit)
        level = getattr(config, "severity", "critical")
        severity = "warning" if str(getattr(level, "value", level)).lower() == "warning" else "error"
        failure = Failure(
            file=_file_of(rows, files, source),
            column=column,
            rule=rule,
            observed=observed,
            severity=severity,
            examples=examples,
            unexpected_count=res.get("unexpected_count"),
            expectation=config.type,
            guards=meta.get("guards", ""),
        )
        (out.warnings if severity == "warning" else out.failures).append(failure)


def _distinct_frame(derived: _Derived, col: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Distinct values of a text column, indexed 0..k-1, and the first row holding each one."""
    codes = derived.codes[col]
    uniques = derived.uniques[col]
    first_row = np.full(len(uniques), -1, dtype=np.int64)
    valid = np.flatnonzero(codes >= 0)
    # reversed assignment keeps the first occurrence: later writes win, so write in reverse row order
    first_row[codes[valid[::-1]]] = valid[::-1]
    values = pd.Series(uniques.astype(object), dtype=object)
    # Blank and length rules judge `<col>_visible` (contract.visible_text: NFKC, no Cc/Cf/ignorables,
    # stripped): the model never sees U+200B or U+FEFF, so a query made of them is blank.
    return pd.DataFrame({col: values, col + VISIBLE_SUFFIX: visible_texts(values)}), first_row


def _rows_frame(df: pd.DataFrame, derived: _Derived) -> pd.DataFrame:
    """Narrow frame for the rows suite: text as categoricals (GX hashes every frame; codes hash cheaply)."""
    cols: dict[str, Any] = {}
    for col in ("query", "item_id", "item_title"):
        if col in derived.codes:
            cols[col] = pd.Categorical.from_codes(derived.codes[col], categories=derived.uniques[col])
        elif col in df.columns:
            cols[col] = df[col].to_numpy()
    for col in ("label", "price", "relevance", "position"):
        if col in df.columns:
            cols[col] = df[col].to_numpy()
    return pd.DataFrame(cols)


def validate_frame(
    df: pd.DataFrame,
    source: str,
    previous_stats: dict | None = None,
    policy: ValidationPolicy | None = None,
    suite_dir_path: str | Path | None = None,
) -> ValidationResult:
    """Validate a canonical frame against the GX suites in expectations/ (rows, titles, queries, batch).

    df: the canonical frame of data.load_batch, n rows (query, item_id, item_title, label and any optional
    columns; `df.attrs["files"]` names the files rows came from, so a failure names its file). source: the
    batch as given (path, folder or s3:// URI), quoted in every message. previous_stats: batch_stats() of
    the last accepted batch (None: the batch-to-batch rules are skipped and listed in `skipped`). policy:
    the thresholds the suites reference (default ValidationPolicy()). suite_dir_path: a folder of suite
    JSON files (default: suite_dir()).

    Returns a ValidationResult: error-severity failures (each with file, column, rule, the observed value
    and up to MAX_EXAMPLES = 5 offending rows or values), warnings, expectations that could not run, the
    batch's stats (rows, positive_share, ...) and elapsed_s (wall seconds). Bad data never raises: a
    refused batch is `success` False. Raises FileNotFoundError when a suite file is missing,
    json.JSONDecodeError (a ValueError) when one is not JSON, and what Great Expectations raises for an
    expectation it does not know. The Ray engine's validate gives the same result for the same batch.
    """
    started = time.perf_counter()
    policy = policy or ValidationPolicy()
    parameters = policy.parameters()
    derived = _derive(df)
    stats = _stats(df, derived)
    result = ValidationResult(source=str(source), failures=[], warnings=[], could_not_run=[], stats=stats)
    files = df.attrs.get("files")
    context = _validation_context()
    directory = suite_dir(suite_dir_path)

    frames: dict[str, tuple[pd.DataFrame, np.ndarray | None, str, set[str]]] = {}
    rows = _rows_frame(df, derived)
    frames["rows"] = (rows, None, "rows", {"rows"})
    for suite_name, col in (("titles", "item_title"), ("queries", "query")):
        if col in derived.codes:
            frame, first_row = _distinct_frame(derived, col)
            frames[suite_name] = (frame, first_row, f"distinct {col} values", set())
    comparison, available = _comparison_frame(stats, derived, previous_stats)
    frames["batch"] = (comparison, None, "batches", available)

    for name in SUITE_NAMES:
        if name not in frames:
            result.skipped.append(f"suite {name}: its column is absent")
            continue
        frame, index_to_row, unit, avail = frames[name]
        suite_json, skipped = _select_expectations(load_suite_json(name, directory), frame, avail)
        result.skipped += skipped
        if not suite_json["expectations"]:
            continue
        with _CONTEXT_LOCK:
            gx_result = _run_suite(context, name, suite_json, frame, parameters)
        result.gx_results.append(_clip_gx_json(gx_result.to_json_dict()))
        batch_values = comparison.iloc[0].to_dict() if name == "batch" else None
        _collect(gx_result, str(source), files, parameters, index_to_row, unit, batch_values, result, frame)
    result.elapsed_s = time.perf_counter() - started
    return result


# --- data docs --------------------------------------------------------------------------------------------


_SAFE_VIEWS: dict[str, type] = {}


def _safe_views() -> dict[str, type]:
    """GX page views that HTML-escape every plain-text cell before it is written.

    GX 1.24 escapes string-template parameters but writes plain strings (sampled unexpected values,
    observed values, counts tables) raw into the page, so a title `<img src=x onerror=...>` ran when a
    quarantine page was opened. Built on first use: importing GX costs seconds.
    """
    if not _SAFE_VIEWS:
        from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
        from jinja2 import pass_context

        from tailguard.safe_text import html_text

        base = DefaultJinjaPageView.render_content_block  # pass_context only marks the function

        @pass_context
        def render_content_block(self, jinja_context, content_block, index=None, content_block_id=None,
                                 render_to_markdown=False):  # fmt: skip
            if render_to_markdown:
                return base(self, jinja_context, content_block, index, content_block_id, True)
            if isinstance(content_block, list):  # GX wraps non-block items raw in <span>{item}</span>
                content_block = [c if _is_block(c) else html_text(c) for c in content_block]
            elif not _is_block(content_block):
                return "" if content_block is None else html_text(content_block)
            return base(self, jinja_context, content_block, index, content_block_id)

        for name, parent in (
            ("SafePageView", DefaultJinjaPageView),
            ("SafeIndexPageView", DefaultJinjaIndexPageView),
        ):
            members = {"render_content_block": render_content_block, "__module__": __name__}
            _SAFE_VIEWS[name] = type(name, (parent,), members)
    return _SAFE_VIEWS


def _is_block(value: Any) -> bool:
    return isinstance(value, dict) and "content_block_type" in value


def __getattr__(name: str) -> type:
    # GX instantiates a site's views from (module_name, class_name); the classes are made on first use.
    if name in ("SafePageView", "SafeIndexPageView"):
        return _safe_views()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_data_docs(result: ValidationResult | dict, out_dir: str | Path) -> Path | None:
    """Render GX Data Docs for a result into out_dir (a configured site, not a temp folder); None if empty."""
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    raw = result.gx_results if isinstance(result, ValidationResult) else result.get("gx_results", [])
    if not raw:
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = _gx_context()
    site = "tailguard"
    context.add_data_docs_site(
        site,
        {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(out_dir)},
            "site_index_builder": {
                "class_name": "DefaultSiteIndexBuilder",
                "view": {"module_name": __name__, "class_name": "SafeIndexPageView"},
            },
            "site_section_builders": {
                section: {"view": {"module_name": __name__, "class_name": "SafePageView"}}
                for section in ("expectations", "validations", "profiling")
            },
        },
    )
    run_id = RunIdentifier(run_name="tailguard-validation")
    store = context.validation_results_store
    for item in raw:
        suite_result = ExpectationSuiteValidationResult(
            **{
                **item,
                "results": [ExpectationValidationResult(**r) for r in item.get("results", [])],
            }
        )
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=item.get("suite_name", "suite")),
            run_id=run_id,
            batch_identifier=item.get("suite_name", "batch"),
        )
        store.set(key, suite_result)
    context.build_data_docs(site_names=[site])
    index = out_dir / "index.html"
    return out_dir if index.exists() else None


def suite_result_from_json(item: dict) -> Any:
    """A GX suite result object rebuilt from its JSON form (what `_collect` reads).

    The Ray engine merges per-block row-suite results as JSON (summed unexpected counts) and hands the
    merged JSON back here, so GX stays imported in this one adapter module.
    """
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    def one(r: dict) -> Any:
        config = {k: v for k, v in r["expectation_config"].items() if k != "rendered_content"}
        return ExpectationValidationResult(**{**r, "expectation_config": ExpectationConfiguration(**config)})

    results = [one(r) for r in item.get("results", [])]
    return ExpectationSuiteValidationResult(**{**item, "results": results})
