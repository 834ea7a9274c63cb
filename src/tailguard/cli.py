"""The `tailguard` command line (typer). Each command is a thin shell over library calls.

This is the library's part: data, balancing, training, scoring, metrics, the registry and the report
server, none of which needs Prefect. The commands that run or answer flows (retrain, demo, approve,
reviews, automations) are added to this app by tailguard_flows.cli, the console entry point, which also
gives promote/rollback the flows' Prefect promotion lock. Options of balance and train come from the
pydantic configs (tailguard.options): BalanceConfig and TrainConfig hold their defaults and help text.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import typer

from tailguard import commands, options
from tailguard.commands import CommandError


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


app = _Cli(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])

# The promotion lock promote/rollback hold: installed by tailguard_flows.cli (the flows' Prefect lock,
# per model) so the library never imports Prefect. None: no lock is needed (no PREFECT_API_URL).
PromotionLock = Callable[[str], AbstractContextManager]
_promotion_lock: PromotionLock | None = None


def use_promotion_lock(factory: PromotionLock) -> None:
    """Make promote/rollback hold factory(model_name) while they flip production (tailguard_flows.cli)."""
    global _promotion_lock
    _promotion_lock = factory


def promotion_lock(model_name: str) -> AbstractContextManager | None:
    """The installed lock when a Prefect server is configured (PREFECT_API_URL), else None (no lock).

    Raises CommandError (exit 1) when a server is configured but no lock is installed: this process
    (`python -m tailguard.cli`) could flip production while a flow run promotes."""
    if not os.environ.get("PREFECT_API_URL"):
        return None
    if _promotion_lock is None:
        raise CommandError(
            "error: PREFECT_API_URL is set, so promote/rollback must hold the flows' promotion lock: run "
            "them with the `tailguard` command (tailguard_flows.cli), not python -m tailguard.cli",
            code=1,
        )
    return _promotion_lock(model_name)


def clear_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose expected errors print one line and exit: CommandError with its own message and
    code (a usage error for an option's value), registry and store errors with exit 1."""
    from tailguard.registry import RegistryError
    from tailguard.store import StoreError

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CommandError as err:
            if err.usage:
                raise typer.BadParameter(err.message) from None
            typer.echo(err.message, err=True)
            raise typer.Exit(err.code) from None
        except options.OptionsError as err:
            raise typer.BadParameter(str(err)) from None
        except (RegistryError, StoreError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None

    return run


def with_options(params: list[inspect.Parameter]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command taking **fields the generated options `params` after its own (typer reads the
    `__signature__`), so each field of a config model is an option without being written out here."""

    def attach(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = [
            p
            for p in inspect.signature(fn, eval_str=True).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        fn.__signature__ = inspect.Signature([*own, *params])  # type: ignore[attr-defined]
        return fn

    return attach


def offline() -> None:
    """Keep the Hugging Face hub off before transformers is imported (a hub name stalls ~46 s offline),
    unless settings say it is on (TAILGUARD_OFFLINE=0)."""
    from tailguard.settings import get_settings

    if get_settings().offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def echo_err(text: str) -> None:
    """Print to stderr (notes that are not the command's output)."""
    typer.echo(text, err=True)


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    """The generated options given on the command line (None: not given, the config's default applies)."""
    return {k: v for k, v in fields.items() if v is not None}


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


@app.command()
@clear_errors
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
    text, code = commands.validate_batch(data, previous, columns, delimiter, quarantine, json_out, engine)
    typer.echo(text, err=code != 0)
    if code:
        raise typer.Exit(code)


# --- balance ----------------------------------------------------------------------------------

_EXCEL_SAFE_HELP = (
    "CSV output for spreadsheets: prefix text cells starting with = + - @ tab or CR with a single quote so "
    "they are not run as formulas. Off by default: the CSV keeps the exact strings."
)


def _balance_options() -> list[inspect.Parameter]:
    """Every scalar BalanceConfig field but `strategies` (that is --strategy) as an option."""
    from tailguard.balance import BalanceConfig

    return options.model_options(BalanceConfig, skip=("strategies",), unset_default=True, scalars_only=True)


@app.command("balance")
@clear_errors
@with_options(_balance_options())
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
    option: list[str] = typer.Option(
        [],
        "--option",
        help="Any other BalanceConfig option as KEY=JSON, e.g. bucket_shares='{\"tail\": 0.5}'.",
    ),
    excel_safe: bool = typer.Option(False, "--excel-safe", help=_EXCEL_SAFE_HELP),
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
    **fields: Any,
) -> None:
    """Rebalance training data and print the before/after table (the training split only: never eval data)."""
    given = _given(fields) | options.parse_pairs(option)
    config = commands.balance_config(strategy, given.pop("seed", 0), given)
    commands.balance_file(data, config, typer.echo, out=out, excel_safe=excel_safe, compact=compact,
                          report_json=report_json, report_html=report_html, engine=engine)  # fmt: skip


# --- model: train, predict -------------------------------------------------------------------


def _train_options() -> list[inspect.Parameter]:
    """Every scalar TrainConfig field as an option (lists and dicts go through --option KEY=JSON)."""
    from tailguard.model import TrainConfig

    return options.model_options(TrainConfig, unset_default=True, scalars_only=True)


@app.command("train")
@clear_errors
@with_options(_train_options())
def train_cmd(
    data: str = typer.Option(..., "--data", help="Training data: a file, a folder of files or an s3:// URI."),
    out: Path = typer.Option(..., "--out", help="Folder for the model (safetensors, tokenizer, config)."),
    balance: str = typer.Option(
        "none", "--balance", help="Balancing strategies before training, comma-separated (see `balance`)."
    ),
    valid: str = typer.Option("", "--valid", help="Validation data; empty: hold out 10% of queries."),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="Checkpoints and TensorBoard logs; a run resumes from here."
    ),
    option: list[str] = typer.Option(
        [], "--option", help="Any other TrainConfig field as KEY=JSON, e.g. loss=focal sampler=weighted."
    ),
    **fields: Any,
) -> None:
    """Fine-tune a model without Prefect (notebooks, debugging); prints one line per epoch.

    --threads -1 or unset: TAILGUARD_TORCH_THREADS; --lr 0 or unset: the base's default."""
    offline()
    config = commands.train_config(fields, options.parse_pairs(option))
    summary = commands.train_file(data, out, config, typer.echo, balance=balance, valid=valid,
                                  checkpoint_dir=checkpoint_dir)  # fmt: skip
    typer.echo(summary)


@app.command("predict")
@clear_errors
def predict_cmd(
    model: str = typer.Option(..., "--model", help="A model folder, or 'production' (fetched and verified)."),
    data: str = typer.Option(..., "--data", help="Rows to score: a file, a folder of files or an s3:// URI."),
    out: Path = typer.Option(..., "--out", help="Output .parquet or .csv: the input plus `score`."),
    batch_size: int = typer.Option(256, "--batch-size", help="Rows per forward pass."),
    chunk_rows: int = typer.Option(100_000, "--chunk-rows", help="Rows read, scored and written at a time."),
    store: str = typer.Option("", "--store", help="Store for --model production."),
    model_name: str = typer.Option("", "--model-name", help="Registry model name for --model production."),
    excel_safe: bool = typer.Option(False, "--excel-safe", help=_EXCEL_SAFE_HELP),
    engine: str = typer.Option(
        "", "--engine", help="pandas or ray (actors; full data contract); default TAILGUARD_ENGINE."
    ),
) -> None:
    """Score a batch with a saved or the production model, streaming in chunks; writes a `score` column."""
    offline()
    from tailguard.contract import ContractError
    from tailguard.scoring import ScoringError, predict_file, production_model_dir

    model_dir = Path(model)
    if model == "production":
        model_dir = production_model_dir(_registry(store, model_name))
    try:
        done = predict_file(model_dir, data, out, batch_size=batch_size, chunk_rows=chunk_rows,
                            excel_safe=excel_safe, engine=engine)  # fmt: skip
    except (ScoringError, ContractError) as err:
        raise CommandError(f"error: {err}") from None
    how = "Ray actors" if done.pairs_per_s is None else (
        f"{done.pairs_per_s:,.0f} pairs/s on {done.device}, tokenizing included")  # fmt: skip
    typer.echo(f"scored {done.rows} rows with {model} -> {out} ({how})")


# --- evaluation: metrics ----------------------------------------------------------------------


@app.command("metrics")
@clear_errors
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
    from tailguard.metrics import EvalConfig

    if version:
        text, code = commands.recheck_version(_registry(store, model), version, out)
        typer.echo(text, err=code != 0)
        raise typer.Exit(code)
    if predictions is None or train is None:
        raise CommandError("[error] give --predictions and --train, or --version")
    config = EvalConfig(
        k=k, min_positives=min_positives, n_bootstrap=bootstrap, seed=seed, threshold=threshold
    )
    typer.echo(commands.metrics_report(predictions, train, config, out, policy, engine))


# --- registry: models, promote, rollback ---------------------------------------------------------


def _registry(store: str, model: str) -> Any:
    """The registry named by --store/--model (commands.open_registry); its note goes to stderr."""
    registry, note = commands.open_registry(store, model)
    if note:
        echo_err(note)
    return registry


_STORE_OPT = typer.Option("", "--store", help="Store URI (default: TAILGUARD_STORE or <home>/store).")
_MODEL_OPT = typer.Option("", "--model", help="Model name (default: TAILGUARD_MODEL_NAME or 'relevance').")


@app.command("models")
@clear_errors
def models_cmd(
    count: int | None = typer.Argument(
        None, metavar="[N]", min=1, help="With --trend: how many versions (default 8)."
    ),
    show_all: bool = typer.Option(False, "--all", help="Also list incomplete (interrupted) versions."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    compare: tuple[str, str] | None = typer.Option(
        None,
        "--compare",
        metavar="V1 V2",
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
        typer.echo(commands.history_text(registry, compare, trend, count, as_json))
        return
    text, note = commands.versions_table(registry, show_all, as_json)
    if note:
        echo_err(note)
    typer.echo(text)


@app.command("promote")
@clear_errors
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
    lock = promotion_lock(registry.model_name)
    pointer = commands.promote_version(registry, version, by, comment, override, lock)
    typer.echo(f"production of {registry.model_name} is now {pointer['version']} (was {pointer['previous']})")


@app.command("rollback")
@clear_errors
def rollback_cmd(
    to: str = typer.Option("", "--to", help="Version to restore (default: the previous production version)."),
    by: str = typer.Option("", "--by", help="Who rolls back (default: the current user)."),
    expect: str = typer.Option(
        "",
        "--expect",
        help="The production version being undone (as `tailguard models` shows it); if "
        "production is no longer it, nothing changes, so a rerun never rolls back twice. Required unless "
        "--request-id is given.",
    ),  # fmt: skip
    request_id: str = typer.Option(
        "",
        "--request-id",
        help="An id of your choosing for this rollback: a rerun with the same id returns "
        "the landed rollback instead of rolling back again.",
    ),  # fmt: skip
    store: str = _STORE_OPT,
    model: str = _MODEL_OPT,
) -> None:
    """Point production back at an earlier complete version (files verified, conditional flip, audit).

    Needs --expect VERSION (the production version being undone) or --request-id ID: without either, a
    command run twice would move production back two versions."""
    commands.check_rollback_request(expect, request_id)  # before the store is opened
    registry = _registry(store, model)
    lock = promotion_lock(registry.model_name)
    pointer = commands.rollback_version(registry, to, by, expect, request_id, lock)
    typer.echo(f"production of {registry.model_name} is now {pointer['version']} (was {pointer['previous']})")


# --- reports and batches: reports serve, upload-batch -------------------------------------------

reports_app = _Cli(no_args_is_help=True, help="Read the review pages of stored model versions in a browser.")
app.add_typer(reports_app, name="reports")


@reports_app.command("serve")
@clear_errors
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
    commands.serve_reports(store, host, port, typer.echo, echo_err)


@app.command("upload-batch")
@clear_errors
def upload_batch_cmd(
    path: Path = typer.Argument(..., help="A batch file (csv, csv.gz, parquet) or a folder of them."),
    dest: str = typer.Argument(..., help="Where it goes: s3://bucket/batches/<name>/ (a prefix)."),
) -> None:
    """Put a local batch into the bucket (boto3, the usual AWS_* variables; no aws-cli needed).

    Prints the URI to pass to `tailguard retrain --data` or the retrain deployment's `data` parameter.
    """
    for line in commands.upload_batch(path, dest):
        typer.echo(line)


def main() -> None:
    """Entry point for `python -m tailguard.cli` (the library's commands; `tailguard` adds the flows')."""
    app()


if __name__ == "__main__":
    main()
