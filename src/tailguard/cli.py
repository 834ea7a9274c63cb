"""The `tailguard` command line (typer). Each command is a thin shell over library calls."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer


class _Cli(typer.Typer):
    """typer.Typer whose unexpected errors print one line (type, message, how to see more), exit 1.

    Commands already turn the errors they expect into clear messages and exit codes; this is the net
    under everything else (a store URI that cannot open, a Prefect API that refuses, a bug), so a user
    never gets a raw traceback. TAILGUARD_DEBUG=1 shows it.
    """

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the last line of defence, by design
            if os.environ.get("TAILGUARD_DEBUG"):
                raise
            text = " ".join(str(err).split())[:2000] or "(no message)"
            hint = "(TAILGUARD_DEBUG=1 shows the traceback)"
            print(f"error: {type(err).__name__}: {text} {hint}", file=sys.stderr)
            sys.exit(1)


app = _Cli(add_completion=False, no_args_is_help=True, help=__doc__)


def _offline() -> None:
    """Keep the Hugging Face hub off before transformers is imported (a hub name stalls ~46 s offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# Commands are grouped by area; each area keeps to its own block below.

# --- data: demo-data, validate ---------------------------------------------------------------


@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(Path("demo-data"), "--out", help="Folder to write the batch files into."),
    rows: int = typer.Option(2000, "--rows", min=1, help="Rows per batch."),
    batches: int = typer.Option(2, "--batches", min=1, help="Number of weekly batches."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed gives the same files."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    item_zipf: float = typer.Option(1.1, "--item-zipf", help="Zipf exponent of item popularity."),
    query_zipf: float = typer.Option(1.05, "--query-zipf", help="Zipf exponent of query frequency."),
) -> None:
    """Generate demo batches with a realistic long tail (English and Chinese titles)."""
    from tailguard.demo import DemoConfig, generate_batches

    if fmt not in ("csv", "parquet"):
        raise typer.BadParameter("--format must be csv or parquet")
    config = DemoConfig(rows=rows, batches=batches, seed=seed, item_zipf=item_zipf, query_zipf=query_zipf)
    for path in generate_batches(config, out, fmt):  # type: ignore[arg-type]
        typer.echo(str(path))


def _previous_stats(store, previous: str) -> tuple[str | None, dict | None]:
    """Stats of the named accepted batch, or of the most recently accepted one when previous is 'latest'."""
    from tailguard.data import accepted_batch

    if previous == "none":
        return None, None
    record = accepted_batch(store, None if previous == "latest" else previous)
    if record is None and previous != "latest":
        raise typer.BadParameter(f"no accepted batch {previous!r} in {store.uri}")
    return (record.get("batch_id"), record.get("stats")) if record else (None, None)


@app.command()
def validate(
    data: str = typer.Option(..., "--data", help="Batch file, folder of files, or s3:// URI."),
    previous: str = typer.Option(
        "latest", "--previous", help="Accepted batch id to compare with; 'latest' (default) or 'none'."
    ),
    columns: str = typer.Option("", "--columns", help="Column mapping, e.g. query=search_term,item_id=uid."),
    delimiter: str = typer.Option("", "--delimiter", help="CSV delimiter when not ',' (e.g. ';')."),
    quarantine: bool = typer.Option(
        False, "--quarantine/--no-quarantine", help="Store a refused batch under quarantine/<batch_id>/."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the full result as JSON here."),
    engine: str = typer.Option("", "--engine", help="pandas or ray; default TAILGUARD_ENGINE, else pandas."),
) -> None:
    """Validate a batch: exit 0 with a summary, 2 listing every failed rule, 3 if validation could not run."""
    from tailguard.contract import ColumnMapping, ContractError, parse_columns
    from tailguard.data import batch_id_for, fingerprint_files, materialize, quarantine_batch, read_files
    from tailguard.pipeline import ValidationRecord
    from tailguard.settings import get_settings
    from tailguard.store import open_store
    from tailguard.validation import ValidationPolicy, build_data_docs, validate_frame

    settings = get_settings()
    store = open_store(settings.store_uri)
    result: dict
    files: list[Path] = []
    try:
        mapping = ColumnMapping(
            columns=parse_columns(columns) if columns else {}, delimiter=delimiter or None
        )
        files = materialize(data)  # an s3:// batch is downloaded once, then read from these files
        frame = _engine_read(engine, files, mapping) if engine != "pandas" else read_files(files, mapping)
        previous_id, previous_stats = _previous_stats(store, previous)
        outcome = _engine_validate(frame, data, previous_stats, ValidationPolicy(), validate_frame)
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
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            docs = build_data_docs(outcome, Path(tmp) / "data_docs") if outcome else None
            prefix = quarantine_batch(store, batch_id, files, result, docs)
        text += f"\nquarantined at {store.uri.rstrip('/')}/{prefix}"
    typer.echo(text, err=code != 0)
    if code:
        raise typer.Exit(code)


def _engine_read(engine: str, files: list[Path], mapping):
    """The batch on the chosen engine (--engine, else TAILGUARD_ENGINE): a frame, or a Ray batch."""
    from tailguard.data import read_files
    from tailguard.engine import EngineError, choose, ray_session

    try:
        if choose(engine or None) == "pandas":
            return read_files(files, mapping)
        from tailguard import ray_engine

        ray_session()
        return ray_engine.load(files, mapping)
    except (EngineError, RuntimeError) as err:  # RayEngineError is a RuntimeError
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def _engine_validate(frame, source: str, previous_stats, policy, validate_frame):
    """validate_frame on a pandas frame, ray_engine.validate on a Ray batch (the same result)."""
    import pandas as pd

    if isinstance(frame, pd.DataFrame):
        return validate_frame(frame, source, previous_stats, policy)
    from tailguard import ray_engine

    try:
        return ray_engine.validate(frame, source, previous_stats, policy)
    except ray_engine.RayEngineError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def _parse_options(items: list[str]) -> dict:
    """KEY=JSON pairs (a bare string when the value is not JSON)."""
    options: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


# --- balance ----------------------------------------------------------------------------------


@app.command("balance")
def balance_cmd(
    data: str = typer.Option(..., "--data", help="Training data: a file, a folder of files or an s3:// URI."),
    strategy: str = typer.Option(
        "random_under",
        "--strategy",
        help="Comma-separated: none, random_under, random_over, popularity_cap, "
        "stratified, popularity_reweight, class_balanced, augment.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write the rebalanced frame here (.parquet or .csv)."
    ),
    ratio: float | None = typer.Option(None, "--ratio", help="random_under: negatives per positive (> 0)."),
    over_ratio: float | None = typer.Option(
        None, "--over-ratio", help="random_over: positives per negative."
    ),
    cap_k: int | None = typer.Option(None, "--cap-k", help="popularity_cap: most rows per item."),
    cap_query_k: int | None = typer.Option(
        None, "--cap-query-k", help="popularity_cap: most rows per query."
    ),
    positive_share: float | None = typer.Option(None, "--positive-share", help="stratified: positive share."),
    reweight_key: str | None = typer.Option(
        None, "--reweight-key", help="popularity_reweight: item or query."
    ),
    alpha: float | None = typer.Option(
        None, "--alpha", help="popularity_reweight: weight ∝ popularity^-alpha."
    ),
    beta: float | None = typer.Option(None, "--beta", help="class_balanced: beta in [0, 1)."),
    aug_alpha: float | None = typer.Option(None, "--aug-alpha", help="augment: EDA change rate."),
    aug_copies: int | None = typer.Option(None, "--aug-copies", help="augment: copies per source row."),
    aug_rows: str | None = typer.Option(
        None,
        "--aug-rows",
        help="augment: tail_query_positives, tail_item_positives, tail_positives, positives.",
    ),
    aug_max_rows: int | None = typer.Option(None, "--aug-max-rows", help="augment: most source rows."),
    option: list[str] = typer.Option(
        [],
        "--option",
        help="Any other BalanceConfig option as KEY=JSON, e.g. bucket_shares='{\"tail\": 0.5}'.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed gives the same output."),
    excel_safe: bool = typer.Option(
        False,
        "--excel-safe",
        help="CSV output for spreadsheets: prefix text cells starting with = + - @ tab or CR with a single "
        "quote so they are not run as formulas. Off by default: the CSV keeps the exact strings.",
    ),
    compact: bool = typer.Option(
        False,
        "--compact",
        help="Write each distinct row once with a `repeats` column instead of the duplicates "
        "(what `tailguard train` and the retrain flow read; random_over at 10M rows: 0.17 s vs 1.57 s).",
    ),
    report_json: Path | None = typer.Option(
        None, "--report-json", help="Write the before/after report here."
    ),
    report_html: Path | None = typer.Option(
        None, "--report-html", help="Write the Evidently class-balance report here."
    ),
    engine: str = typer.Option(
        "", "--engine", help="pandas or ray (random_under/random_over, --compact); default TAILGUARD_ENGINE."
    ),
) -> None:
    """Rebalance training data and print the before/after table (the training split only: never eval data)."""
    from tailguard.balance import BalanceConfig, BalanceConfigError, expand, rebalance, report_table
    from tailguard.contract import ContractError
    from tailguard.data import load_batch

    given = {
        "ratio": ratio, "over_ratio": over_ratio, "cap_k": cap_k, "cap_query_k": cap_query_k,
        "positive_share": positive_share, "reweight_key": reweight_key, "alpha": alpha, "beta": beta,
        "aug_alpha": aug_alpha, "aug_copies": aug_copies, "aug_rows": aug_rows, "aug_max_rows": aug_max_rows,
    }  # fmt: skip
    options: dict = {k: v for k, v in given.items() if v is not None} | _parse_options(option)
    try:
        config = BalanceConfig.from_spec(strategy, seed=seed, **options)
    except BalanceConfigError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    try:
        if engine or os.environ.get("TAILGUARD_ENGINE"):
            train, balanced, report = _engine_balance(engine, data, config, compact)
        else:
            train = load_batch(data)
            balanced, report = rebalance(train, config, compact=compact)
    except (BalanceConfigError, ContractError) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    typer.echo(report_table(report))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix in (".parquet", ".pq"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            from tailguard.contract import output_schema

            # Contract columns get the contract's types (query/item_id strings even when all-digit or empty).
            inferred = {f.name: f.type for f in pa.Schema.from_pandas(balanced, preserve_index=False)}
            schema = output_schema(list(balanced.columns), inferred)
            pq.write_table(pa.Table.from_pandas(balanced, schema=schema, preserve_index=False), out)
        else:
            written = excel_safe_cells(balanced) if excel_safe else balanced
            written.to_csv(out, index=False, lineterminator=CSV_LINE_END)
        counted = f" counting {report['after']['rows']}" if compact else ""
        typer.echo(f"wrote {len(balanced)} rows{counted} to {out}")
    if report_json is not None:
        report_json.parent.mkdir(parents=True, exist_ok=True)
        report_json.write_text(json.dumps(report, indent=2))
        typer.echo(f"wrote report to {report_json}")
    if report_html is not None:
        from tailguard.reports import class_balance_report  # Evidently: imported only when asked (3-9 s)

        typer.echo(f"wrote {class_balance_report(train, expand(balanced, ['label']), report_html)}")


def _engine_balance(engine: str, data: str, config, compact: bool):
    """(train, balanced, report) on the chosen engine; the ray engine writes the compact frame only."""
    from tailguard.balance import rebalance
    from tailguard.data import load_batch
    from tailguard.engine import choose, to_pandas

    if choose(engine or None) == "pandas":
        train = load_batch(data)
        return (train, *rebalance(train, config, compact=compact))
    if not compact:
        typer.echo("error: --engine ray writes the compact frame (rows + repeats); add --compact", err=True)
        raise typer.Exit(2)
    from tailguard import ray_engine
    from tailguard.engine import ray_session

    ray_session()
    batch = ray_engine.load(data)
    balanced, report = ray_engine.rebalance(batch, config)
    return to_pandas(batch), to_pandas(balanced), report


# --- model: train, predict -------------------------------------------------------------------


@app.command("train")
def train_cmd(
    data: str = typer.Option(..., "--data", help="Training data: a file, a folder of files or an s3:// URI."),
    out: Path = typer.Option(..., "--out", help="Folder for the model (safetensors, tokenizer, config)."),
    base: str = typer.Option(
        "tiny", "--base", help="'tiny' (from scratch), 'minilm-l6', a local HF folder or an s3:// URI."
    ),
    balance: str = typer.Option(
        "none", "--balance", help="Balancing strategies before training, comma-separated (see `balance`)."
    ),
    valid: str = typer.Option("", "--valid", help="Validation data; empty: hold out 10% of queries."),
    epochs: int = typer.Option(3, "--epochs", help="Training epochs."),
    batch_size: int = typer.Option(64, "--batch-size", help="Rows per forward pass."),
    lr: float = typer.Option(0.0, "--lr", help="Peak learning rate; 0 picks the base's default."),
    max_steps: int = typer.Option(0, "--max-steps", help="Stop after this many optimizer steps (0: no cap)."),
    threads: int = typer.Option(-1, "--threads", help="torch threads; -1: TAILGUARD_TORCH_THREADS."),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="Checkpoints and TensorBoard logs; a run resumes from here."
    ),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Checkpoint every N optimizer steps."),
    seed: int = typer.Option(0, "--seed", help="Seed for balancing, split, init and data order."),
    option: list[str] = typer.Option(
        [], "--option", help="Any other TrainConfig field as KEY=JSON, e.g. loss=focal sampler=weighted."
    ),
) -> None:
    """Fine-tune a model without Prefect (notebooks, debugging); prints one line per epoch."""
    _offline()
    from tailguard.data import load_batch
    from tailguard.model import ModelError, TrainConfig, train
    from tailguard.settings import get_settings

    fields = {"base": base, "epochs": epochs, "batch_size": batch_size, "max_steps": max_steps, "seed": seed,
              "checkpoint_every": checkpoint_every,
              "threads": get_settings().torch_threads if threads < 0 else threads}  # fmt: skip
    if lr:
        fields["lr"] = lr
    try:
        config = TrainConfig(**{**fields, **_parse_options(option)})
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    try:
        frame = load_batch(data)
        if balance and balance != "none":
            from tailguard.balance import BalanceConfig, rebalance

            frame, _ = rebalance(frame, BalanceConfig.from_spec(balance, seed=seed), compact=True)
        valid_df = load_batch(valid) if valid else None
        result = train(frame, config, out, valid_df=valid_df, checkpoint_dir=checkpoint_dir,
                       on_epoch=lambda row: typer.echo(json.dumps(row)))  # fmt: skip
    except (ModelError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"trained {result.steps} steps on {result.train_rows} rows per epoch "
        f"({result.distinct_rows} distinct) at {result.samples_per_s:.0f} samples/s "
        f"in {result.train_seconds:.1f} s; "
        f"best valid AUC {result.best_valid_auc}; model in {result.model_dir}"
    )


# Cells a spreadsheet evaluates as a formula (OWASP "CSV injection"): =HYPERLINK(...), +cmd|..., @SUM(...).
# RFC 4180 line ends: Python's csv writer quotes a field holding any character of the line terminator,
# so with "\r\n" a bare CR in a title is quoted; with pandas' "\n" it was written raw and read back as a
# line break ('\r=1+1' came back '=1+1').
CSV_LINE_END = "\r\n"
FORMULA_CHARS = ("=", "+", "-", "@", "\t", "\r")


def excel_safe_cells(frame):
    """A copy of `frame` whose text cells starting with = + - @ tab or CR get a leading single quote.

    Spreadsheets show the quote-prefixed text as typed instead of running it; numbers are untouched. The
    output is no longer the exact input strings, so it is opt-in (--excel-safe), never what metrics reads.
    """
    out = frame.copy(deep=False)
    for col in out.columns:
        texts = out[col].astype(object)
        risky = texts.map(lambda v: isinstance(v, str) and v[:1] in FORMULA_CHARS).to_numpy(bool)
        if risky.any():
            out[col] = texts.where(~risky, "'" + texts.where(risky, "").astype(str))
    return out


def _read_chunks(path: Path, chunk_rows: int):
    """Coerced chunks of at most chunk_rows rows from a CSV/Parquet file (the contract's one reader).

    Query, item_id and title text stay the exact strings in the file; an empty query or title is a
    ContractError (the model would score the text 'None').
    """
    from tailguard.contract import iter_frames

    needed = ("query", "item_title")
    yield from iter_frames(path, None, chunk_rows, required=needed, not_null=needed)


@app.command("predict")
def predict_cmd(
    model: str = typer.Option(..., "--model", help="A model folder, or 'production' (fetched and verified)."),
    data: str = typer.Option(..., "--data", help="Rows to score: a file, a folder of files or an s3:// URI."),
    out: Path = typer.Option(..., "--out", help="Output .parquet or .csv: the input plus `score`."),
    batch_size: int = typer.Option(256, "--batch-size", help="Rows per forward pass."),
    chunk_rows: int = typer.Option(100_000, "--chunk-rows", help="Rows read, scored and written at a time."),
    store: str = typer.Option("", "--store", help="Store for --model production."),
    model_name: str = typer.Option("", "--model-name", help="Registry model name for --model production."),
    excel_safe: bool = typer.Option(
        False,
        "--excel-safe",
        help="CSV output for spreadsheets: prefix text cells starting with = + - @ tab or CR with a single "
        "quote so they are not run as formulas. Off by default: the CSV keeps the exact strings.",
    ),
    engine: str = typer.Option(
        "", "--engine", help="pandas or ray (actors; full data contract); default TAILGUARD_ENGINE."
    ),
) -> None:
    """Score a batch with a saved or the production model, streaming in chunks; writes a `score` column."""
    _offline()
    import tempfile

    from tailguard.contract import ContractError
    from tailguard.data import materialize
    from tailguard.model import ModelError, Scorer

    model_dir = Path(model)
    if model == "production":
        registry = _registry(store, model_name)
        model_dir = Path(tempfile.mkdtemp(prefix="tailguard-production-"))
        model_dir = Path(_registry_call(lambda: registry.fetch_model("production", model_dir)))
    if engine or os.environ.get("TAILGUARD_ENGINE"):
        rows = _engine_predict(engine, model_dir, data, out, batch_size, excel_safe)
        if rows is not None:
            typer.echo(f"scored {rows} rows with {model} -> {out} (Ray actors)")
            return
    try:
        scorer = Scorer(model_dir, batch_size=batch_size)
        files = materialize(data)
    except (ModelError, FileNotFoundError, ContractError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    try:
        rows = _score_files(scorer, files, out, chunk_rows, excel_safe)
    except ContractError as err:
        out.unlink(missing_ok=True)  # a refused input leaves no half-written output behind
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except typer.Exit:
        out.unlink(missing_ok=True)  # a model error or a split hybrid query: no half-written output either
        raise
    typer.echo(
        f"scored {rows} rows with {model} -> {out} "
        f"({scorer.pairs_per_s:,.0f} pairs/s on {scorer.device.type}, tokenizing included)"
    )


def _score_files(scorer, files: list[Path], out: Path, chunk_rows: int, excel_safe: bool = False) -> int:
    """Score every file chunk by chunk into `out`; Parquet output has one schema fixed from the contract."""
    from tailguard.contract import ContractError, output_schema, source_types
    from tailguard.model import ModelError

    rows, writer = 0, None
    # A hybrid's BM25 feature reads a query's rows as one candidate set (tailguard.hybrid): chunks that
    # split a query would make its scores depend on the chunk size, so a hybrid scores whole files and a
    # query may not continue in a later file.
    hybrid = getattr(scorer, "hybrid", None) is not None
    chunk_rows = sys.maxsize if hybrid else chunk_rows
    seen_queries: set[str] = set()
    try:
        for path in files:
            schema = None
            for chunk in _read_chunks(Path(path), chunk_rows):
                if hybrid:
                    again = seen_queries.intersection(chunk["query"])
                    if again:
                        typer.echo(
                            f"error: {path}: a hybrid model scores each query's rows together, but queries "
                            f"{sorted(again)[:3]} continue from an earlier file; put each query in one file",
                            err=True,
                        )
                        raise typer.Exit(2)
                    seen_queries.update(chunk["query"])
                try:
                    chunk = chunk.assign(score=scorer(chunk))
                except ModelError as err:
                    typer.echo(f"error: {path}: {err}", err=True)
                    raise typer.Exit(2) from None
                if out.suffix in (".parquet", ".pq"):
                    schema = schema or output_schema(list(chunk.columns), source_types(path))
                    if writer is not None and not schema.equals(writer.schema):
                        raise ContractError(
                            path, None, "same_columns_in_every_file",
                            f"columns {schema.names} differ from the first file's {writer.schema.names}",
                            hint="score files with the same columns together, or one at a time",
                        )  # fmt: skip
                writer = _write_scored(chunk, out, schema, writer, rows == 0, excel_safe)
                rows += len(chunk)
    finally:
        if writer is not None:
            writer.close()
    return rows


def _write_scored(frame, out: Path, schema, writer, first: bool, excel_safe: bool):
    """Append one scored frame to out: Parquet with the contract's fixed schema (returns the open
    writer), or exact CSV (optionally Excel-safe cells). Shared by the pandas and Ray predict paths."""
    if out.suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = writer or pq.ParquetWriter(out, schema)
        writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
        return writer
    written = excel_safe_cells(frame) if excel_safe else frame
    written.to_csv(out, mode="a", header=first, index=False, lineterminator=CSV_LINE_END)
    return writer


def _engine_predict(
    engine: str, model_dir: Path, data: str, out: Path, batch_size: int, excel_safe: bool
) -> int | None:
    """Score on Ray actors (ray_engine.score) and write `out` block by block; None when the engine is pandas.

    The batch is read under the full data contract; scores are float32 as on pandas. A refused batch, a
    model that does not load or a cluster failure exits 2 and leaves no output file.
    """
    from tailguard.contract import ContractError, output_schema, source_types
    from tailguard.data import materialize
    from tailguard.engine import EngineError, choose, ray_session
    from tailguard.model import ModelError

    try:
        if choose(engine or None) == "pandas":
            return None
        from tailguard import ray_engine

        ray_session()
        files = materialize(data)
        scored = ray_engine.score(ray_engine.load(files), {"score": model_dir}, batch_size=batch_size)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        writer, rows, schema = None, 0, None
        try:
            for ref in scored.block_refs():  # one block on the driver at a time, in batch order
                frame = ray_engine._get(ref).drop(columns=["row_id", "augmented"])
                frame["score"] = frame["score"].astype("float32")
                if schema is None and out.suffix in (".parquet", ".pq"):  # fixed once, from the contract
                    schema = output_schema(list(frame.columns), source_types(files[0]))
                writer = _write_scored(frame, out, schema, writer, rows == 0, excel_safe)
                rows += len(frame)
        finally:
            if writer is not None:
                writer.close()
        return rows
    except (EngineError, ContractError, ModelError, FileNotFoundError, RuntimeError) as err:
        out.unlink(missing_ok=True)
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


# --- evaluation: metrics ----------------------------------------------------------------------

PREDICTION_COLUMNS = ("query", "item_id", "label", "score")


def _read_predictions(path: Path, required: tuple[str, ...]):
    """One CSV/Parquet file read by the contract's reader; bad input exits 2 naming file, column, rule, rows.

    query and item_id keep the exact strings in the file ('NA', '0000741'); label must be 0/1; score
    and score_production must be finite numbers in every row.
    """
    from tailguard.contract import ContractError, read_frame

    text = tuple(c for c in required if c in ("query", "item_id"))
    try:
        return read_frame(path, None, required, numeric=("score", "score_production"), not_null=text)
    except ContractError as exc:
        typer.echo(f"[error] {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("metrics")
def metrics_cmd(
    predictions: Path = typer.Option(
        None,
        "--predictions",
        help="CSV/Parquet: query, item_id, label, score [, relevance, category, score_production].",
    ),
    train: Path = typer.Option(None, "--train", help="Training rows (query, item_id) for the buckets."),
    version: str = typer.Option(
        "",
        "--version",
        help="Recompute this stored version's metrics.json from its eval rows and compare (exit 1 if it "
        "differs); --store/--model name the registry.",
    ),
    store: str = typer.Option("", "--store", help="With --version: store URI (default TAILGUARD_STORE)."),
    model: str = typer.Option("", "--model", help="With --version: model name."),
    k: int = typer.Option(10, "--k", help="Top-k cut-off for nDCG@k, recall@k and popularity bias."),
    out: Path = typer.Option(Path("metrics.json"), "--out", help="Where to write metrics.json."),
    min_positives: int = typer.Option(30, "--min-positives", help="Smaller slices are too small."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Paired bootstrap resamples over queries."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    threshold: float = typer.Option(0.5, "--threshold", help="Decision threshold for F1/recall/precision."),
    policy: Path | None = typer.Option(None, "--policy", help="Also apply this gate policy YAML."),
    engine: str = typer.Option(
        "",
        "--engine",
        help="pandas or ray (both files meet the full data contract); default TAILGUARD_ENGINE.",
    ),
) -> None:
    """Evaluate any system's predictions per popularity slice (metrics.json schema: docs/METRICS.md)."""
    from tailguard.metrics import EvalConfig, evaluate

    if version:
        _recheck_version(version, store, model, out)
        return
    if predictions is None or train is None:
        typer.echo("[error] give --predictions and --train, or --version", err=True)
        raise typer.Exit(2)
    config = EvalConfig(
        k=k, min_positives=min_positives, n_bootstrap=bootstrap, seed=seed, threshold=threshold
    )
    try:
        result = _engine_metrics(engine, predictions, train, config)
        if result is None:  # the pandas engine
            preds = _read_predictions(predictions, PREDICTION_COLUMNS)
            train_df = _read_predictions(train, ("query", "item_id"))
            scores = {"candidate": preds["score"].to_numpy(float)}
            if "score_production" in preds.columns:
                scores["production"] = preds["score_production"].to_numpy(float)
            result = evaluate(preds, train_df, scores, config)
    except ValueError as exc:
        typer.echo(f"[error] {predictions}: {exc}", err=True)
        raise typer.Exit(2) from None
    out.write_text(json.dumps(result, indent=1, allow_nan=False))
    lines = [f"wrote {out}: {result['data']['rows']} rows, {result['data']['queries']} queries"]
    for name, info in result["slices"].items():
        values = []
        for model in result["models"]:
            v = result["metrics"][model][name]["roc_auc"]["value"]
            values.append(f"{model} {'n/a' if v is None else f'{v:.3f}'}")
        cmp = result.get("comparison", {}).get("slices", {}).get(name, {}).get("roc_auc", {})
        if cmp.get("ci_low") is not None:
            values.append(f"diff {cmp['value']:+.3f} [{cmp['ci_low']:+.3f}, {cmp['ci_high']:+.3f}]")
        note = " (too small)" if info["too_small"] else ""
        size = f"rows {info['rows']:>8}  pos {info['positives']:>7}"
        lines.append(f"  {name:<28} {size}  roc_auc: {', '.join(values)}{note}")
    typer.echo("\n".join(lines))
    if policy is not None:
        from tailguard.gate import decide_evaluation, load_policy

        decision = decide_evaluation(result, load_policy(policy))
        typer.echo(decision.summary())


def _recheck_version(version: str, store: str, model: str, out: Path) -> None:
    """Recompute a version's metrics.json from its stored eval rows (pipeline.recheck_metrics), write it to
    out and compare byte for byte with the stored one: exit 0 identical, 1 different, 2 cannot check."""
    import tempfile

    from tailguard.pipeline import recheck_metrics
    from tailguard.registry import RegistryError
    from tailguard.store import StoreError

    registry = _registry(store, model)
    try:
        with tempfile.TemporaryDirectory(prefix="tailguard-recheck-") as scratch:
            recomputed, stored = recheck_metrics(registry, version, Path(scratch))
    except (RegistryError, StoreError, ValueError) as exc:
        typer.echo(f"[error] version {version}: {exc}", err=True)
        raise typer.Exit(2) from None
    out.write_bytes(recomputed)
    if recomputed == stored:
        typer.echo(f"wrote {out}: identical to version {version}'s metrics.json ({len(stored)} bytes)")
        return
    at = next((i for i, (a, b) in enumerate(zip(recomputed, stored, strict=False)) if a != b),
              min(len(recomputed), len(stored)))  # fmt: skip
    typer.echo(f"[differs] {out} vs version {version}'s metrics.json: first difference at byte {at}",
               err=True)  # fmt: skip
    raise typer.Exit(1)


def _engine_metrics(engine: str, predictions: Path, train: Path, config) -> dict | None:
    """metrics.json on the Ray engine (ray_engine.evaluate), or None when the chosen engine is pandas.

    On Ray both files are read under the full data contract (query, item_id, item_title, label); a
    ContractError or a cluster failure exits 2 with one message, a ValueError goes to the caller.
    """
    from tailguard.contract import ContractError
    from tailguard.engine import EngineError, choose, ray_session

    try:
        if choose(engine or None) == "pandas":
            return None
        from tailguard import ray_engine

        ray_session()
        batch = ray_engine.load(predictions)
        columns = {"candidate": "score"}
        if "score_production" in batch.columns:
            columns["production"] = "score_production"
        return ray_engine.evaluate(batch, ray_engine.load(train), columns, config)
    except (EngineError, ContractError, RuntimeError) as err:  # RayEngineError is a RuntimeError
        typer.echo(f"[error] {err}", err=True)
        raise typer.Exit(2) from None


# --- registry: models, promote, rollback, approve ------------------------------------------------


def _registry(store: str, model: str):
    """The registry named by --store/--model, or by TAILGUARD_STORE/TAILGUARD_MODEL_NAME; with nothing
    configured and no <home>/store, the demo's store (.tailguard/demo/store), saying so on stderr."""
    from tailguard.registry import Registry
    from tailguard.settings import get_settings
    from tailguard.store import open_store

    settings = get_settings()
    uri, note = (store, "") if store else settings.existing_store()
    if note:
        typer.echo(note, err=True)
    return Registry(open_store(uri), model or settings.model_name)


def _promotion_lock(model_name: str):
    """The flow's per-model Prefect lock (promote-<model>) when a Prefect server is configured
    (PREFECT_API_URL); a no-op otherwise. The lock lives in tasks/, so the library never imports prefect."""
    import contextlib

    if not os.environ.get("PREFECT_API_URL"):
        return contextlib.nullcontext()
    from tailguard_tasks.locks import promotion_lock

    return promotion_lock(model_name)


def _locked_registry_call(registry, fn):
    """_registry_call under the per-model promotion lock; a lock that is not granted exits 1, clearly."""
    try:
        with _promotion_lock(registry.model_name):
            return _registry_call(fn)
    except TimeoutError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


def _registry_call(fn):
    """Run a registry operation; print store/registry errors as one clear line and exit 1."""
    from tailguard.registry import RegistryError
    from tailguard.store import StoreError

    try:
        return fn()
    except (RegistryError, StoreError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


def _whoami() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


_STORE_OPT = typer.Option("", "--store", help="Store URI (default: TAILGUARD_STORE or <home>/store).")
_MODEL_OPT = typer.Option("", "--model", help="Model name (default: TAILGUARD_MODEL_NAME or 'relevance').")


@app.command("models")
def models_cmd(
    count: int | None = typer.Argument(
        None, metavar="[N]", min=1, help="With --trend: how many versions (default 8)."
    ),
    show_all: bool = typer.Option(False, "--all", help="Also list incomplete (interrupted) versions."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    compare: tuple[str, str] | None = typer.Option(
        None, "--compare", metavar="V1 V2",
        help="Two versions side by side ('production' names the current one): paired on the same eval rows "
        "when one was scored against the other, else each on its own eval split, labelled not comparable.",
    ),  # fmt: skip
    trend: bool = typer.Option(
        False, "--trend", help="Headline metrics of the last N versions, oldest first."
    ),
    store: str = _STORE_OPT,
    model: str = _MODEL_OPT,
) -> None:
    """List the model's versions; production is marked with '*'. Incomplete uploads are ignored."""
    registry = _registry(store, model)
    if compare or trend or count is not None:
        _history_cmd(registry, compare, trend, count, as_json)
        return
    rows = _registry_call(lambda: registry.list_versions(include_incomplete=True))
    shown = [r for r in rows if r["complete"] or show_all]
    if not rows and not as_json:
        typer.echo(
            f"no versions of {registry.model_name!r} in store {registry.store.uri} (choose the store with "
            "--store, TAILGUARD_STORE or TAILGUARD_HOME; `tailguard demo` writes .tailguard/demo/store)",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    from tailguard.summary import HEADLINE

    def value(row: dict, key: str) -> str:
        number = (row.get("headline") or {}).get(key, {}).get("candidate")
        return "-" if number is None else f"{number:.3f}"

    gate = {True: "pass", False: "FAIL", None: "-"}
    heads = ["AUC", "AUC/q", "tail AUC/q", "cold AUC"]  # the candidate's value on its eval split
    typer.echo(
        f"{'':2}{'version':24} {'created (UTC)':16} {'status':10} {'gate':4} {'balance':14} {'rows':>8} "
        + " ".join(f"{h:>10}" for h in heads)
    )
    for row in shown:
        mark = "*" if row["production"] else ""
        status = "production" if row["production"] else ("complete" if row["complete"] else "INCOMPLETE")
        created = (row.get("created_at") or "-")[:16].replace("T", " ")
        n_rows = "-" if row.get("rows") is None else str(row["rows"])
        typer.echo(
            f"{mark:2}{row['version']:24} {created:16} {status:10} {gate[row.get('gate')]:4} "
            f"{(row.get('balance') or '-')[:14]:14} {n_rows:>8} "
            + " ".join(f"{value(row, f'{slice_}/{metric}'):>10}" for slice_, metric in HEADLINE)
        )
    hidden = len(rows) - len(shown)
    if hidden:
        typer.echo(f"({hidden} incomplete version(s) without manifest.json ignored; --all lists them)")


def _history_cmd(registry, compare: tuple[str, str] | None, trend: bool, count: int | None, as_json: bool):
    """`models --compare V1 V2` / `models --trend [N]` (tailguard.history)."""
    from tailguard import history

    if bool(compare) == trend or (count is not None and not trend):
        typer.echo("error: use either --compare V1 V2 or --trend [N] (N only with --trend)", err=True)
        raise typer.Exit(2)
    if compare:
        found = _registry_call(lambda: history.compare_versions(registry, *compare))
        typer.echo(found.model_dump_json(indent=2) if as_json else history.comparison_text(found))
        return
    rows = _registry_call(lambda: history.trend(registry, last=count or 8))
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
    else:
        typer.echo(history.trend_text(rows))


def _recorded_decision(registry, version: str) -> dict:
    """The gate decision stored with a version (decision.json, with its policy record), else the manifest's
    summary of it."""
    from tailguard.store import KeyNotFound

    try:
        return json.loads(registry.store.get_bytes(f"{registry.version_prefix(version)}/decision.json"))
    except KeyNotFound:
        return registry.manifest(version).get("decision") or {}


@app.command("promote")
def promote_cmd(
    version: str = typer.Argument(..., help="Version id to put into production."),
    by: str = typer.Option("", "--by", help="Who approves (default: the current user)."),
    comment: str = typer.Option("", "--comment", help="Why; kept in the audit log."),
    override: bool = typer.Option(
        False, "--override", help="Promote although the version failed the gate (recorded as an override)."
    ),
    store: str = _STORE_OPT,
    model: str = _MODEL_OPT,
) -> None:
    """Promote a complete version to production: every file is verified against the manifest first.

    A version that failed the gate, was judged under a non-default policy, or was rejected or refused as
    stale needs --override and --comment (recorded in the audit with source cli)."""
    registry = _registry(store, model)
    decision = _registry_call(lambda: _recorded_decision(registry, version))
    pointer = _locked_registry_call(registry,
        lambda: registry.promote(version, approved_by=by or _whoami(), decision=decision, override=override,
                                 comment=comment, source="cli")
    )  # fmt: skip
    typer.echo(f"production of {registry.model_name} is now {pointer['version']} (was {pointer['previous']})")


@app.command("rollback")
def rollback_cmd(
    to: str = typer.Option("", "--to", help="Version to restore (default: the previous production version)."),
    by: str = typer.Option("", "--by", help="Who rolls back (default: the current user)."),
    expect: str = typer.Option(
        "", "--expect", help="The production version being undone (as `tailguard models` shows it); if "
        "production is no longer it, nothing changes, so a rerun never rolls back twice. Required unless "
        "--request-id is given."
    ),
    request_id: str = typer.Option(
        "", "--request-id", help="An id of your choosing for this rollback: a rerun with the same id returns "
        "the landed rollback instead of rolling back again."
    ),
    store: str = _STORE_OPT,
    model: str = _MODEL_OPT,
) -> None:
    """Point production back at an earlier complete version (files verified, conditional flip, audit).

    Needs --expect VERSION (the production version being undone) or --request-id ID: without either, a
    command run twice would move production back two versions."""
    from tailguard.registry import RegistryError, require_name

    if not expect.strip() and not request_id.strip():
        typer.echo(
            "error: rollback needs --expect VERSION (the production version you are undoing, see "
            "`tailguard models`) or --request-id ID, so that running it twice cannot roll back twice",
            err=True,
        )
        raise typer.Exit(2)
    try:
        who = require_name(by or _whoami(), "rollback", "--by")
    except RegistryError as err:
        raise typer.BadParameter(str(err), param_hint="--by") from None
    registry = _registry(store, model)
    pointer = _locked_registry_call(registry, lambda: registry.rollback(
        to=to or None, by=who, expected_current=expect.strip() or None, request_id=request_id.strip() or None,
        source="cli"))  # fmt: skip
    typer.echo(f"production of {registry.model_name} is now {pointer['version']} (was {pointer['previous']})")


@app.command("approve")
def approve_cmd(
    flow_run_id: str = typer.Argument(..., help="The retrain flow run waiting for review (Paused)."),
    reviewer: str = typer.Option(..., "--reviewer", help="Your name; recorded in the audit log."),
    reject: bool = typer.Option(False, "--reject", help="Reject the candidate instead of approving it."),
    comment: str = typer.Option("", "--comment", help="Why; kept in the audit log."),
    override: bool = typer.Option(
        False, "--override", help="Approve although a gate check failed (recorded as an override)."
    ),
) -> None:
    """Answer a paused retrain run's review from the terminal (the same form as the Prefect UI)."""
    if reject and override:
        raise typer.BadParameter("--override only applies to an approval")
    from tailguard.registry import RegistryError, require_comment, require_name

    try:
        reviewer = require_name(reviewer, "approve", "--reviewer")  # the visible name is what is recorded
    except RegistryError as err:
        raise typer.BadParameter(f"--reviewer must name who decides ({err})") from None
    if override:
        try:
            comment = require_comment(comment, "--override")
        except RegistryError as err:
            raise typer.BadParameter(f"--override needs --comment saying why ({err})") from None
    from tailguard.runtime import configure_embedded

    configure_embedded()
    from tailguard_tasks.registry import resume_review

    try:
        resume_review(flow_run_id, approve=not reject, reviewer=reviewer, comment=comment, override=override)
    except ValueError as err:
        typer.echo(f"error: {flow_run_id!r} is not a flow run id ({err})", err=True)
        raise typer.Exit(2) from None
    except Exception as err:  # noqa: BLE001 - Prefect raises several types (NotPaused, ObjectNotFound, HTTP)
        typer.echo(f"error: could not resume flow run {flow_run_id}: {type(err).__name__}: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{'rejected' if reject else 'approved'} flow run {flow_run_id} as {reviewer}")


@app.command("reviews")
def reviews_cmd(
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many runs (oldest first)."),
) -> None:
    """List retrain runs paused for review: run id, name, since when, candidate version, verdict.

    Reads the Prefect API (PREFECT_API_URL); the version and verdict are the tags the run set when it
    paused (flows/retrain._ask_reviewer). Answer one with `tailguard approve RUN_ID --reviewer NAME`.
    """
    from tailguard_tasks.operations import paused_reviews

    try:
        runs = paused_reviews(limit)
    except Exception as err:  # noqa: BLE001 - httpx/Prefect raise several types when the API is away
        typer.echo(f"error: cannot read flow runs from the Prefect API: {err}", err=True)
        raise typer.Exit(1) from None
    if not runs:
        typer.echo("no retrain run is waiting for review")
    for r in runs:
        since = f"paused since {r.paused_since}"
        typer.echo(f"{r.run_id}  {r.name}  {since}  candidate {r.candidate}  verdict {r.verdict}")


@app.command("automations")
def automations_cmd(
    block_id: str = typer.Option(..., "--block-id", help="Notification block document id (Slack, email...)."),
    folder: Path = typer.Option(Path("infra/automations"), "--folder", help="The automation JSON files."),
) -> None:
    """Create (or replace, by name) the Prefect automations in infra/automations/*.json.

    Each file's `${TAILGUARD_NOTIFY_BLOCK_ID}` becomes block_id. Same-named automations are deleted first,
    so `make deploy` can run again without duplicating them.
    """
    from uuid import UUID

    from tailguard_tasks.operations import AutomationFileError, install_automations

    try:
        UUID(block_id)
    except ValueError:
        typer.echo(f"error: --block-id {block_id!r} is not a block document id (a UUID)", err=True)
        raise typer.Exit(2) from None
    try:
        created = install_automations(folder, block_id)
    except AutomationFileError as err:
        raise typer.BadParameter(str(err)) from None
    for name, automation_id in created:
        typer.echo(f"created automation {name!r}: {automation_id}")


# --- flows: retrain ---------------------------------------------------------------------------


def _run_retrain(**kwargs) -> dict | None:
    """Run the retrain flow in this process; print why when the batch is refused."""
    from tailguard.runtime import configure_embedded

    configure_embedded()
    from tailguard_flows.retrain import BatchRejected, retrain

    from tailguard.contract import ContractError

    try:
        return retrain(**kwargs)
    except (BatchRejected, ContractError) as exc:  # refused batch, or an input that cannot be read at all
        typer.echo(str(exc), err=True)
        return None


@app.command()
def retrain(
    data: str = typer.Option(..., "--data", help="Batch file, folder of files, or s3:// URI."),
    columns: str = typer.Option(
        "", "--columns", help="Column mapping, e.g. query=search_term,item_id=product_uid."
    ),
    balance: str = typer.Option("random_under", "--balance", help="Balancing strategies, comma-separated."),
    balance_option: list[str] = typer.Option(
        [],
        "--balance-option",
        help="A balancing option as KEY=JSON (see `tailguard balance --help`), e.g. reweight_key=query.",
    ),
    base_model: str = typer.Option("tiny", "--base-model", help="tiny, minilm-l6, a folder or an s3:// URI."),
    epochs: int = typer.Option(3, "--epochs", min=1, help="Training epochs."),
    train_option: list[str] = typer.Option(
        [], "--train-option", help="A TrainConfig field as KEY=JSON, e.g. loss=weighted_bce."
    ),
    max_steps: int = typer.Option(0, "--max-steps", min=0, help="Cap on optimizer steps (0: none)."),
    approval: str = typer.Option(
        "auto", "--approval", help="auto or manual (manual needs a Prefect server)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for split, balancing and training."),
    n_bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples per difference."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
    recipe: str = typer.Option(
        "", "--recipe", help="A recipe of policies/recipes.yaml (baseline, graded, hybrid, ensemble3, ...): "
        "fills the options left at their defaults.",
    ),
) -> None:
    """Run one retrain: validate, rebalance, fine-tune, evaluate vs production, gate, promote or reject."""
    _offline()
    if "://" not in data and not Path(data).exists():  # fail before starting Prefect (~10 s) for a typo
        typer.echo(f"{data}: no such file or folder (expected CSV/Parquet, a folder or s3://...)", err=True)
        raise typer.Exit(2)
    from pydantic import ValidationError

    from tailguard.pipeline import RetrainParams

    options = {
        "balance_options": _parse_options(balance_option),
        "train_options": _parse_options(train_option),
    }
    try:  # bad options fail here, before Prefect starts (~10 s) and before the batch is read
        RetrainParams(
            data=data, balance=balance, base_model=base_model, seed=seed, recipe=recipe, epochs=epochs,
            max_steps=max_steps, **options,
        )  # fmt: skip
    except ValidationError as err:
        from tailguard.pipeline import params_error

        typer.echo(f"error: {params_error(err)}", err=True)
        raise typer.Exit(2) from None
    outcome = _run_retrain(
        data=data,
        columns=columns,
        balance=balance,
        base_model=base_model,
        **options,
        epochs=epochs,
        max_steps=max_steps,
        approval=approval,
        seed=seed,
        n_bootstrap=n_bootstrap,
        recipe=recipe,
    )
    if outcome is None:
        raise typer.Exit(2)
    from tailguard.summary import outcome_text

    typer.echo(json.dumps(outcome, indent=2, default=str) if as_json else outcome_text(outcome))


@app.command()
def demo(
    home: Path = typer.Option(
        Path(".tailguard/demo"), "--home", help="State folder for the demo (wiped first)."
    ),
    rows: int = typer.Option(5000, "--rows", min=200, help="Rows per demo batch."),
    epochs: int = typer.Option(6, "--epochs", min=1, help="Training epochs per run."),
) -> None:
    """Generate two demo batches and retrain twice: first promotion, then candidate vs production."""
    import shutil
    import time

    _offline()
    home = home.resolve()
    shutil.rmtree(home, ignore_errors=True)
    os.environ["TAILGUARD_HOME"] = str(home)
    os.environ.pop("TAILGUARD_STORE", None)
    from tailguard.demo import DemoConfig, generate_batches

    t0 = time.perf_counter()
    paths = generate_batches(DemoConfig(rows=rows, batches=2, seed=7), home / "data", "csv")
    typer.echo(f"demo data: {', '.join(str(p) for p in paths)}")
    from tailguard.summary import outcome_text

    for i, path in enumerate(paths, 1):
        typer.echo(f"\n=== run {i}: retrain on {path.name} ===")
        outcome = _run_retrain(data=str(path), epochs=epochs)
        if outcome is None:
            raise typer.Exit(2)
        typer.echo(outcome_text(outcome))
    typer.echo(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; store: {home / 'store'}")
    typer.echo(f"list versions with: {sys.argv[0]} models  (it finds {home}/store when no store is set)")


# --- reports and batches: reports serve, upload-batch -------------------------------------------

reports_app = _Cli(no_args_is_help=True, help="Read the review pages of stored model versions in a browser.")
app.add_typer(reports_app, name="reports")


@reports_app.command("serve")
def reports_serve(
    store: str = _STORE_OPT,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind; anything but loopback exposes the reports to a network."
    ),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
) -> None:
    """Serve every version's report pages read-only over HTTP (index at /); Ctrl-C stops it.

    Links in Prefect artifacts point here when TAILGUARD_REPORTS_URL is set to the printed address.
    """
    from tailguard.settings import get_settings
    from tailguard.store import open_store
    from tailguard.viewer import make_server, viewer_log_requests

    uri, note = (store, "") if store else get_settings().existing_store()
    if note:
        typer.echo(note, err=True)
    try:
        server = make_server(open_store(uri), host, port)
    except OSError as err:
        typer.echo(f"error: cannot listen on {host}:{port}: {err.strerror or err}", err=True)
        raise typer.Exit(1) from None
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    typer.echo(f"serving the reports of {uri or 'the default store'} at http://{shown}:{bound_port}/")
    typer.echo(f"  for links in the Prefect UI: export TAILGUARD_REPORTS_URL=http://{shown}:{bound_port}")
    sys.stdout.flush()
    viewer_log_requests.set()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command("upload-batch")
def upload_batch_cmd(
    path: Path = typer.Argument(..., help="A batch file (csv, csv.gz, parquet) or a folder of them."),
    dest: str = typer.Argument(..., help="Where it goes: s3://bucket/batches/<name>/ (a prefix)."),
) -> None:
    """Put a local batch into the bucket (boto3, the usual AWS_* variables; no aws-cli needed).

    Prints the URI to pass to `tailguard retrain --data` or the retrain deployment's `data` parameter.
    """
    from tailguard.store import StoreError, open_store

    def refuse(message: str) -> None:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)

    if not dest.startswith("s3://") or not dest[len("s3://") :].strip("/"):
        refuse(f"DEST {dest!r} is not an s3://bucket/prefix URI")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    elif path.is_file():
        files = [path]
    else:
        refuse(f"PATH {path}: no such file or folder")
    if not files:
        refuse(f"PATH {path}: the folder holds no files")
    base = path if path.is_dir() else path.parent
    try:
        target = open_store(dest)
        for f in files:
            target.put_file(f.relative_to(base).as_posix(), f)
    except StoreError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    uri = target.uri.rstrip("/")
    typer.echo(f"uploaded {len(files)} file(s) ({sum(f.stat().st_size for f in files)} bytes) to {uri}/")
    typer.echo(f"retrain on it: tailguard retrain --data {uri}/{files[0].name if path.is_file() else ''}")


def main() -> None:
    """Entry point for `python -m tailguard.cli`."""
    app()


if __name__ == "__main__":
    main()
