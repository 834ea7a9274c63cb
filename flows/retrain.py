"""The retrain flow: validate, rebalance, fine-tune, evaluate against production, review, promote.

The flow body is the loop, one call per stage: load_and_validate -> read_production (once) ->
prepare_training_data -> produce_candidate -> evaluate_candidate -> register_candidate -> review_candidate
-> settle_candidate -> final_state. Stages hand each other typed objects (pipeline.TrainingData,
Judgement, gate.Decision, registry.Manifest, pipeline.ReviewAnswer, Outcome); files the version stores
go under one pipeline.RunFiles passed explicitly.

Run it with `python -m tailguard_flows.retrain --data PATH` or `tailguard retrain --data PATH`;
schedule it with the `retrain-weekly` deployment in prefect.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

from prefect import flow, get_client, get_run_logger, pause_flow_run
from prefect.context import get_run_context
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.states import Completed, Failed, State
from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from tailguard_tasks import artifacts, candidate, evaluation, promotion
from tailguard_tasks import data as data_tasks

from tailguard import pipeline
from tailguard.gate import Decision
from tailguard.pipeline import (
    Judgement,
    LoadedBatch,
    Outcome,
    Production,
    RetrainParams,
    ReviewAnswer,
    RunContext,
    RunFiles,
    Timer,
    TrainingData,
)
from tailguard.registry import Manifest, PromotionConflict
from tailguard.validation import ValidationRecord

# The tag a run carries while it waits for a reviewer (flows/retrain._ask_reviewer, `tailguard reviews`).
AWAITING_REVIEW = "awaiting-review"


class BatchRejected(Exception):
    """The batch failed validation; it was quarantined and production is untouched."""


class PromotionRefused(Exception):
    """Production moved while the candidate was judged: the flip was refused (audited) and nothing changed.

    The run ends Failed, named Refused; `outcome` is the run's Outcome as its JSON dict.
    """

    def __init__(self, message: str, outcome: dict):
        super().__init__(message)
        self.outcome = outcome


class InvalidParameters(ValueError):
    """The run's parameters break RetrainParams' rules; the message names each field in one line."""


class Review(RunInput):
    """The reviewer's answer, shown as a form in the Prefect UI.

    The server checks the answer against this schema: an empty or blank reviewer is refused there, so
    the run stays paused until someone answers with a name.
    """

    approve: bool = Field(False, description="Promote the candidate (off: reject it).")
    # No default: the form marks it required and a resume without it is refused by the server.
    reviewer: str = Field(
        ...,
        min_length=1,
        max_length=200,
        # A letter or digit (Python's Unicode \w minus '_', which the server's jsonschema check uses too):
        # a blank or invisible-only name ("\u200b\u2060") is refused by the server and the run stays paused.
        pattern=r"[^\W_]",
        description="Your name (required); kept in the audit.",
    )
    comment: str = Field("", description="Why; required with override, kept in the audit.")
    override: bool = Field(
        False, description="Approve although the gate failed or its policy is not the reviewed default."
    )
    source: Literal["ui-form", "cli"] = Field(
        "ui-form", description="Where the answer came from (`tailguard approve` sets cli)."
    )

    @field_validator("reviewer", "comment", mode="after")
    @classmethod
    def _visible(cls, value: str) -> str:
        """What a reader sees (registry.visible_text_line): invisible-only text becomes "" so the pipeline's
        "no reviewer" / "an override needs a comment" checks see it as missing."""
        from tailguard.registry import visible_text_line

        text = visible_text_line(value)
        return text if any(ch.isalnum() for ch in text) else ""


def _flow_run_id() -> str:
    try:
        return str(get_run_context().flow_run.id)
    except Exception:  # noqa: BLE001 - outside a flow run there is no id
        return ""


def _form(name: str) -> FieldInfo:
    """RetrainParams' field `name` as flow-parameter metadata: its bounds and pattern, and its description.

    Prefect builds the run form from the flow signature and passes `description=<docstring Args entry>`
    itself, which replaces a Field(description=...) given here; a `description` in json_schema_extra is
    written last and survives. tests/flows/test_form.py compares the result with RetrainParams' schema.
    """
    info = RetrainParams.model_fields[name]
    keys = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")
    bounds = {k: getattr(m, k) for m in info.metadata for k in keys if getattr(m, k, None) is not None}
    return Field(json_schema_extra={"description": info.description or ""}, **bounds)


# The dict parameters default to {} rather than None: the form shows a JSON editor for a plain object and
# nothing usable for object-or-null (Prefect 3.9.1 UI). Prefect validates parameters into new dicts and
# the flow never mutates them, so the shared default is safe.
@flow(name="retrain", log_prints=True)
def retrain(
    data: Annotated[str, _form("data")],
    columns: Annotated[str, _form("columns")] = "",
    balance: Annotated[str, _form("balance")] = "random_under",
    balance_options: Annotated[dict[str, Any], _form("balance_options")] = {},  # noqa: B006
    base_model: Annotated[str, _form("base_model")] = "tiny",
    epochs: Annotated[int, _form("epochs")] = 3,
    max_steps: Annotated[int, _form("max_steps")] = 0,
    batch_size: Annotated[int, _form("batch_size")] = 32,
    learning_rate: Annotated[float, _form("learning_rate")] = 0.0,
    train_options: Annotated[dict[str, Any], _form("train_options")] = {},  # noqa: B006
    eval_fraction: Annotated[float, _form("eval_fraction")] = 0.2,
    seed: Annotated[int, _form("seed")] = 0,
    approval: Annotated[Literal["auto", "manual"], _form("approval")] = "auto",
    review_timeout_s: Annotated[int, _form("review_timeout_s")] = 86_400,
    gate_policy: Annotated[str, _form("gate_policy")] = "",
    gate_overrides: Annotated[dict[str, Any], _form("gate_overrides")] = {},  # noqa: B006
    n_bootstrap: Annotated[int, _form("n_bootstrap")] = 1000,
    allow_duplicate_batch: Annotated[bool, _form("allow_duplicate_batch")] = False,
    window_weeks: Annotated[int, _form("window_weeks")] = 4,
    recipe: Annotated[str, _form("recipe")] = "",
    engine: Annotated[str, _form("engine")] = "",
) -> State:
    """Retrain the relevance model on one batch and promote it only if it does not hurt the long tail.

    The run ends named for what happened: Completed as Promoted, Rejected or NotPromoted (with the
    outcome dict as its result), or Failed as Refused when production moved while it was judged.
    Raises InvalidParameters (one line naming each bad field) before anything is read.
    """
    # The parameters above are RetrainParams' fields, flat so the Prefect UI shows one typed form
    # (tests/flows/test_form.py compares names, annotations and defaults).
    params = _checked(locals())
    ctx = pipeline.new_context(flow_run_id=_flow_run_id())
    files = pipeline.run_files(ctx)  # every file the version stores is written under it
    try:  # the scratch folder goes whatever happens: inputs and results live in the store
        batch, record = load_and_validate(params, ctx)
        production = evaluation.read_production(ctx)  # read once: drift, scores and the promotion use it
        data = prepare_training_data(batch, params, production, files, ctx)
        with Timer(ctx, "train"):
            model_dir = candidate.produce_candidate(
                data.balanced, pipeline.train_config(params, ctx.settings), ctx
            )
        judged = evaluate_candidate(model_dir, data, params, production, files, ctx)
        manifest = register_candidate(data, judged, record, params, files, ctx)
        review = review_candidate(judged.decision, manifest.version, params)
        outcome = settle_candidate(manifest, judged, review, production, pipeline.rerun_notes(record), ctx)
        return final_state(outcome)
    finally:
        pipeline.cleanup(ctx)


def _checked(values: dict[str, Any]) -> RetrainParams:
    """The flow's arguments as RetrainParams; InvalidParameters names every bad field in one line."""
    try:
        return RetrainParams(**{name: value for name, value in values.items() if value is not None})
    except ValidationError as err:
        raise InvalidParameters(f"invalid retrain parameters: {pipeline.params_error(err)}") from None


def load_and_validate(params: RetrainParams, ctx: RunContext) -> tuple[LoadedBatch, ValidationRecord]:
    """Read the batch and check it; a refused batch is quarantined and the run raises BatchRejected.

    The batch is recorded as accepted only once its version is stored (register_candidate): a late
    failure (training, evaluation, reports) must not make the rerun of the same file a "duplicate".
    """
    with Timer(ctx, "load"):
        batch = data_tasks.load_batch(params, ctx)
    with Timer(ctx, "validate"):
        record = data_tasks.validate_batch(batch, ctx, params)
    if not record.success:
        where = data_tasks.quarantine_batch(batch, record, ctx)
        artifacts.publish_rejection(record, where)
        raise BatchRejected(pipeline.rejection_message(record, where))
    for note in pipeline.rerun_notes(record):
        get_run_logger().warning(note)
    return data_tasks.collect_batch(batch), record


def prepare_training_data(
    batch: LoadedBatch, params: RetrainParams, production: Production | None, files: RunFiles, ctx: RunContext
) -> TrainingData:
    """The training window, the split by query, drift against production's batch and the balanced frame."""
    with Timer(ctx, "window"):  # only the new batch was validated; the window's were when accepted
        batch = data_tasks.load_window(batch, params, ctx)
    train, eval_df = data_tasks.split_batch(batch, params)
    with Timer(ctx, "drift"):
        drift = data_tasks.measure_drift(batch, production, files, ctx)
    with Timer(ctx, "rebalance"):
        balanced, report = data_tasks.rebalance_train(train, params, files)
    artifacts.publish_balance(report)
    return TrainingData(batch, train, eval_df, balanced, report, drift)


def evaluate_candidate(
    model_dir: Path,
    data: TrainingData,
    params: RetrainParams,
    production: Production | None,
    files: RunFiles,
    ctx: RunContext,
) -> Judgement:
    """Score candidate and production on the same eval rows, compute metrics.json, keep the scored rows,
    decide the gate and render the pages."""
    with Timer(ctx, "evaluate"):
        scores = {"candidate": evaluation.score_model(model_dir, data.eval_df, params.engine)}
        if production is not None:
            scores["production"] = evaluation.score_model(
                evaluation.fetch_production(production, ctx), data.eval_df, params.engine
            )
        metrics = evaluation.evaluate_models(data.eval_df, data.train, scores, params)
        evaluation.record_eval_rows(data.eval_df, data.train, scores, params, files)
        decision = evaluation.decide_gate(metrics, data.drift, params)
    with Timer(ctx, "reports"):
        pages = evaluation.render_reports(data, scores, metrics, decision, files)
    return Judgement(model_dir, scores, metrics, decision, pages, production.version if production else None)


def register_candidate(
    data: TrainingData,
    judged: Judgement,
    record: ValidationRecord,
    params: RetrainParams,
    files: RunFiles,
    ctx: RunContext,
) -> Manifest:
    """Store the candidate's version, record its batch as accepted, publish the review pack."""
    manifest = promotion.write_candidate(data, judged, params, files, ctx)
    data_tasks.accept_batch(data.batch, record, ctx, manifest.version)
    pages = pipeline.stored_reports(manifest, ctx)
    artifacts.publish_review_pack(judged.evaluation, judged.decision, pages, manifest.version, ctx.store.uri)
    return manifest


def review_candidate(decision: Decision, version: str, params: RetrainParams) -> ReviewAnswer:
    """approval=manual: pause for a reviewer; approval=auto: the unattended policy answers."""
    if params.approval == "manual":
        return _ask_reviewer(decision, version, params)
    return pipeline.auto_review(decision)


def settle_candidate(
    manifest: Manifest,
    judged: Judgement,
    review: ReviewAnswer,
    production: Production | None,
    notes: list[str],
    ctx: RunContext,
) -> Outcome:
    """Promote or reject as the review resolves, then publish the outcome and tag the run with it."""
    promoted, why = pipeline.resolve_review(judged.decision, review)
    pointer, state = None, _state_name(promoted, review)
    if promoted:
        expected = production.version if production else None
        try:
            pointer = promotion.promote_candidate(manifest.version, judged.decision, review, ctx, expected)
        except PromotionConflict as err:  # audited as `refuse` by pipeline.promote
            promoted, state = False, "Refused"
            why = (
                f"refused: production moved while this candidate was judged ({err}); "
                "promoting it now needs an override"
            )
    else:
        review = pipeline.rejection_comment(review, why)
        promotion.reject_candidate(manifest.version, judged.decision, review, ctx)
    outcome = pipeline.outcome(manifest, judged, (promoted, why, state, pointer), notes, ctx)
    artifacts.publish_outcome(outcome)
    _tag_run(add=[f"outcome:{state.lower()}", f"candidate:{manifest.version}"], drop=AWAITING_REVIEW)
    return outcome


def final_state(outcome: Outcome) -> State:
    """Completed named for the outcome with its JSON as data; Refused is Failed so it stands out and
    notifies, its exception carrying the outcome."""
    data = outcome.to_dict()
    if outcome.state == "Refused":
        return Failed(name=outcome.state, message=outcome.why, data=PromotionRefused(outcome.why, data))
    return Completed(name=outcome.state, message=outcome.why, data=data)


def _ask_reviewer(decision: Decision, version: str, params: RetrainParams) -> ReviewAnswer:
    """Pause for the reviewer's answer (the Review form in the UI); a timeout answers as a rejection.

    While paused the run carries the tags `awaiting-review`, `candidate:<version>` and `verdict:<word>`,
    which the UI's tag filter and `tailguard reviews` list.
    """
    from tailguard.summary import verdict

    word, _ = verdict(decision)
    get_run_logger().info(
        "Candidate %s is waiting for review in the Prefect UI (approve, reviewer, comment).", version
    )
    _tag_run(add=[AWAITING_REVIEW, f"candidate:{version}", f"verdict:{word.lower().replace(' ', '-')}"])
    try:
        answer = pause_flow_run(
            # Only the description: with_initial_data re-declares the fields it is given and drops
            # their constraints (the required reviewer), and the defaults are already approve=False.
            wait_for_input=Review.with_initial_data(
                description=pipeline.review_prompt(decision, version, _review_url())
            ),
            timeout=params.review_timeout_s,
            poll_interval=1,
        )
        return ReviewAnswer.model_validate(answer.model_dump())
    except FlowPauseTimeout:
        return pipeline.timeout_review(params.review_timeout_s)


def _review_url() -> str:
    """The UI page of this run's artifacts (PREFECT_UI_URL + the run), or "" when no UI URL is known."""
    from prefect.utilities.urls import url_for

    run_id = _flow_run_id()
    url = url_for("flow-run", obj_id=run_id) if run_id else None
    return f"{url}?tab=Artifacts" if url else ""


def _tag_run(add: list[str], drop: str = "") -> None:
    """Add tags to this flow run (and drop one) through the API; outside a run, or offline, nothing.

    Prefect replaces a run's tags wholesale (client.update_flow_run), so they are read back first. The
    tags are a view for people: a failure to write them is logged, never fatal.
    """
    run_id = _flow_run_id()
    if not run_id:
        return
    try:
        with get_client(sync_client=True) as client:
            tags = [t for t in client.read_flow_run(UUID(run_id)).tags if t != drop]
            client.update_flow_run(UUID(run_id), tags=list(dict.fromkeys([*tags, *add])))
    except Exception as err:  # noqa: BLE001 - the API raises several types; tags are not the record
        get_run_logger().warning("could not tag flow run %s with %s: %s", run_id, add, err)


def _state_name(promoted: bool, review: ReviewAnswer) -> str:
    """The final state's name: Promoted, Rejected (a reviewer, the policy or a timeout said no) or
    NotPromoted (approved, but the approval could not promote: no override, no comment, no name)."""
    if promoted:
        return "Promoted"
    return "NotPromoted" if review.approve else "Rejected"


def main(argv: list[str] | None = None) -> int:
    """`python -m tailguard_flows.retrain --data PATH [...]` runs one retrain with embedded defaults."""
    from tailguard.runtime import configure_embedded

    configure_embedded()  # a local run: make PREFECT_HOME now
    parser = argparse.ArgumentParser(prog="python -m tailguard_flows.retrain", description=retrain.__doc__)
    parser.add_argument("--data", required=True, help="batch file, folder or s3:// URI")
    parser.add_argument("--columns", default="", help="column mapping, e.g. query=search_term,...")
    parser.add_argument("--balance", default="random_under")
    parser.add_argument("--base-model", default="tiny")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--approval", choices=["auto", "manual"], default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        outcome = retrain(
            data=args.data,
            columns=args.columns,
            balance=args.balance,
            base_model=args.base_model,
            epochs=args.epochs,
            approval=args.approval,
            seed=args.seed,
        )
    except BatchRejected as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(outcome, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
