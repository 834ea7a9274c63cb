"""The retrain stages as plain functions (no Prefect): tasks wrap them one call each."""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, ValidationInfo, model_validator

from tailguard.balance import STRATEGIES
from tailguard.gate import Decision
from tailguard.metrics import Evaluation
from tailguard.registry import Manifest
from tailguard.settings import Settings, get_settings
from tailguard.validation import ValidationRecord

if TYPE_CHECKING:  # torch loads with tailguard.model (~2 s): only for annotations
    from tailguard.model import TrainResult

# `balance` as the form checks it: known strategy names, comma-separated, spaces allowed around commas.
_STRATEGY = "(?:" + "|".join(STRATEGIES) + ")"
BALANCE_PATTERN = rf"^ *{_STRATEGY}(?: *, *{_STRATEGY})* *$"


class RetrainParams(BaseModel):
    """Parameters of one retrain run; the Prefect deployment exposes the same fields as a UI form."""

    data: str = Field(description="Batch to train on: a CSV/Parquet file, a folder of them, or an s3:// URI.")
    columns: str = Field(
        "", description="Column mapping for real-world files, e.g. 'query=search_term,item_id=product_uid'."
    )
    balance: str = Field(
        "random_under",
        pattern=BALANCE_PATTERN,
        description="Balancing strategies, one or more of "
        f"{', '.join(STRATEGIES)}, comma-separated (e.g. 'popularity_cap,random_under'); each is applied "
        "in a fixed order whatever the order listed (see `tailguard balance --help`).",
    )
    balance_options: dict[str, Any] = Field(
        default_factory=dict,
        description='Options of the balancing strategies as a JSON object, e.g. {"ratio": 1.0} or '
        '{"reweight_key": "query"}; {} keeps every default.',
    )
    base_model: str = Field(
        "tiny", description="'tiny' (from scratch), 'minilm-l6', a local HF folder or an s3:// URI."
    )
    epochs: int = Field(3, ge=1, le=100, description="Training epochs.")
    max_steps: int = Field(
        0, ge=0, description="Stop after this many optimizer steps; 0 (the default) means no cap."
    )
    batch_size: int = Field(32, ge=1, description="Training batch size.")
    learning_rate: float = Field(
        0.0, ge=0, description="Learning rate; 0 (the default) picks the base model's default."
    )
    train_options: dict[str, Any] = Field(
        default_factory=dict,
        description='Further TrainConfig fields as a JSON object, e.g. {"loss": "weighted_bce", '
        '"early_stopping_patience": 2}; {} keeps every default.',
    )
    eval_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of queries held out for evaluation (split by query)."
    )
    seed: int = Field(0, description="Seed for the split, balancing and training.")
    approval: Literal["auto", "manual"] = Field(
        "auto", description="auto: promote only when every gate check passes; manual: pause for a reviewer."
    )
    review_timeout_s: int = Field(
        86_400, ge=1, description="How long a manual review may take; a timeout means rejected."
    )
    gate_policy: str = Field("", description="Path of a gate policy YAML; empty uses policies/gate.yaml.")
    gate_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='Per-run overrides of gate policy fields as a JSON object, e.g. {"floors": {"roc_auc": '
        "0.6}}. Keep {} for a normal run. Anything else relaxes or changes the reviewed policy: the run is "
        "then an override that never promotes unattended and needs approval=manual, a named reviewer, "
        "override=true and a comment. 'Copy to new run' carries this field over: check it.",
    )
    n_bootstrap: int = Field(
        1000,
        ge=0,
        description="Paired bootstrap resamples for every candidate - production difference (0: no "
        "intervals, point estimates only).",
    )
    allow_duplicate_batch: bool = Field(
        False, description="Accept a batch whose content was already accepted before."
    )
    # 4 weeks: the weekly batches of the Home Depot-like catalogues we measured see 70% of their items once,
    # so one week leaves most items cold or tail; four weeks quadruple every item's count
    # while staying inside one month's seasonality, and cost 4x one week's training rows (~1-2 min a run
    # on the GPU pool for ~40k rows a week). 1 trains on the new batch alone (the behaviour before).
    window_weeks: int = Field(
        4,
        ge=1,
        le=52,
        description="Train on the accepted batches of the last N weeks plus the new one (1: the new batch "
        "only); evaluation always uses queries of the new batch.",
    )
    recipe: str = Field(
        "",
        max_length=100,
        description="A named bundle of options from policies/recipes.yaml (baseline, graded, "
        "graded_pairwise, hybrid, ensemble3, ...); it fills the fields the run did not set: on this form, "
        "those left at their defaults (a value equal to the default counts as not set; the CLI knows which "
        "flags and --config keys were given). Dict options are merged, the run's keys winning. Empty: no "
        "recipe.",
    )
    engine: str = Field(
        "",
        pattern=r"^(|pandas|ray)$",
        description="Engine that loads and validates the batch: 'pandas' (this process) or 'ray' (the "
        "cluster at TAILGUARD_RAY_ADDRESS, else a local Ray on loopback; needs tailguard[ray]). Empty: "
        "TAILGUARD_ENGINE, else pandas. On ray the batch is loaded and validated on the cluster, then "
        "collected to this process for training; the eval split is scored by cluster actors.",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, data: Any, info: ValidationInfo) -> Any:
        """Fill the fields the run did not set from its recipe (tailguard.recipes.apply_recipe).

        The set fields are the validation context's `explicit` (RetrainParams.model_validate(values,
        context={"explicit": names})), else options.EXPLICIT_FIELDS (set by the CLI around the flow call,
        whose re-validation has no context); with neither, those left at their defaults (the flow form).
        """
        if not isinstance(data, dict) or not str(data.get("recipe") or "").strip():
            return data
        from tailguard.options import EXPLICIT_FIELDS
        from tailguard.recipes import RecipeError, apply_recipe

        context = info.context if isinstance(info.context, dict) else {}
        explicit = context.get("explicit", EXPLICIT_FIELDS.get())
        defaults = {name: f.get_default(call_default_factory=True) for name, f in cls.model_fields.items()}
        try:
            return apply_recipe(data, defaults, explicit=explicit)
        except RecipeError as err:
            raise ValueError(f"recipe: {err}") from None

    @model_validator(mode="after")
    def _check_options(self) -> RetrainParams:
        """Bad balancing, training or gate options fail here, before a batch is read, validated, accepted."""
        from tailguard.balance import BalanceConfig, BalanceConfigError
        from tailguard.gate import load_policy

        if self.gate_policy or self.gate_overrides:  # else the decision, after training, found it out
            try:
                load_policy(self.gate_policy or None, self.gate_overrides)
            except (OSError, ValueError) as err:
                raise ValueError(f"gate_policy / gate_overrides: {err}") from None

        # An accepted batch is recorded; failing at the rebalance stage would make the rerun a "duplicate".
        try:
            BalanceConfig.from_spec(self.balance, seed=self.seed, **self.balance_options)
        except BalanceConfigError as err:  # name the form fields: the message names the option
            raise ValueError(f"balance / balance_options: {err}") from None
        if self.train_options:  # TrainConfig imports torch (~2 s): only when there is something to check
            from pydantic import ValidationError

            from tailguard.model import TrainConfig
            from tailguard.recipes import split_config

            try:
                TrainConfig(**split_config(train_config(self, get_settings()))[0])
            except ValidationError as err:
                raise ValueError(f"invalid train_options: {params_error(err)}") from None
        return self


def params_error(err: Any) -> str:
    """One line naming every bad field of a pydantic ValidationError: `field=value: rule; ...`.

    What a run form shows instead of pydantic's multi-line dump with its documentation URLs. A
    model-level check (RetrainParams._check_options) names its field in the message itself. Values are
    cut at 60 characters and each error at 400: a hostile or huge input must not flood the state message.
    """
    parts = []
    for e in err.errors():
        loc = e.get("loc", ())
        name = ".".join(str(x) for x in loc)
        shown = "" if not loc or e.get("type") == "missing" else f"={str(e.get('input'))[:60]!r}"
        rule = " ".join(str(e.get("msg", "")).removeprefix("Value error, ").split())  # one line
        field = RetrainParams.model_fields.get(str(loc[0])) if len(loc) == 1 else None
        if e.get("type") == "string_pattern_mismatch" and field is not None:
            rule = f"not an allowed value ({field.description})"  # the regex itself helps nobody
        part = f"{name}{shown}: {rule}" if name else rule
        # A nested check (balance.explain) may echo a whole value: 400 characters keep rule and help.
        parts.append(part if len(part) <= 400 else part[:399] + "…")
    return "; ".join(parts)


@dataclass
class LoadedBatch:
    """A batch read into the canonical frame, with the files it came from."""

    frame: pd.DataFrame | None
    files: list[Path]
    fingerprint: dict
    batch_id: str
    uri: str
    contract_error: dict | None = None
    columns: str = ""  # the column mapping it was read with (kept with the accepted batch for the window)
    # Earlier accepted batches of the training window (with_window), oldest first: (record, frame).
    window: list[tuple[dict, pd.DataFrame]] = field(default_factory=list)
    # engine 'ray': the batch as a ray_engine.RayBatch until validated (`frame` is None until `collect`).
    ray_batch: Any = None


@dataclass
class RunContext:
    """Where a run writes: the store, the registry, a scratch folder for this run and its stage timings
    (seconds); flow_run_id is the orchestrator's run ("" outside one), recorded in the manifest."""

    settings: Settings
    run_id: str
    work_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    flow_run_id: str = ""

    @property
    def store(self):
        """The artifact store (opened on use so settings stay live)."""
        from tailguard.store import open_store

        return open_store(self.settings.store_uri)

    @property
    def registry(self):
        """The registry of this run's model name."""
        from tailguard.registry import Registry

        return Registry(self.store, self.settings.model_name)


@dataclass(frozen=True)
class RunFiles:
    """Where a run writes the files its version stores; the flow passes it to every stage that writes one.

    reports/ holds every page (drift.html, class_balance.html, the Evidently pages, summary.html) in one
    folder because summary.html links its sibling pages by file name; the registry stores it as reports/.
    eval_rows / train_keys are the scored eval record (record_eval_rows); records/ the JSON files
    write_candidate serialises (metrics.json, decision.json, balance.json, drift.json).
    """

    root: Path

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def drift_page(self) -> Path:
        return self.reports / "drift.html"

    @property
    def class_balance_page(self) -> Path:
        return self.reports / "class_balance.html"

    @property
    def eval_rows(self) -> Path:
        return self.root / EVAL_ROWS

    @property
    def train_keys(self) -> Path:
        return self.root / TRAIN_KEYS

    @property
    def records(self) -> Path:
        return self.root / "records"


@dataclass(frozen=True)
class Production:
    """The production pointer as this run read it, once: what the candidate is judged against (drift
    reference, scores on the same eval rows) and the version a promotion expects to replace."""

    version: str
    model_dir: Path | None = None  # its verified local copy, once production_model fetched it


@dataclass
class TrainingData:
    """What prepare_training_data hands on: the batch with its window, both splits, the compact balanced
    training frame (a `repeats` column) with its report, and the drift summary (None before production)."""

    batch: LoadedBatch
    train: pd.DataFrame
    eval_df: pd.DataFrame
    balanced: pd.DataFrame
    balance_report: dict
    drift: dict | None


@dataclass
class Judgement:
    """What evaluating a candidate hands on: its model folder, scores by model ('candidate', 'production'
    when there is one; float arrays, one per eval row), metrics.json, the gate's Decision and its pages."""

    model_dir: Path
    scores: dict[str, np.ndarray]
    evaluation: Evaluation
    decision: Decision
    pages: dict[str, Path]
    production_version: str | None  # the production scored on the same eval rows (None: none was)


class ReviewAnswer(BaseModel):
    """A reviewer's answer to a paused run: the UI form (flows' Review), `tailguard approve`, approval=auto
    (policy:auto) or a review timeout (review-timeout). resolve_review decides whether it promotes."""

    approve: bool = False
    reviewer: str = ""
    comment: str = ""
    override: bool = False
    source: str = "ui-form"


class OutcomePaths(BaseModel):
    """Where a person looks next: the version folder, its report pages and the production pointer (URIs)."""

    version: str
    reports: list[str]
    production_pointer: str


class Outcome(BaseModel):
    """What a retrain run did; its JSON dump is the flow's Completed data and the outcome artifact's source.

    state: Promoted, Rejected (a reviewer, the policy or a timeout said no), NotPromoted (approved, but the
    approval could not promote) or Refused (production moved while the candidate was judged). slices and
    checks are summary.slice_rows / stated_checks rows; timings_s seconds per stage.
    """

    version: str
    promoted: bool
    why: str
    decision: Decision
    production_version: str | None
    paths: OutcomePaths
    slices: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    timings_s: dict[str, float]
    notes: list[str] = Field(default_factory=list)
    state: Literal["Promoted", "Rejected", "NotPromoted", "Refused"] = "Rejected"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form (what `tailguard retrain --json` prints and the run's state carries); its
        decision is Decision.to_dict(), as decision.json has it."""
        return self.model_dump()


def new_context(run_id: str | None = None, flow_run_id: str = "") -> RunContext:
    """A run context from the current settings, with a fresh scratch folder."""
    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    run_id = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = Path(tempfile.mkdtemp(prefix=f"run-{run_id}-", dir=settings.home.resolve()))
    return RunContext(settings=settings, run_id=run_id, work_dir=work, flow_run_id=flow_run_id)


def run_files(ctx: RunContext) -> RunFiles:
    """The folder of the files this run's version will store (inside the run's scratch folder)."""
    return RunFiles(ctx.work_dir / "version")


def load(params: RetrainParams, ctx: RunContext) -> LoadedBatch:
    """Read the batch (local or s3://) with the column mapping; a contract breach is kept, not raised.

    On the ray engine (params.engine, else TAILGUARD_ENGINE) the files are read into pandas blocks in Ray's
    object store under the same contract and kept as `ray_batch`; `collect` turns it into the frame once
    validation passed.
    Raises engine.EngineError for an unknown engine or ray without tailguard[ray].
    """
    from tailguard import engine
    from tailguard.contract import ContractError, parse_columns
    from tailguard.data import batch_id_for, fingerprint_files, materialize, read_files

    files = materialize(params.data, ctx.work_dir / "input")
    fp = fingerprint_files(files)
    mapping = parse_columns(params.columns) if params.columns else None
    frame, ray_batch, error = None, None, None
    try:
        if engine.choose(params.engine or None) == "ray":
            ray_batch = engine.load_batch(files, mapping, engine="ray")
        else:
            frame = read_files(files, mapping)
    except ContractError as exc:  # the flow quarantines the batch with this reason
        error = exc.to_dict()
    return LoadedBatch(
        frame=frame,
        files=files,
        fingerprint=fp,
        batch_id=batch_id_for(fp),
        uri=params.data,
        contract_error=error,
        columns=params.columns,
        ray_batch=ray_batch,
    )


def collect(batch: LoadedBatch) -> LoadedBatch:
    """The batch with its frame: a validated Ray batch collected to this process (training, evaluation and
    the reports run on pandas); a pandas batch unchanged."""
    if batch.frame is not None or batch.ray_batch is None:
        return batch
    from tailguard.contract import InputTooLarge, input_limits

    # The cluster holds any size; this process does not: the one-process cap (TAILGUARD_MAX_ROWS) applies
    # here, with one clear error instead of an out-of-memory kill half-way through the run.
    cap = input_limits().max_rows
    if batch.ray_batch.rows > cap:
        raise InputTooLarge(
            batch.uri, None, "size_limit",
            f"the validated batch holds {batch.ray_batch.rows:,} rows; the retrain flow trains on it in one "
            f"process, over the limit {cap:,}",
            hint="split the batch, or raise TAILGUARD_MAX_ROWS if the flow's worker has the memory",
        )  # fmt: skip
    return replace(batch, frame=batch.ray_batch.to_pandas(), ray_batch=None)


def previous_batch(ctx: RunContext, exclude: str | None = None) -> dict | None:
    """The most recently accepted batch's record (fingerprint, stats), or None before the first."""
    from tailguard.data import accepted_batch

    return accepted_batch(ctx.store, exclude=exclude)


def stored_version_of(batch_id: str, ctx: RunContext) -> str | None:
    """The version a run stored from this batch, or None when no run got that far.

    The accepted batch's record names it; records written before results were tracked (accepted at
    validation time) are matched against the manifests' data.batch_id instead.
    """
    from tailguard.data import accepted_batch

    record = accepted_batch(ctx.store, batch_id)
    if record is None:
        return None
    if record.get("version"):
        return record["version"]
    registry = ctx.registry
    for row in reversed(registry.list_versions()):
        data = registry.read_manifest(row["version"]).data
        if data is not None and data.batch_id == batch_id:
            return row["version"]
    return None


def validate(batch: LoadedBatch, ctx: RunContext, params: RetrainParams) -> ValidationRecord:
    """Run the contract-level and GX checks; return the batch's ValidationRecord (validation.json).

    A batch counts as seen before only when a run stored a version from it: an accepted batch whose run
    failed later is validated again, with a warning (rule batch_rerun_after_failed_run) saying so.
    """
    from tailguard.data import accepted_batch
    from tailguard.engine import validate_batch
    from tailguard.validation import ValidationPolicy, batch_stats

    data = batch.frame if batch.frame is not None else batch.ray_batch
    if data is None:  # the contract check refused it before GX could run
        return ValidationRecord.contract_refusal(batch.uri, batch.contract_error or {}, batch.batch_id)
    previous = previous_batch(ctx, exclude=batch.batch_id)
    # pandas frame or RayBatch: the same ValidationResult (tests/ray compares them field by field)
    outcome = validate_batch(data, batch.uri, previous.get("stats") if previous else None, ValidationPolicy())
    record = ValidationRecord.from_outcome(
        outcome, batch.batch_id, previous.get("batch_id") if previous else None
    )
    seen = {"file": batch.uri, "column": "*", "examples": [f["name"] for f in batch.fingerprint["files"]]}
    stored = stored_version_of(batch.batch_id, ctx)
    if stored and not params.allow_duplicate_batch:
        record.add_failure(
            {**seen, "kind": "validation", "rule": "batch_not_seen_before",
             "observed": f"identical content was accepted before as {batch.batch_id} (version {stored})"}
        )  # fmt: skip
    elif not stored and accepted_batch(ctx.store, batch.batch_id) is not None:
        record.warnings.append(
            {**seen, "kind": "validation", "rule": RERUN_RULE, "severity": "warning",
             "observed": f"batch {batch.batch_id} was accepted before but no version was stored from it "
             "(that run failed after validation); running it again"}
        )  # fmt: skip
    if not record.stats and batch.frame is not None:
        record.stats = batch_stats(batch.frame)
    return record


# The validation warning of a batch accepted before whose run stored no version (validate).
RERUN_RULE = "batch_rerun_after_failed_run"


def rerun_notes(record: ValidationRecord) -> list[str]:
    """The RERUN_RULE warnings' texts: the run logs them and keeps them in its outcome's notes."""
    return [w["observed"] for w in record.warnings if w.get("rule") == RERUN_RULE]


def quarantine(batch: LoadedBatch, record: ValidationRecord, ctx: RunContext) -> str:
    """Store the refused batch and its reasons under quarantine/<batch_id>/; returns that folder's URI."""
    from tailguard.data import quarantine_batch
    from tailguard.validation import build_data_docs

    result = record.to_dict()
    try:
        docs = build_data_docs(result, ctx.work_dir / "data_docs")
    except Exception:  # the docs are a view; validation.json is the record, so quarantine never waits on them
        docs = None
    return (
        ctx.store.uri.rstrip("/")
        + "/"
        + quarantine_batch(ctx.store, batch.batch_id, batch.files, result, docs)
    )


def accept(batch: LoadedBatch, record: ValidationRecord, ctx: RunContext, version: str) -> str:
    """Record the batch as accepted under batches/<batch_id>/ (input as received, fingerprint, stats, and
    the version stored from it). Called once that version is stored: a run that fails earlier leaves no
    record, so rerunning the same file is not refused as a duplicate."""
    from tailguard.data import accept_batch

    shown = record.model_dump(mode="json", include={"stats", "warnings"})  # as validation.json has them
    meta = {
        **batch.fingerprint,
        "batch_id": batch.batch_id,
        "uri": batch.uri,
        "stats": shown["stats"],
        "accepted_at": datetime.now(UTC).isoformat(),
        "warnings": shown["warnings"],
        "version": version,
        "columns": batch.columns or None,  # a later run's training window reads the input with it
    }
    return accept_batch(ctx.store, batch.batch_id, batch.files, meta)


def split(batch: LoadedBatch, params: RetrainParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out a share of the new batch's queries (never rows) for evaluation; train on the rest of it
    plus the window's earlier batches (with_window) minus their rows of held-out queries.

    Evaluation uses the new batch only, so candidate and production are compared on fresh data, and no
    query is in both splits. Earlier batches keep the columns every window batch has; their row_ids
    continue after the new batch's (each batch numbers its rows from 0).
    """
    from tailguard.data import split_by_query

    train, eval_df = split_by_query(batch.frame, params.eval_fraction, params.seed)
    if not batch.window:
        return train, eval_df
    held_out = set(eval_df["query"])
    columns = [c for c in train.columns if all(c in frame.columns for _, frame in batch.window)]
    parts, next_id = [train[columns]], len(batch.frame)
    for _, frame in batch.window:
        kept = frame.loc[~frame["query"].isin(held_out), columns].copy()
        kept["row_id"] = np.arange(next_id, next_id + len(kept), dtype=np.int64)
        next_id += len(kept)
        parts.append(kept)
    return pd.concat(parts, ignore_index=True), eval_df


# Weekly batches land ~7 days apart give or take the hours a run or an export is late: one day of slack
# keeps the batch of N-1 weeks ago inside a window of N weeks and the one of N weeks ago outside it.
WINDOW_SLACK = timedelta(days=1)


def window_records(ctx: RunContext, batch_id: str, weeks: int, now: datetime | None = None) -> list[dict]:
    """Accepted batches (fingerprint.json records) of the window before the new batch, oldest first.

    A batch is in the window when it was accepted after now - (weeks - 1) x 7 days - WINDOW_SLACK; weeks=1
    is the new batch alone. The new batch's own earlier record (a rerun of the same content) is left out.
    """
    from tailguard.data import accepted_batches

    if weeks <= 1:
        return []
    since = (now or datetime.now(UTC)) - timedelta(weeks=weeks - 1) - WINDOW_SLACK
    inside = [
        r for r in accepted_batches(ctx.store)
        if r.get("batch_id") != batch_id and _accepted_at(r) is not None and _accepted_at(r) >= since
    ]  # fmt: skip
    return sorted(inside, key=lambda r: (_accepted_at(r), r.get("batch_id", "")))


def _accepted_at(record: dict) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(record.get("accepted_at")))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def with_window(batch: LoadedBatch, params: RetrainParams, ctx: RunContext) -> LoadedBatch:
    """The batch with the earlier accepted batches of its training window read from the store.

    Each is read from batches/<id>/input/ with the column mapping it was accepted with (records written
    before the mapping was kept: the mapping of the version trained on it). Only the new batch is
    validated in this run; the earlier ones passed when they were accepted.
    """
    from dataclasses import replace

    from tailguard.contract import parse_columns
    from tailguard.data import read_files

    window = []
    for record in window_records(ctx, batch.batch_id, params.window_weeks):
        bid = record["batch_id"]
        files = ctx.store.download_dir(f"batches/{bid}/input", ctx.work_dir / "window" / bid)
        columns = record.get("columns")
        if columns is None and record.get("version"):
            data = ctx.registry.read_manifest(record["version"]).data
            columns = data.columns if data is not None else None
        window.append((record, read_files(sorted(files), parse_columns(columns) if columns else None)))
    return replace(batch, window=window)


def window_summary(batch: LoadedBatch, params: RetrainParams) -> dict:
    """The manifest's training_window: weeks, and every batch trained on (oldest first, the new one last)
    with its fingerprint, ISO week of acceptance and rows."""

    def entry(record: dict, rows: int, role: str) -> dict:
        moment = _accepted_at(record) or datetime.now(UTC)
        year, week, _ = moment.isocalendar()
        return {
            "batch_id": record.get("batch_id"),
            "fingerprint_sha256": record.get("sha256"),
            "uri": record.get("uri"),
            "accepted_at": record.get("accepted_at"),
            "week": f"{year}-W{week:02d}",
            "rows": rows,
            "role": role,
        }

    new = {"batch_id": batch.batch_id, "sha256": batch.fingerprint.get("sha256"), "uri": batch.uri,
           "accepted_at": datetime.now(UTC).isoformat()}  # fmt: skip
    rows = [entry(r, len(frame), "window") for r, frame in batch.window]
    return {"weeks": params.window_weeks, "batches": [*rows, entry(new, len(batch.frame), "new")]}


def drift(batch: LoadedBatch, production: Production | None, files: RunFiles, ctx: RunContext) -> dict | None:
    """Evidently drift of the new batch against the batch production was trained on, as a JSON-able summary
    (+ reference_batch_id), with its page at files.drift_page. None before the first promotion, or when
    production's batch is not in the store."""
    if production is None:
        return None
    from tailguard.contract import parse_columns
    from tailguard.data import load_batch
    from tailguard.reports import drift_report

    data = ctx.registry.read_manifest(production.version).data
    if data is None or not data.batch_id or not ctx.store.list_keys(f"batches/{data.batch_id}/input/"):
        return None
    ref_dir = ctx.work_dir / "reference"
    ctx.store.download_dir(f"batches/{data.batch_id}/input", ref_dir)
    # Read with the column mapping production's batch was read with.
    reference = load_batch(str(ref_dir), parse_columns(data.columns) if data.columns else None)
    summary = drift_report(reference, batch.frame, files.drift_page)
    summary["reference_batch_id"] = data.batch_id
    return summary


def rebalance(train: pd.DataFrame, params: RetrainParams, files: RunFiles) -> tuple[pd.DataFrame, dict]:
    """Balance the training split only; return the compact frame (a `repeats` column) and the report, with
    the class-balance page at files.class_balance_page."""
    from tailguard.balance import BalanceConfig, expand
    from tailguard.balance import rebalance as run_rebalance
    from tailguard.reports import class_balance_report

    config = BalanceConfig.from_spec(params.balance, seed=params.seed, **params.balance_options)
    # Compact: duplicated rows are counted, not written out; the trainer reads `repeats` (same examples).
    balanced, report = run_rebalance(train, config, compact=True)
    class_balance_report(train, expand(balanced, ["label"]), files.class_balance_page)
    return balanced, report


def train_config(params: RetrainParams, settings: Settings) -> dict:
    """The TrainConfig fields for this run (a dict, so it can travel to a GPU worker as a parameter)."""
    config = {
        "base": params.base_model,
        "epochs": params.epochs,
        "batch_size": params.batch_size,
        "seed": params.seed,
        "threads": settings.torch_threads,
        "max_steps": params.max_steps,
    }
    if params.learning_rate:
        config["lr"] = params.learning_rate
    return {**config, **params.train_options}


def train_in_process(balanced: pd.DataFrame, config: dict, ctx: RunContext, on_epoch=None) -> TrainResult:
    """Fine-tune the candidate here (embedded default); returns the model.TrainResult.

    config's `hybrid` / `ensemble_size` (from a recipe or train_options) pick the trainer: see
    recipes.train_candidate (a hybrid folder holds hybrid.json, an ensemble members/ + ensemble.json).
    """
    from tailguard.recipes import train_candidate

    result = train_candidate(
        balanced,
        config,
        ctx.work_dir / "candidate",
        checkpoint_dir=ctx.work_dir / "checkpoints",
        on_epoch=on_epoch,
    )
    return result


def stage_training_data(balanced: pd.DataFrame, ctx: RunContext) -> str:
    """Put the training frame in the store so a fine-tune run on another worker can read it."""
    path = ctx.work_dir / "train.parquet"
    balanced.to_parquet(path, index=False)
    key = f"runs/{ctx.run_id}/train.parquet"
    ctx.store.put_file(key, path)
    return key


def fetch_trained(prefix: str, ctx: RunContext) -> Path:
    """Download a model folder a fine-tune run left in the store."""
    dest = ctx.work_dir / "candidate"
    ctx.store.download_dir(prefix, dest)
    return dest


def score(model_dir: Path, eval_df: pd.DataFrame, engine: str = "") -> np.ndarray:
    """Scores of a model on the evaluation split: in this process, or by actors on the cluster when the
    run's engine (params.engine, else TAILGUARD_ENGINE) is ray (engine.score_frame)."""
    from tailguard.engine import score_frame

    return score_frame(model_dir, eval_df, engine or None)


def read_production(ctx: RunContext) -> Production | None:
    """The production pointer, read once per run (None before the first promotion): drift, scoring and the
    promotion's expected production all use this one reading."""
    pointer = ctx.registry.production()
    return Production(version=pointer["version"]) if pointer else None


def production_model(production: Production, ctx: RunContext) -> Path:
    """The verified local copy of production's model folder (every file checked against its manifest's
    sha256; ChecksumError otherwise)."""
    return ctx.registry.fetch_model(production.version, ctx.work_dir / "production")


def evaluate(
    eval_df: pd.DataFrame, train: pd.DataFrame, scores: dict[str, np.ndarray], params: RetrainParams
) -> Evaluation:
    """tailguard's own metrics overall and per slice, with paired bootstrap intervals."""
    from tailguard.metrics import evaluate as run_evaluate

    return run_evaluate(eval_df, train, scores, eval_config(params))


def eval_config(params: RetrainParams):
    """The metrics.EvalConfig of a run (recorded in the manifest's `evaluation` to recompute metrics.json)."""
    from tailguard.metrics import EvalConfig

    return EvalConfig(n_bootstrap=params.n_bootstrap, seed=params.seed)


def metrics_json_bytes(evaluation: Evaluation | dict) -> bytes:
    """metrics.json exactly as a version stores it (the recheck compares these bytes); other records
    (dicts) in the same 2-space JSON."""
    if isinstance(evaluation, Evaluation):
        return evaluation.to_json_bytes()
    return json.dumps(evaluation, indent=2, default=str).encode()


EVAL_ROWS = "eval_rows.parquet"
TRAIN_KEYS = "train_keys.parquet"
# The eval frame's columns metrics.evaluate reads; scores are stored as the CLI's prediction columns.
_EVAL_INPUT_COLUMNS = ("query", "item_id", "label", "relevance", "category")
_SCORE_COLUMNS = {"candidate": "score", "production": "score_production"}


def record_eval_rows(
    eval_df: pd.DataFrame,
    train: pd.DataFrame,
    scores: dict[str, np.ndarray],
    params: RetrainParams,
    files: RunFiles,
) -> dict[str, Path]:
    """Write the scored eval rows and the training keys to files.eval_rows / files.train_keys.

    eval_rows.parquet: query, item_id, label [, relevance, category], score (candidate), score_production
    (when production was scored), and the slice labels of metrics.assign_slices (popularity,
    query_frequency, query_terms [, category_slice], item_train_count). train_keys.parquet: the training
    split's (query, item_id) rows, from which the bucket cut-offs and the unseen-term vocabulary come.
    Together with the manifest's evaluation.config they recompute metrics.json (recheck_metrics).
    """
    from tailguard.metrics import assign_slices

    rows = eval_df[[c for c in _EVAL_INPUT_COLUMNS if c in eval_df.columns]].reset_index(drop=True)
    for model, column in _SCORE_COLUMNS.items():
        if model in scores:
            rows[column] = np.asarray(scores[model])
    slices = assign_slices(eval_df, train, eval_config(params)).reset_index(drop=True)
    rows = pd.concat([rows, slices.rename(columns={"category": "category_slice"})], axis=1)
    files.root.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(files.eval_rows, index=False)
    train[["query", "item_id"]].reset_index(drop=True).to_parquet(files.train_keys, index=False)
    return {EVAL_ROWS: files.eval_rows, TRAIN_KEYS: files.train_keys}


def recheck_metrics(registry, version: str, work_dir: Path) -> tuple[bytes, bytes]:
    """Recompute a version's metrics.json from its stored eval rows; returns (recomputed, stored) bytes.

    Reads eval_rows.parquet, train_keys.parquet and metrics.json (each verified against the manifest's
    sha256) and the manifest's evaluation.config. Raises RegistryError when the version kept no eval rows
    (written before they were stored), ChecksumError when a file was changed, ValueError when the stored
    slice labels disagree with the ones recomputed from the training keys.
    """
    from tailguard.metrics import EvalConfig, assign_slices
    from tailguard.metrics import evaluate as run_evaluate
    from tailguard.registry import RegistryError

    manifest = registry.read_manifest(version)
    config = manifest.evaluation.config if manifest.evaluation is not None else None
    if config is None or EVAL_ROWS not in manifest.files:
        raise RegistryError(
            f"version {version} kept no {EVAL_ROWS}: it was written before eval rows were stored"
        )
    folder = registry.fetch_files(version, [EVAL_ROWS, TRAIN_KEYS, "metrics.json"], work_dir)
    rows = pd.read_parquet(folder / EVAL_ROWS)
    train = pd.read_parquet(folder / TRAIN_KEYS)
    eval_config = EvalConfig(**config)
    eval_df = rows[[c for c in _EVAL_INPUT_COLUMNS if c in rows.columns]]
    scores = {m: rows[c].to_numpy() for m, c in _SCORE_COLUMNS.items() if c in rows.columns}
    slices = assign_slices(eval_df, train, eval_config)
    for column in slices.columns:
        kept = rows["category_slice" if column == "category" else column].astype(str).to_numpy()
        mismatch = np.flatnonzero(slices[column].astype(str).to_numpy() != kept)
        if mismatch.size:
            raise ValueError(
                f"{EVAL_ROWS}: column {column!r} disagrees with the slices recomputed from {TRAIN_KEYS} in "
                f"{mismatch.size} row(s), e.g. rows {mismatch[:5].tolist()}"
            )
    recomputed = metrics_json_bytes(run_evaluate(eval_df, train, scores, eval_config))
    return recomputed, (folder / "metrics.json").read_bytes()


def decide(evaluation: Evaluation, drift_summary: dict | None, params: RetrainParams) -> Decision:
    """The gate's Decision with every check, stamped with the resolved policy that judged it (pure; see
    gate.decide): its values, sha256, source and whether it is the reviewed default."""
    from tailguard.gate import decide_evaluation, resolve_policy

    policy, record = resolve_policy(
        params.gate_policy or None, params.gate_overrides or None, origin="deployment-parameter"
    )
    return decide_evaluation(evaluation, policy, drift=drift_summary).with_policy(record)


def render_reports(
    data: TrainingData,
    scores: dict[str, np.ndarray],
    evaluation: Evaluation,
    decision: Decision,
    files: RunFiles,
) -> dict[str, Path]:
    """Evidently pages (overall and per popularity bucket) and tailguard's summary page for the reviewer,
    written to files.reports next to the drift and class-balance pages; returns them by name."""
    from tailguard.reports import evaluation_reports

    return evaluation_reports(data.eval_df, scores, evaluation, decision, files.reports, train_df=data.train)


def write_candidate(
    data: TrainingData, judged: Judgement, params: RetrainParams, files: RunFiles, ctx: RunContext
) -> Manifest:
    """Write the candidate's version folder (files first, manifest last); production is not touched.

    Stores judged.model_dir as model/, metrics.json, decision.json (with the resolved gate policy),
    balance.json, drift.json, the eval record when record_eval_rows wrote it, and every page under
    files.reports; the manifest records ctx.flow_run_id. Raises RegistryError when the version exists,
    StoreError when the store fails.
    """
    from tailguard.registry import DataRecord, DecisionRecord
    from tailguard.summary import headline_metrics

    records = {"metrics.json": judged.evaluation, "decision.json": judged.decision.to_dict(),
               "balance.json": data.balance_report, "drift.json": data.drift or {}}  # fmt: skip
    files.records.mkdir(parents=True, exist_ok=True)
    stored: dict[str, Path] = {}
    for name, payload in records.items():
        stored[name] = files.records / name
        stored[name].write_bytes(metrics_json_bytes(payload))
    for name, path in ((EVAL_ROWS, files.eval_rows), (TRAIN_KEYS, files.train_keys)):
        if path.exists():  # metrics.json can be recomputed from them
            stored[name] = path
    if files.reports.exists():
        stored["reports"] = files.reports  # the registry uploads a folder file by file
    batch, decision = data.batch, judged.decision
    manifest = Manifest(  # the registry adds version, model name, creation time, code version and checksums
        data=DataRecord(batch_id=batch.batch_id, uri=batch.uri, fingerprint=batch.fingerprint,
                        columns=params.columns or None, rows=len(batch.frame)),
        params=params.model_dump(mode="json"),
        decision=DecisionRecord(promote=decision.promote, reasons=decision.reasons,
                                policy_sha256=decision.policy_sha256,
                                policy_is_default=decision.policy_is_default),
        headline=headline_metrics(judged.evaluation),
        # Only when production was scored: its numbers in metrics.json come from these same eval rows.
        production_version=judged.production_version,
        balance=data.balance_report,
        drift=data.drift,
        training_window=window_summary(batch, params),
        evaluation={"config": eval_config(params).model_dump(mode="json"), "rows": EVAL_ROWS,
                    "train_keys": TRAIN_KEYS} if EVAL_ROWS in stored else None,
        runtime={"python": platform.python_version()},
        flow_run_id=ctx.flow_run_id,
        timings_s={k: round(v, 3) for k, v in ctx.timings.items()},
    )  # fmt: skip
    version = ctx.registry.new_version_id()
    return Manifest.model_validate(ctx.registry.write_version(version, judged.model_dir, stored, manifest))


def promote(
    version: str, decision: Decision, review: ReviewAnswer, ctx: RunContext, expected_production: str | None
) -> dict:
    """Flip production to the candidate (conditional write) and record who approved it, and from where.

    expected_production is the version the candidate was evaluated against: if another run promoted
    in between, the flip is refused (PromotionConflict) and the refusal is audited, so a later
    `tailguard promote` of this stale candidate needs an override. Returns the new pointer.
    """
    from tailguard.registry import PromotionConflict

    try:
        return ctx.registry.promote(
            version,
            approved_by=review.reviewer,
            decision=decision,
            override=review.override,
            comment=review.comment,
            expected_production=expected_production,
            source=review.source,
        )
    except PromotionConflict as err:
        ctx.registry.refuse(version, f"stale: {err}", decision)
        raise


def reject(version: str, decision: Decision, review: ReviewAnswer, ctx: RunContext) -> None:
    """Record the rejection (bound to the manifest sha256); production stays as it was.

    An answer that names nobody is recorded as the flow's refusal, never as an anonymous rejection.
    """
    if not review.reviewer.strip():
        ctx.registry.refuse(version, review.comment or "the review answer named no reviewer", decision)
        return
    ctx.registry.reject(
        version, by=review.reviewer, decision=decision, comment=review.comment, source=review.source
    )


def auto_review(decision: Decision) -> ReviewAnswer:
    """The unattended policy: approve exactly when every check passed under the reviewed default policy."""
    if decision.promote and not decision.promote_unattended:
        why = "the gate policy is not the reviewed default (an override needs approval=manual)"
    else:
        why = "all gate checks passed" if decision.promote else "a gate check failed"
    return ReviewAnswer(approve=decision.promote_unattended, reviewer="policy:auto", override=False,
                        source="policy:auto", comment=f"approval=auto: {why}")  # fmt: skip


def timeout_review(timeout_s: int) -> ReviewAnswer:
    """The answer of a manual review nobody gave within timeout_s seconds: a rejection."""
    return ReviewAnswer(approve=False, reviewer="review-timeout", comment=f"no answer within {timeout_s} s",
                        override=False, source="review-timeout")  # fmt: skip


def resolve_review(decision: Decision, review: ReviewAnswer) -> tuple[bool, str]:
    """Whether a reviewer's answer promotes, and why (what the run's outcome tells the reviewer).

    Approving needs a named reviewer; a candidate that failed the gate or was judged under a policy other
    than the reviewed default needs override=true and a comment.
    """
    who = review.reviewer.strip()
    if not who:
        return False, "the answer named no reviewer: anonymous decisions are refused"
    if not review.approve:
        comment = review.comment.strip()
        return False, f"rejected by {who}" + (f": {comment}" if comment else "")
    if decision.promote_unattended:
        return True, f"approved by {who}"
    what = "fails the gate" if not decision.promote else "was judged under a non-default gate policy"
    if not review.override:
        return False, f"approval without override=true cannot promote a candidate that {what}"
    if not review.comment.strip():
        return False, f"an override (the candidate {what}) needs a comment saying why"
    return True, f"approved by {who} with an override (the candidate {what})"


def rejection_comment(review: ReviewAnswer, why: str) -> ReviewAnswer:
    """The answer as the audit records a candidate that is not promoted: a rejection's reason is its
    comment; an approval that could not promote says why it did not."""
    comment = f"{review.comment} ({why})" if review.approve else review.comment
    return review.model_copy(update={"comment": comment})


class Timer:
    """Context manager that records a stage's wall time into ctx.timings."""

    def __init__(self, ctx: RunContext, name: str):
        self.ctx, self.name = ctx, name

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ctx.timings[self.name] = self.ctx.timings.get(self.name, 0.0) + time.perf_counter() - self.t0


def rejection_message(record: ValidationRecord, quarantine_uri: str) -> str:
    """One message naming every failed rule, and where the batch was quarantined."""
    from tailguard.summary import validation_text

    return validation_text(record.to_dict(), quarantine_uri)


def review_prompt(decision: Decision, version: str, review_url: str = "") -> str:
    """What the reviewer sees above the form in the Prefect UI (markdown): the verdict first, in
    summary.verdict()'s words (the same as the artifact, summary.html and `tailguard models`), a link to
    the run's review artifact when review_url is given, then what an approval needs and up to 10 reasons.

    Reasons can quote slice names taken from the data: they are HTML-escaped and markdown-neutralised.
    """
    import html

    from tailguard.summary import verdict

    word, why = verdict(decision)
    source = decision.policy.source if decision.policy is not None else None
    policy = "" if decision.policy_is_default is not False else (
        f" It was judged under a non-default gate policy ({source}): approving it is an override."
    )  # fmt: skip
    where = "the 'candidate-review' artifact"
    where = f"[{where}]({review_url})" if review_url else where
    reasons = "\n".join(
        "- " + html.escape(str(r)[:300]).replace("[", "&#91;").replace("]", "&#93;").replace("\n", " ")
        for r in decision.reasons[:10]
    )
    return (
        f"**{word}**: candidate {version} ({why}).{policy} Read {where} and its report links, then approve "
        "or reject with your name. Approving a candidate that is not PROMOTE needs override=true and a "
        f"comment.\n{reasons}"
    )


def outcome(
    manifest: Manifest,
    judged: Judgement,
    settled: tuple[bool, str, str, dict | None],
    notes: list[str],
    ctx: RunContext,
) -> Outcome:
    """What the run did, with the paths a person opens next.

    settled: (promoted, why, state, the new pointer when promoted). The production shown is that pointer,
    else production as it stands now (read again: another run may have promoted meanwhile).
    """
    from tailguard.summary import slice_rows, stated_checks

    promoted, why, state, pointer = settled
    registry = ctx.registry
    base = ctx.store.uri.rstrip("/")
    version_uri = f"{base}/{registry.version_prefix(manifest.version)}"
    pointer = pointer if pointer is not None else registry.production()
    reports = sorted(k for k in manifest.files if k.startswith("reports/"))
    return Outcome(
        version=manifest.version,
        promoted=promoted,
        why=why,
        decision=judged.decision,
        production_version=(pointer or {}).get("version"),
        paths=OutcomePaths(
            version=version_uri,
            reports=[f"{version_uri}/{k}" for k in reports],
            production_pointer=f"{base}/{registry.pointer_key}",
        ),
        slices=slice_rows(judged.evaluation),
        checks=stated_checks(judged.decision, judged.evaluation),
        timings_s={k: round(v, 2) for k, v in ctx.timings.items()},
        notes=notes,
        state=state,
    )


def stored_reports(manifest: Manifest, ctx: RunContext) -> dict[str, str]:
    """Report pages of a written version, by name, as URIs in the store (what the review links point to)."""
    base = f"{ctx.store.uri.rstrip('/')}/{ctx.registry.version_prefix(manifest.version)}"
    return {
        Path(k).stem: f"{base}/{k}"
        for k in sorted(manifest.files)
        if k.startswith("reports/") and k.endswith(".html")
    }


def cleanup(ctx: RunContext) -> None:
    """Remove the run's scratch folder (everything worth keeping is in the store)."""
    import shutil

    shutil.rmtree(ctx.work_dir, ignore_errors=True)
