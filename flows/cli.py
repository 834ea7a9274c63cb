"""The `tailguard` console command: the library's commands (tailguard.cli) plus those above the flows.

retrain, demo, approve, reviews and automations run or answer Prefect flows, so they live here, above
the flows, and are added to the library's typer app; promote/rollback get the flows' per-model Prefect
promotion lock (tasks/locks.py) when a server is configured. Prefect itself is imported only by the
commands that use it, so `tailguard --help` and the library's commands start without it; each of those
calls `_embedded_prefect()` first, which makes PREFECT_HOME (importing tailguard_flows only sets the
environment, so that `--help` creates nothing).

`retrain`'s options are generated from tailguard.pipeline.RetrainParams (tailguard.options): a field
added there is an option here, with its default and description, and a key of `--config run.yaml`.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import typer

from tailguard import options
from tailguard.cli import app, clear_errors, offline, use_promotion_lock, with_options
from tailguard.commands import CommandError
from tailguard.pipeline import RetrainParams

# Names the retrain options had before they were generated from RetrainParams; both spellings work.
RETRAIN_ALIASES = {
    "n_bootstrap": ("--bootstrap",),
    "balance_options": ("--balance-option",),
    "train_options": ("--train-option",),
}


def _embedded_prefect() -> None:
    """Prepare Prefect here: environment defaults set and PREFECT_HOME made (runtime.configure_embedded).

    Call it before the first Prefect import of a command: without PREFECT_HOME, `tailguard reviews` in a
    fresh folder waited ~3 min for the temporary server and failed.
    """
    from tailguard.runtime import configure_embedded

    configure_embedded()


def _prefect_promotion_lock(model_name: str) -> AbstractContextManager:
    """The flow's promotion lock (promote-<model>); Prefect is imported only when it is taken."""
    _embedded_prefect()
    from tailguard_tasks.locks import promotion_lock

    return promotion_lock(model_name)


use_promotion_lock(_prefect_promotion_lock)


# --- answering flows: approve, reviews, automations ------------------------------------------------


def answer_review(flow_run_id: str, approve: bool, reviewer: str, comment: str, override: bool) -> str:
    """Resume a retrain run paused for review with the reviewer's answer (source cli); returns the
    reviewer's name as recorded.

    Refuses (CommandError, exit 2, before contacting Prefect) a blank reviewer and an override without a
    comment; exit 2 for an id that is not a UUID, exit 1 when Prefect cannot resume the run.
    """
    from tailguard.registry import RegistryError, require_comment, require_name

    if not approve and override:
        raise CommandError("--override only applies to an approval", usage=True)
    try:
        reviewer = require_name(reviewer, "approve", "--reviewer")  # the visible name is what is recorded
    except RegistryError as err:
        raise CommandError(f"--reviewer must name who decides ({err})", usage=True) from None
    if override:
        try:
            comment = require_comment(comment, "--override")
        except RegistryError as err:
            raise CommandError(f"--override needs --comment saying why ({err})", usage=True) from None
    _embedded_prefect()
    from tailguard_tasks.registry import resume_review

    try:
        resume_review(flow_run_id, approve=approve, reviewer=reviewer, comment=comment, override=override)
    except ValueError as err:
        raise CommandError(f"error: {flow_run_id!r} is not a flow run id ({err})") from None
    except Exception as err:  # noqa: BLE001 - Prefect raises several types (NotPaused, ObjectNotFound, HTTP)
        message = f"error: could not resume flow run {flow_run_id}: {type(err).__name__}: {err}"
        raise CommandError(message, 1) from None
    return reviewer


@app.command("approve")
@clear_errors
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
    name = answer_review(flow_run_id, not reject, reviewer, comment, override)
    typer.echo(f"{'rejected' if reject else 'approved'} flow run {flow_run_id} as {name}")


def paused_review_lines(limit: int) -> list[str]:
    """One line per retrain run paused for review (id, name, since when, candidate, verdict).

    Raises CommandError (exit 1) when the Prefect API cannot be read."""
    _embedded_prefect()
    from tailguard_tasks.operations import paused_reviews

    try:
        runs = paused_reviews(limit)
    except Exception as err:  # noqa: BLE001 - httpx/Prefect raise several types when the API is away
        raise CommandError(f"error: cannot read flow runs from the Prefect API: {err}", 1) from None
    if not runs:
        return ["no retrain run is waiting for review"]
    return [
        f"{r.run_id}  {r.name}  paused since {r.paused_since}  candidate {r.candidate}  verdict {r.verdict}"
        for r in runs
    ]


@app.command("reviews")
@clear_errors
def reviews_cmd(
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many runs (oldest first)."),
) -> None:
    """List retrain runs paused for review: run id, name, since when, candidate version, verdict.

    Reads the Prefect API (PREFECT_API_URL); the version and verdict are the tags the run set when it
    paused (flows/retrain._ask_reviewer). Answer one with `tailguard approve RUN_ID --reviewer NAME`.
    """
    for line in paused_review_lines(limit):
        typer.echo(line)


def create_automations(block_id: str, folder: Path) -> list[str]:
    """Create (or replace, by name) the automations in folder/*.json with their notification block set;
    returns one line per automation created. Raises CommandError (exit 2) for a block id that is not a
    UUID or an automation file that is not valid (usage: the message names the file)."""
    from uuid import UUID

    try:
        UUID(block_id)
    except ValueError:
        raise CommandError(f"error: --block-id {block_id!r} is not a block document id (a UUID)") from None
    _embedded_prefect()
    from tailguard_tasks.operations import AutomationFileError, install_automations

    try:
        created = install_automations(folder, block_id)
    except AutomationFileError as err:
        raise CommandError(str(err), usage=True) from None
    return [f"created automation {name!r}: {automation_id}" for name, automation_id in created]


@app.command("automations")
@clear_errors
def automations_cmd(
    block_id: str = typer.Option(..., "--block-id", help="Notification block document id (Slack, email...)."),
    folder: Path = typer.Option(Path("infra/automations"), "--folder", help="The automation JSON files."),
) -> None:
    """Create (or replace, by name) the Prefect automations in infra/automations/*.json.

    Each file's `${TAILGUARD_NOTIFY_BLOCK_ID}` becomes block_id. Same-named automations are deleted first,
    so `make deploy` can run again without duplicating them.
    """
    for line in create_automations(block_id, folder):
        typer.echo(line)


# --- running flows: retrain, demo ------------------------------------------------------------------


def run_retrain(**params: Any) -> dict | None:
    """Run the retrain flow in this process (embedded Prefect); None, after printing why, when the batch
    is refused or cannot be read at all."""
    _embedded_prefect()
    from tailguard_flows.retrain import BatchRejected, retrain

    from tailguard.contract import ContractError

    try:
        return retrain(**params)
    except (BatchRejected, ContractError) as exc:  # refused batch, or an input that cannot be read at all
        typer.echo(str(exc), err=True)
        return None


def retrain_params(
    values: dict[str, Any], given: set[str], config: Path | None
) -> tuple[dict[str, Any], set[str]]:
    """(every RetrainParams field, the fields the user set) from the command line, `--config` and the
    defaults (options.resolve), checked by RetrainParams before Prefect starts (~10 s) and before the batch
    is read. The fields are the validated ones: a `recipe` has filled those the user did not set (the
    flags in `given` and the file's keys win over it, even when equal to the default).

    Raises CommandError (exit 2) for a missing batch, a bad config file (options.read_config: unknown key
    or a value of the wrong type) or a field RetrainParams refuses (one line naming each field,
    pipeline.params_error)."""
    from pydantic import ValidationError

    from tailguard.pipeline import params_error

    try:
        from_file = options.read_config(config, RetrainParams) if config is not None else {}
        resolved = options.resolve(RetrainParams, values, given, from_file)
    except options.OptionsError as err:
        raise CommandError(f"error: {err}") from None
    data = resolved.get("data")
    if not data:
        raise CommandError("error: give --data (a batch file, folder or s3:// URI) or `data:` in --config")
    if "://" not in data and not Path(data).exists():  # fail before starting Prefect (~10 s) for a typo
        raise CommandError(f"{data}: no such file or folder (expected CSV/Parquet, a folder or s3://...)")
    explicit = set(given) | set(from_file)
    try:
        params = RetrainParams.model_validate(resolved, context={"explicit": explicit})
    except ValidationError as err:
        raise CommandError(f"error: {params_error(err)}") from None
    return params.model_dump(), explicit


def given_on_command_line(ctx: typer.Context, names: list[str]) -> set[str]:
    """The parameters the user set (command line or environment), as opposed to left at their default."""
    # By name: typer 0.29 carries its own copy of click, whose ParameterSource is not click's.
    typed = {"COMMANDLINE", "ENVIRONMENT", "PROMPT"}
    return {name for name in names if getattr(ctx.get_parameter_source(name), "name", "") in typed}


def _retrain_options() -> list[inspect.Parameter]:
    """One option per RetrainParams field; `data` may come from --config, so no flag is required."""
    return options.model_options(RetrainParams, aliases=RETRAIN_ALIASES, required_flags=False)


@app.command()
@clear_errors
@with_options(_retrain_options())
def retrain(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        help="A YAML file of RetrainParams fields (the options below, snake_case); flags "
        "given on the command line win over it, it wins over the defaults; unknown keys are refused. "
        "Paths in it are read from the current folder, as flags are.",
    ),  # fmt: skip
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
    **fields: Any,
) -> None:
    """Run one retrain: validate, rebalance, fine-tune, evaluate vs production, gate, promote or reject."""
    import json

    offline()
    params, explicit = retrain_params(fields, given_on_command_line(ctx, list(fields)), config)
    # The flow re-validates its flat parameters without a context: it reads the set fields from here.
    with options.explicit_fields(explicit):
        outcome = run_retrain(**params)
    if outcome is None:
        raise typer.Exit(2)
    from tailguard.summary import outcome_text

    typer.echo(json.dumps(outcome, indent=2, default=str) if as_json else outcome_text(outcome))


def run_demo(home: Path, rows: int, epochs: int) -> None:
    """Wipe `home`, generate two demo batches there and retrain on each (first promotion, then candidate
    vs production), printing each outcome. Raises typer.Exit(2) when a batch is refused."""
    from tailguard.demo import DemoConfig, generate_batches
    from tailguard.settings import get_settings
    from tailguard.summary import outcome_text

    # Importing tailguard_flows filled PREFECT_HOME in for the default home; the demo's runs keep their
    # Prefect state in the demo's home, as before, unless the user chose PREFECT_HOME.
    if os.environ.get("PREFECT_HOME") == str(get_settings().home.resolve() / "prefect"):
        os.environ["PREFECT_HOME"] = str(home / "prefect")
    shutil.rmtree(home, ignore_errors=True)
    os.environ["TAILGUARD_HOME"] = str(home)
    os.environ.pop("TAILGUARD_STORE", None)
    t0 = time.perf_counter()
    paths = generate_batches(DemoConfig(rows=rows, batches=2, seed=7), home / "data", "csv")
    typer.echo(f"demo data: {', '.join(str(p) for p in paths)}")
    for i, path in enumerate(paths, 1):
        typer.echo(f"\n=== run {i}: retrain on {path.name} ===")
        outcome = run_retrain(data=str(path), epochs=epochs)
        if outcome is None:
            raise typer.Exit(2)
        typer.echo(outcome_text(outcome))
    typer.echo(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; store: {home / 'store'}")
    typer.echo(f"list versions with: {sys.argv[0]} models  (it finds {home}/store when no store is set)")


@app.command()
def demo(
    home: Path = typer.Option(
        Path(".tailguard/demo"), "--home", help="State folder for the demo (wiped first)."
    ),
    rows: int = typer.Option(5000, "--rows", min=200, help="Rows per demo batch."),
    epochs: int = typer.Option(6, "--epochs", min=1, help="Training epochs per run."),
) -> None:
    """Generate two demo batches and retrain twice: first promotion, then candidate vs production."""
    offline()
    run_demo(home.resolve(), rows, epochs)


def main() -> None:
    """Entry point of the `tailguard` console command (pyproject [project.scripts])."""
    app()


if __name__ == "__main__":
    main()
