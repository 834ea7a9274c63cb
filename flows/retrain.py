"""The retrain flow: validate, rebalance, fine-tune, evaluate against production, review, promote.

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
from tailguard_tasks import artifacts, candidate, evaluation, promotion, training
from tailguard_tasks import data as data_tasks

from tailguard import pipeline
from tailguard.pipeline import RetrainParams, Timer
from tailguard.registry import PromotionConflict

# The tag a run carries while it waits for a reviewer (flows/retrain._ask_reviewer, `tailguard reviews`).
AWAITING_REVIEW = "awaiting-review"
# The validation warning of a batch accepted before whose run stored no version (pipeline.validate).
RERUN_RULE = "batch_rerun_after_failed_run"


class BatchRejected(Exception):
    """The batch failed validation; it was quarantined and production is untouched."""


class PromotionRefused(Exception):
    """Production moved while the candidate was judged: the flip was refused (audited) and nothing changed.

    The run ends Failed, named Refused; `outcome` is the run's outcome dict.
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
) -> State:
    """Retrain the relevance model on one batch and promote it only if it does not hurt the long tail.

    The run ends named for what happened: Completed as Promoted, Rejected or NotPromoted (with the
    outcome dict as its result), or Failed as Refused when production moved while it was judged.
    Raises InvalidParameters (one line naming each bad field) before anything is read.
    """
    # The parameters above are RetrainParams' fields, flat so the Prefect UI shows one typed form.
    try:
        params = RetrainParams(**{name: value for name, value in locals().items() if value is not None})
    except ValidationError as err:
        raise InvalidParameters(f"invalid retrain parameters: {pipeline.params_error(err)}") from None
    logger = get_run_logger()
    ctx = pipeline.new_context()
    try:  # the scratch folder goes whatever happens: inputs and results live in the store
        with Timer(ctx, "load"):
            batch = data_tasks.load_batch(params, ctx)
        with Timer(ctx, "validate"):
            result = data_tasks.validate_batch(batch, ctx, params)
        if not result["success"]:
            where = data_tasks.quarantine_batch(batch, result, ctx)
            artifacts.publish_rejection(result, where)
            raise BatchRejected(pipeline.rejection_message(result, where))
        notes = [w["observed"] for w in result.get("warnings", []) if w.get("rule") == RERUN_RULE]
        for note in notes:
            logger.warning(note)
        # The batch is recorded as accepted only once its version is stored (below): a late failure
        # (training, evaluation, reports) must not make the rerun of the same file a "duplicate".

        with Timer(ctx, "window"):  # only the new batch was validated; the window's were when accepted
            batch = data_tasks.load_window(batch, params, ctx)
        train, eval_df = data_tasks.split_batch(batch, params)
        with Timer(ctx, "drift"):
            drift_summary = data_tasks.measure_drift(train, batch, ctx)
        with Timer(ctx, "rebalance"):
            balanced, balance_report = data_tasks.rebalance_train(train, params, ctx)
        artifacts.publish_balance(balance_report)

        config = pipeline.train_config(params, ctx.settings)
        with Timer(ctx, "train"):
            if ctx.settings.training_pool:
                prefix = candidate.train_on_pool(candidate.stage_training_data(balanced, ctx), config, ctx)
                model_dir = candidate.fetch_trained(prefix, ctx)
            else:
                trained = candidate.train_candidate(balanced, config, ctx)
                model_dir = Path(trained["model_dir"])
                training.publish_training_summary(trained, model_dir)

        with Timer(ctx, "evaluate"):
            production = evaluation.fetch_production(ctx)
            scores = {"candidate": evaluation.score_model(model_dir, eval_df)}
            if production:
                scores["production"] = evaluation.score_model(production[1], eval_df)
            metrics = evaluation.evaluate_models(eval_df, train, scores, params)
            evaluation.record_eval_rows(eval_df, train, scores, params, ctx)
            decision = evaluation.decide_gate(metrics, drift_summary, params)
        with Timer(ctx, "reports"):
            evaluation.render_reports(eval_df, train, scores, metrics, decision, ctx)

        manifest = promotion.write_candidate(
            model_dir, batch, params, metrics, decision, balance_report, drift_summary, ctx, _flow_run_id()
        )
        version = manifest["version"]
        data_tasks.accept_batch(batch, result, ctx, version)
        artifacts.publish_review_pack(
            metrics, decision, pipeline.stored_reports(manifest, ctx), version, ctx.store.uri
        )

        if params.approval == "manual":
            review = _ask_reviewer(decision, version, params)
        else:
            review = pipeline.auto_review(decision)

        promoted, why = pipeline.resolve_review(decision, review)
        pointer, state = None, _state_name(promoted, review)
        if promoted:
            try:
                pointer = promotion.promote_candidate(
                    version, decision, review, ctx, production[0] if production else None
                )
            except PromotionConflict as err:  # audited as `refuse` by pipeline.promote
                promoted, state = False, "Refused"
                why = (
                    f"refused: production moved while this candidate was judged ({err}); "
                    "promoting it now needs an override"
                )
        else:
            # A rejection's reason is its comment; an approval that could not promote says why it did not.
            comment = (
                f"{review.get('comment', '')} ({why})" if review.get("approve") else review.get("comment", "")
            )
            promotion.reject_candidate(version, decision, {**review, "comment": comment}, ctx)

        outcome = pipeline.outcome(version, promoted, why, decision, metrics, pointer, manifest, ctx)
        outcome["notes"] = notes
        outcome["state"] = state
        artifacts.publish_outcome(outcome)
        _tag_run(add=[f"outcome:{state.lower()}", f"candidate:{version}"], drop=AWAITING_REVIEW)
        if state == "Refused":  # Failed, so it stands out and notifies; the exception carries the outcome
            return Failed(name=state, message=why, data=PromotionRefused(why, outcome))
        return Completed(name=state, message=why, data=outcome)
    finally:
        pipeline.cleanup(ctx)


def _ask_reviewer(decision: dict, version: str, params: RetrainParams) -> dict:
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
        return answer.model_dump()
    except FlowPauseTimeout:
        return {
            "approve": False,
            "reviewer": "review-timeout",
            "comment": f"no answer within {params.review_timeout_s} s",
            "override": False,
            "source": "review-timeout",
        }


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


def _state_name(promoted: bool, review: dict) -> str:
    """The final state's name: Promoted, Rejected (a reviewer, the policy or a timeout said no) or
    NotPromoted (approved, but the approval could not promote: no override, no comment, no name)."""
    if promoted:
        return "Promoted"
    return "NotPromoted" if review.get("approve") else "Rejected"


def main(argv: list[str] | None = None) -> int:
    """`python -m tailguard_flows.retrain --data PATH [...]` runs one retrain with embedded defaults."""
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
