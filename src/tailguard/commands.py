"""What the library's `tailguard` commands do, as plain functions (no typer, no Prefect).

tailguard.cli turns options into one call here and prints what comes back; tailguard_flows.cli adds the
commands that need Prefect. Errors a user can fix raise CommandError: its message is the one line the
command prints (file, line/column, rule, values where known) and `code` the exit status.
"""

from __future__ import annotations

import getpass
import json
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tailguard.metrics import Evaluation

Echo = Callable[[str], None]


class CommandError(Exception):
    """A refusal to print as one line and exit with `code` (2: bad input, 1: the operation failed).

    usage: the message is about an option's value (the CLI shows it as a usage error, exit 2)."""

    def __init__(self, message: str, code: int = 2, usage: bool = False):
        super().__init__(message)
        self.message, self.code, self.usage = message, code, usage


def whoami() -> str:
    """The login name of the current user, or 'unknown' when the system has none."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# --- validate ------------------------------------------------------------------------------------


def previous_stats(store: Any, previous: str) -> tuple[str | None, dict | None]:
    """(batch id, stats) of the named accepted batch, of the latest one ('latest') or (None, None) ('none').

    Raises CommandError (usage) when a named batch was never accepted in `store`."""
    from tailguard.data import accepted_batch

    if previous == "none":
        return None, None
    record = accepted_batch(store, None if previous == "latest" else previous)
    if record is None and previous != "latest":
        raise CommandError(f"no accepted batch {previous!r} in {store.uri}", usage=True)
    return (record.get("batch_id"), record.get("stats")) if record else (None, None)


def read_batch(engine: str, files: list[Path], mapping: Any) -> Any:
    """The batch on the chosen engine ('' = TAILGUARD_ENGINE, else pandas): a frame, or a Ray batch.

    Raises CommandError (exit 2) for an unknown engine or a Ray failure; ContractError for bad input."""
    from tailguard.data import read_files
    from tailguard.engine import EngineError, choose, ray_session

    try:
        if choose(engine or None) == "pandas":
            return read_files(files, mapping)
        from tailguard import ray_engine

        ray_session()
        return ray_engine.load(files, mapping)
    except (EngineError, RuntimeError) as err:  # RayEngineError is a RuntimeError
        raise CommandError(f"error: {err}") from None


def _validate_on_engine(frame: Any, source: str, previous: dict | None, policy: Any) -> Any:
    """validate_frame on a pandas frame, ray_engine.validate on a Ray batch (the same outcome)."""
    import pandas as pd

    from tailguard.validation import validate_frame

    if isinstance(frame, pd.DataFrame):
        return validate_frame(frame, source, previous, policy)
    from tailguard import ray_engine

    try:
        return ray_engine.validate(frame, source, previous, policy)
    except ray_engine.RayEngineError as err:
        raise CommandError(f"error: {err}") from None


def validate_batch(
    data: str,
    previous: str = "latest",
    columns: str = "",
    delimiter: str = "",
    quarantine: bool = False,
    json_out: Path | None = None,
    engine: str = "",
) -> tuple[str, int]:
    """Validate a batch against the data contract and the validation policy: (summary text, exit code).

    Exit code 0 accepted, 2 refused (every failed rule listed), 3 validation could not run. json_out gets
    the ValidationRecord the retrain flow writes for the same batch; with quarantine a refused batch is
    stored under quarantine/<batch_id>/ and the text says where.
    """
    from tailguard.contract import ColumnMapping, ContractError, parse_columns
    from tailguard.data import batch_id_for, fingerprint_files, materialize
    from tailguard.pipeline import ValidationRecord
    from tailguard.settings import get_settings
    from tailguard.store import open_store
    from tailguard.validation import ValidationPolicy

    store = open_store(get_settings().store_uri)
    files: list[Path] = []
    try:
        mapping = ColumnMapping(
            columns=parse_columns(columns) if columns else {}, delimiter=delimiter or None
        )
        files = materialize(data)  # an s3:// batch is downloaded once, then read from these files
        frame = read_batch(engine, files, mapping)
        previous_id, stats = previous_stats(store, previous)
        outcome = _validate_on_engine(frame, data, stats, ValidationPolicy())
        batch_id = batch_id_for(fingerprint_files(files))
        result = ValidationRecord.from_outcome(outcome, batch_id, previous_id).to_dict()
        text, code = outcome.message(), (0 if outcome.success else 3 if outcome.could_not_run else 2)
    except ContractError as exc:
        outcome = None
        # The same validation.json the retrain flow writes for this refusal (one ValidationRecord shape).
        batch_id = batch_id_for(fingerprint_files(files)) if files else None
        result = ValidationRecord.contract_refusal(data, exc.to_dict(), batch_id).to_dict()
        text, code = f"{data}: REFUSED by the data contract\n[error] {exc}", 2
    if json_out:
        json_out.write_text(json.dumps(result, indent=2, default=str))
    if code != 0 and quarantine and files and batch_id:
        text += f"\nquarantined at {_quarantine(store, batch_id, files, result, outcome)}"
    return text, code


def _quarantine(store: Any, batch_id: str, files: list[Path], result: dict, outcome: Any) -> str:
    """Store a refused batch (files, validation.json, data docs when validation ran); returns its URI."""
    from tailguard.data import quarantine_batch
    from tailguard.validation import build_data_docs

    with tempfile.TemporaryDirectory() as tmp:
        docs = build_data_docs(outcome, Path(tmp) / "data_docs") if outcome else None
        prefix = quarantine_batch(store, batch_id, files, result, docs)
    return f"{store.uri.rstrip('/')}/{prefix}"


# --- balance, train --------------------------------------------------------------------------------


def balance_config(strategy: str, seed: int, options: dict[str, Any]) -> Any:
    """BalanceConfig.from_spec; an option out of range raises CommandError with one line per option."""
    from tailguard.balance import BalanceConfig, BalanceConfigError

    try:
        return BalanceConfig.from_spec(strategy, seed=seed, **options)
    except BalanceConfigError as err:
        raise CommandError(str(err)) from None


def _balance_on_engine(engine: str, data: str, config: Any, compact: bool) -> tuple[Any, Any, dict]:
    """(train, balanced, report) on the chosen engine; the ray engine writes the compact frame only."""
    from tailguard.balance import rebalance
    from tailguard.data import load_batch
    from tailguard.engine import choose, to_pandas

    if choose(engine or None) == "pandas":
        train = load_batch(data)
        return (train, *rebalance(train, config, compact=compact))
    if not compact:
        raise CommandError("error: --engine ray writes the compact frame (rows + repeats); add --compact")
    from tailguard import ray_engine
    from tailguard.engine import ray_session

    ray_session()
    batch = ray_engine.load(data)
    balanced, report = ray_engine.rebalance(batch, config)
    return to_pandas(batch), to_pandas(balanced), report


def writable_outputs(*paths: Path | None) -> None:
    """Refuse (CommandError, exit 2) an output whose folder cannot be made or written, before any work:
    a 10-minute balance must not end in a bare FileNotFoundError."""
    import os

    for path in (p for p in paths if p is not None):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CommandError(f"{path}: cannot write there ({err.strerror or err})") from None
        if not os.access(path.parent, os.W_OK) or path.is_dir():
            raise CommandError(f"{path}: cannot write there (not a writable file path)")


def balance_file(
    data: str,
    config: Any,
    echo: Echo,
    *,
    out: Path | None = None,
    excel_safe: bool = False,
    compact: bool = False,
    report_json: Path | None = None,
    report_html: Path | None = None,
    engine: str = "",
) -> dict:
    """Rebalance `data` with `config` (a BalanceConfig), echo the before/after table and write the outputs.

    Returns the balance report ({"before": ..., "after": ...}). Raises CommandError (exit 2) for a
    strategy that cannot work on this data or a batch the data contract refuses.
    """
    import os

    from tailguard.balance import BalanceConfigError, expand, rebalance, report_table
    from tailguard.contract import ContractError
    from tailguard.data import load_batch
    from tailguard.scoring import write_frame

    writable_outputs(out, report_json, report_html)
    try:
        if engine or os.environ.get("TAILGUARD_ENGINE"):
            train, balanced, report = _balance_on_engine(engine, data, config, compact)
        else:
            train = load_batch(data)
            balanced, report = rebalance(train, config, compact=compact)
    except (BalanceConfigError, ContractError) as err:
        raise CommandError(str(err)) from None
    echo(report_table(report))
    if out is not None:
        write_frame(balanced, out, excel_safe)
        counted = f" counting {report['after']['rows']}" if compact else ""
        echo(f"wrote {len(balanced)} rows{counted} to {out}")
    if report_json is not None:
        report_json.parent.mkdir(parents=True, exist_ok=True)
        report_json.write_text(json.dumps(report, indent=2))
        echo(f"wrote report to {report_json}")
    if report_html is not None:
        from tailguard.reports import class_balance_report  # Evidently: imported only when asked (3-9 s)

        echo(f"wrote {class_balance_report(train, expand(balanced, ['label']), report_html)}")
    return report


def train_config(given: dict[str, Any], options: dict[str, Any]) -> Any:
    """TrainConfig from the options given on the command line (None = not given) and KEY=JSON options
    (which win). threads not given or < 0 takes TAILGUARD_TORCH_THREADS; lr 0 means the base's default.
    Raises CommandError for a value TrainConfig refuses."""
    from tailguard.model import TrainConfig
    from tailguard.settings import get_settings

    fields = {k: v for k, v in given.items() if v is not None}
    if fields.get("threads") is None or fields["threads"] < 0:
        fields["threads"] = get_settings().torch_threads
    if not fields.get("lr"):
        fields.pop("lr", None)
    try:
        return TrainConfig(**{**fields, **options})
    except ValueError as err:
        raise CommandError(f"error: {err}") from None


def train_file(
    data: str,
    out: Path,
    config: Any,
    echo: Echo,
    *,
    balance: str = "none",
    valid: str = "",
    checkpoint_dir: Path | None = None,
) -> str:
    """Fine-tune on `data` (optionally rebalanced, compact) into `out`, echoing one JSON line per epoch.

    Returns the closing summary line (steps, rows, samples/s, seconds, best valid AUC, model folder).
    Raises CommandError (exit 2) for a model error or a missing file.
    """
    from tailguard.contract import ContractError
    from tailguard.data import load_batch
    from tailguard.model import ModelError, train

    try:
        frame = load_batch(data)
        if balance and balance != "none":
            from tailguard.balance import BalanceConfig, rebalance

            frame, _ = rebalance(frame, BalanceConfig.from_spec(balance, seed=config.seed), compact=True)
        valid_df = load_batch(valid) if valid else None
        result = train(frame, config, out, valid_df=valid_df, checkpoint_dir=checkpoint_dir,
                       on_epoch=lambda row: echo(json.dumps(row)))  # fmt: skip
    except (ModelError, FileNotFoundError) as err:
        raise CommandError(f"error: {err}") from None
    except ContractError as err:  # as validate and balance report a refused file
        raise CommandError(f"[error] {err}") from None
    return (
        f"trained {result.steps} steps on {result.train_rows} rows per epoch "
        f"({result.distinct_rows} distinct) at {result.samples_per_s:.0f} samples/s "
        f"in {result.train_seconds:.1f} s; "
        f"best valid AUC {result.best_valid_auc}; model in {result.model_dir}"
    )


# --- metrics -------------------------------------------------------------------------------------

PREDICTION_COLUMNS = ("query", "item_id", "label", "score")


def read_predictions(path: Path, required: tuple[str, ...]) -> Any:
    """One CSV/Parquet file read by the contract's reader; bad input raises CommandError naming file,
    column, rule and rows.

    query and item_id keep the exact strings in the file ('NA', '0000741'); label must be 0/1; score
    and score_production must be finite numbers in every row.
    """
    from tailguard.contract import ContractError, own_columns, read_frame

    text = tuple(c for c in required if c in ("query", "item_id"))
    try:
        frame = read_frame(path, None, required, numeric=("score", "score_production"), not_null=text)
        return own_columns(frame, path)  # a column named row_id is tailguard's, as on the Ray engine
    except ContractError as exc:
        raise CommandError(f"[error] {exc}") from None


def _metrics_on_ray(predictions: Path, train: Path, config: Any) -> dict:
    """metrics.json on the Ray engine (ray_engine.evaluate); the files are read as read_predictions reads
    them on pandas (the same required columns, query and item_id never empty)."""
    from tailguard import ray_engine
    from tailguard.contract import ContractError
    from tailguard.engine import EngineError, ray_session

    keys = ("query", "item_id")
    try:
        ray_session()
        batch = ray_engine.load(predictions, required=PREDICTION_COLUMNS, not_null=keys)
        columns = {"candidate": "score"}
        if "score_production" in batch.columns:
            columns["production"] = "score_production"
        train_batch = ray_engine.load(train, required=keys, not_null=keys)
        return ray_engine.evaluate(batch, train_batch, columns, config)
    except (EngineError, ContractError, RuntimeError) as err:  # RayEngineError is a RuntimeError
        raise CommandError(f"[error] {err}") from None


def evaluate_files(predictions: Path, train: Path, config: Any, engine: str = "") -> Evaluation:
    """metrics.json (a metrics.Evaluation, schema docs/METRICS.md) of a predictions file against its
    training rows.

    predictions: query, item_id, label, score [, relevance, category, score_production]; train: the
    training rows (query, item_id) that define the popularity buckets. Raises CommandError (exit 2)."""
    from tailguard.engine import EngineError, choose
    from tailguard.metrics import evaluate

    try:
        ray = choose(engine or None) == "ray"
    except EngineError as err:
        raise CommandError(f"[error] {err}") from None
    try:
        if ray:
            return _metrics_on_ray(predictions, train, config)
        preds = read_predictions(predictions, PREDICTION_COLUMNS)
        train_df = read_predictions(train, ("query", "item_id"))
        scores = {"candidate": preds["score"].to_numpy(float)}
        if "score_production" in preds.columns:
            scores["production"] = preds["score_production"].to_numpy(float)
        return evaluate(preds, train_df, scores, config)
    except ValueError as exc:
        raise CommandError(f"[error] {predictions}: {exc}") from None


def metrics_text(evaluation: Evaluation, out: Path) -> str:
    """Rows and queries of metrics.json, then per slice its size and each model's ROC AUC (with the
    paired difference and its interval when production was scored too). Slice names (category values are
    seller text) are printed as safe_text.terminal_text shows them."""
    from tailguard.safe_text import terminal_text

    lines = [f"wrote {terminal_text(out)}: {evaluation.data.rows} rows, {evaluation.data.queries} queries"]
    for name, info in evaluation.slices.items():
        values = []
        for model in evaluation.models:
            v = evaluation.value(model, name, "roc_auc")
            values.append(f"{model} {'n/a' if v is None else f'{v:.3f}'}")
        cmp = evaluation.diff(name, "roc_auc")
        if cmp is not None and cmp.ci_low is not None:
            values.append(f"diff {cmp.value:+.3f} [{cmp.ci_low:+.3f}, {cmp.ci_high:+.3f}]")
        note = " (too small)" if info.too_small else ""
        size = f"rows {info.rows:>8}  pos {info.positives:>7}"
        lines.append(f"  {terminal_text(name):<28} {size}  roc_auc: {', '.join(values)}{note}")
    return "\n".join(lines)


def metrics_report(
    predictions: Path, train: Path, config: Any, out: Path, policy: Path | None, engine: str
) -> str:
    """Evaluate, write metrics.json to `out` and return the summary (plus the gate's verdict under
    `policy` when given). Raises CommandError (exit 2) for bad input."""
    result = evaluate_files(predictions, train, config, engine)
    out.write_text(json.dumps(result.to_dict(), indent=1, allow_nan=False))
    text = metrics_text(result, out)
    if policy is not None:
        from tailguard.gate import decide_evaluation, load_policy

        text += "\n" + decide_evaluation(result, load_policy(policy)).summary()
    return text


def recheck_version(registry: Any, version: str, out: Path) -> tuple[str, int]:
    """Recompute a version's metrics.json from its stored eval rows (pipeline.recheck_metrics), write it
    to out and compare byte for byte with the stored one: (text, 0) identical, (text, 1) different.
    Raises CommandError (exit 2) when the version cannot be checked."""
    from tailguard.pipeline import recheck_metrics
    from tailguard.registry import RegistryError
    from tailguard.store import StoreError

    try:
        with tempfile.TemporaryDirectory(prefix="tailguard-recheck-") as scratch:
            recomputed, stored = recheck_metrics(registry, version, Path(scratch))
    except (RegistryError, StoreError, ValueError) as exc:
        raise CommandError(f"[error] version {version}: {exc}") from None
    out.write_bytes(recomputed)
    if recomputed == stored:
        return f"wrote {out}: identical to version {version}'s metrics.json ({len(stored)} bytes)", 0
    at = next((i for i, (a, b) in enumerate(zip(recomputed, stored, strict=False)) if a != b),
              min(len(recomputed), len(stored)))  # fmt: skip
    return f"[differs] {out} vs version {version}'s metrics.json: first difference at byte {at}", 1


# --- registry --------------------------------------------------------------------------------------


def open_registry(store: str, model: str) -> tuple[Any, str]:
    """(Registry, note): the registry named by store/model, or by TAILGUARD_STORE/TAILGUARD_MODEL_NAME;
    with nothing configured and no <home>/store, the demo's store, and a note saying so (else '')."""
    from tailguard.registry import Registry
    from tailguard.settings import get_settings
    from tailguard.store import open_store

    settings = get_settings()
    uri, note = (store, "") if store else settings.existing_store()
    return Registry(open_store(uri), model or settings.model_name), note


def versions_table(registry: Any, show_all: bool = False, as_json: bool = False) -> tuple[str, str]:
    """(stdout text, stderr note): the versions of registry's model as JSON or a table, production '*'."""
    from tailguard.registry import GATE_LABELS
    from tailguard.summary import HEADLINE

    rows = registry.list_versions(include_incomplete=True)
    shown = [r for r in rows if r["complete"] or show_all]
    note = "" if rows or as_json else (
        f"no versions of {registry.model_name!r} in store {registry.store.uri} (choose the store with "
        "--store, TAILGUARD_STORE or TAILGUARD_HOME; `tailguard demo` writes .tailguard/demo/store)"
    )  # fmt: skip
    if as_json:
        return json.dumps(shown, indent=2), note

    def value(row: dict, key: str) -> str:
        number = (row.get("headline") or {}).get(key, {}).get("candidate")
        return "-" if number is None else f"{number:.3f}"

    heads = ["AUC", "AUC/q", "tail AUC/q", "cold AUC"]  # the candidate's value on its eval split
    lines = [f"{'':2}{'version':24} {'created (UTC)':16} {'status':10} {'gate':4} {'balance':14} {'rows':>8} "
             + " ".join(f"{h:>10}" for h in heads)]  # fmt: skip
    for row in shown:
        mark = "*" if row["production"] else ""
        status = "production" if row["production"] else ("complete" if row["complete"] else "INCOMPLETE")
        created = (row.get("created_at") or "-")[:16].replace("T", " ")
        n_rows = "-" if row.get("rows") is None else str(row["rows"])
        # A pass that needs a named override says so in full, even though it widens its row.
        gate = GATE_LABELS[row.get("gate_status", "not-judged")]
        lines.append(
            f"{mark:2}{row['version']:24} {created:16} {status:10} {gate:4} "
            f"{(row.get('balance') or '-')[:14]:14} {n_rows:>8} "
            + " ".join(f"{value(row, f'{slice_}/{metric}'):>10}" for slice_, metric in HEADLINE)
        )
    hidden = len(rows) - len(shown)
    if hidden:
        lines.append(f"({hidden} incomplete version(s) without manifest.json ignored; --all lists them)")
    return "\n".join(lines), note


def history_text(
    registry: Any, compare: tuple[str, str] | None, trend: bool, count: int | None, as_json: bool
) -> str:
    """`models --compare V1 V2` / `models --trend [N]` (tailguard.history) as text or JSON."""
    from tailguard import history

    if bool(compare) == trend or (count is not None and not trend):
        raise CommandError("error: use either --compare V1 V2 or --trend [N] (N only with --trend)")
    if compare:
        found = history.compare_versions(registry, *compare)
        return found.model_dump_json(indent=2) if as_json else history.comparison_text(found)
    rows = history.trend(registry, last=count or 8)
    if as_json:
        return json.dumps([r.model_dump(mode="json") for r in rows], indent=2)
    return history.trend_text(rows)


def recorded_decision(registry: Any, version: str) -> dict[str, Any]:
    """The gate decision stored with a version: decision.json (gate.Decision.to_dict(), with its policy
    record), else the typed manifest's DecisionRecord as it was written ({} when never judged)."""
    from tailguard.store import KeyNotFound

    try:
        return json.loads(registry.store.get_bytes(f"{registry.version_prefix(version)}/decision.json"))
    except KeyNotFound:
        decision = registry.read_manifest(version).decision
        # exclude_unset: the audit records the manifest's decision as written, no defaults added.
        return {} if decision is None else decision.model_dump(mode="json", exclude_unset=True)


def _under_lock(lock: AbstractContextManager | None, fn: Callable[[], Any]) -> Any:
    """fn() under the promotion lock; a lock that is not granted (TimeoutError) exits 1, clearly."""
    try:
        with lock or nullcontext():
            return fn()
    except TimeoutError as err:
        raise CommandError(f"error: {err}", code=1) from None


def promote_version(
    registry: Any, version: str, by: str, comment: str, override: bool, lock: AbstractContextManager | None
) -> dict:
    """Promote `version` (files verified; the recorded decision decides whether --override is needed)
    under `lock`; returns the new production pointer. Raises RegistryError/StoreError, CommandError."""
    decision = recorded_decision(registry, version)
    return _under_lock(lock, lambda: registry.promote(
        version, approved_by=by or whoami(), decision=decision, override=override, comment=comment,
        source="cli"))  # fmt: skip


def check_rollback_request(expect: str, request_id: str) -> None:
    """Raises CommandError (exit 2) unless expect or request_id is given: without either, a rollback run
    twice would move production back two versions."""
    if not expect.strip() and not request_id.strip():
        raise CommandError(
            "error: rollback needs --expect VERSION (the production version you are undoing, see "
            "`tailguard models`) or --request-id ID, so that running it twice cannot roll back twice"
        )


def rollback_version(
    registry: Any, to: str, by: str, expect: str, request_id: str, lock: AbstractContextManager | None
) -> dict:
    """Point production back at `to` (default: the previous one) under `lock`; returns the new pointer.

    Needs expect (the production version being undone) or request_id: without either, a command run
    twice would move production back two versions. Raises CommandError (exit 2; usage for a blank --by),
    RegistryError/StoreError from the registry."""
    from tailguard.registry import RegistryError, require_name

    check_rollback_request(expect, request_id)
    try:
        who = require_name(by or whoami(), "rollback", "--by")
    except RegistryError as err:
        raise CommandError(str(err), usage=True) from None
    return _under_lock(lock, lambda: registry.rollback(
        to=to or None, by=who, expected_current=expect.strip() or None, request_id=request_id.strip() or None,
        source="cli"))  # fmt: skip


# --- reports, batches -------------------------------------------------------------------------------


def serve_reports(store: str, host: str, port: int, echo: Echo, note: Echo) -> None:
    """Serve every version's report pages read-only over HTTP until Ctrl-C, echoing the address.

    Raises CommandError (exit 1) when the address cannot be bound."""
    import sys

    from tailguard.settings import get_settings
    from tailguard.store import open_store
    from tailguard.viewer import make_server, viewer_log_requests

    uri, found = (store, "") if store else get_settings().existing_store()
    if found:
        note(found)
    try:
        server = make_server(open_store(uri), host, port)
    except OSError as err:
        raise CommandError(f"error: cannot listen on {host}:{port}: {err.strerror or err}", code=1) from None
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    echo(f"serving the reports of {uri or 'the default store'} at http://{shown}:{bound_port}/")
    echo(f"  for links in the Prefect UI: export TAILGUARD_REPORTS_URL=http://{shown}:{bound_port}")
    sys.stdout.flush()
    viewer_log_requests.set()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def upload_batch(path: Path, dest: str) -> list[str]:
    """Put a local batch file or folder under the s3:// prefix `dest`; returns the lines to print (what was
    uploaded, and the retrain command for it). Raises CommandError (exit 2) for a bad PATH or DEST,
    StoreError when the upload fails."""
    from tailguard.store import StoreError, open_store, split_uri

    try:
        split_uri(dest)  # StoreError unless s3://bucket[/prefix]
    except StoreError:
        raise CommandError(f"error: DEST {dest!r} is not an s3://bucket/prefix URI") from None
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    elif path.is_file():
        files = [path]
    else:
        raise CommandError(f"error: PATH {path}: no such file or folder")
    if not files:
        raise CommandError(f"error: PATH {path}: the folder holds no files")
    base = path if path.is_dir() else path.parent
    target = open_store(dest)
    for f in files:
        target.put_file(f.relative_to(base).as_posix(), f)
    uri = target.uri.rstrip("/")
    return [
        f"uploaded {len(files)} file(s) ({sum(f.stat().st_size for f in files)} bytes) to {uri}/",
        f"retrain on it: tailguard retrain --data {uri}/{files[0].name if path.is_file() else ''}",
    ]
