"""The retrain flow: validate, rebalance, fine-tune, evaluate against production, review, promote.

Run it with `python -m flows.retrain --data PATH` or `tailguard retrain --data PATH`; schedule it with
the `retrain-weekly` deployment in prefect.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, pause_flow_run
from prefect.context import get_run_context
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.states import Completed, State
from pydantic import Field

from tailguard import pipeline
from tailguard.pipeline import RetrainParams, Timer
from tasks import artifacts, candidate, evaluation, promotion, training
from tasks import data as data_tasks

# The validation warning of a batch accepted before whose run stored no version (pipeline.validate).
RERUN_RULE = "batch_rerun_after_failed_run"


class BatchRejected(Exception):
    """The batch failed validation; it was quarantined and production is untouched."""


class Review(RunInput):
    """The reviewer's answer, shown as a form in the Prefect UI.

    The server checks the answer against this schema: an empty or blank reviewer is refused there, so
    the run stays paused until someone answers with a name.
    """

    approve: bool = Field(False, description="Promote the candidate (off: reject it).")
    reviewer: str = Field(
        "",
        min_length=1,
        max_length=200,
        pattern=r"\S",
        description="Your name (required); kept in the audit.",
    )
    comment: str = Field("", description="Why; required with override, kept in the audit.")
    override: bool = Field(
        False, description="Approve although the gate failed or its policy is not the reviewed default."
    )
    source: Literal["ui-form", "cli"] = Field(
        "ui-form", description="Where the answer came from (`tailguard approve` sets cli)."
    )


def _flow_run_id() -> str:
    try:
        return str(get_run_context().flow_run.id)
    except Exception:  # noqa: BLE001 - outside a flow run there is no id
        return ""


@flow(name="retrain", log_prints=True)
def retrain(
    data: str,
    columns: str = "",
    balance: str = "random_under",
    balance_options: dict[str, Any] | None = None,
    base_model: str = "tiny",
    epochs: int = 3,
    max_steps: int = 0,
    batch_size: int = 32,
    learning_rate: float = 0.0,
    train_options: dict[str, Any] | None = None,
    eval_fraction: float = 0.2,
    seed: int = 0,
    approval: Literal["auto", "manual"] = "auto",
    review_timeout_s: int = 86_400,
    gate_policy: str = "",
    gate_overrides: dict[str, Any] | None = None,
    n_bootstrap: int = 1000,
    allow_duplicate_batch: bool = False,
) -> State:
    """Retrain the relevance model on one batch and promote it only if it does not hurt the long tail.

    The run ends Completed, named for what happened (Promoted, Rejected or NotPromoted), with the
    outcome dict as its result.
    """
    # The parameters above are RetrainParams' fields, flat so the Prefect UI shows one typed form.
    params = RetrainParams(**{name: value for name, value in locals().items() if value is not None})
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
            logger.info(
                "Candidate %s is waiting for review in the Prefect UI (approve, reviewer, comment).", version
            )
            try:
                answer = pause_flow_run(
                    # Only the description: with_initial_data re-declares the fields it is given and drops
                    # their constraints (the required reviewer), and the defaults are already approve=False.
                    wait_for_input=Review.with_initial_data(
                        description=pipeline.review_prompt(decision, version)
                    ),
                    timeout=params.review_timeout_s,
                    poll_interval=1,
                )
                review = answer.model_dump()
            except FlowPauseTimeout:
                review = {
                    "approve": False,
                    "reviewer": "review-timeout",
                    "comment": f"no answer within {params.review_timeout_s} s",
                    "override": False,
                    "source": "review-timeout",
                }
        else:
            review = pipeline.auto_review(decision)

        promoted, why = pipeline.resolve_review(decision, review)
        if promoted:
            pointer = promotion.promote_candidate(
                version, decision, review, ctx, production[0] if production else None
            )
        else:
            # A rejection's reason is its comment; an approval that could not promote says why it did not.
            comment = (
                f"{review.get('comment', '')} ({why})" if review.get("approve") else review.get("comment", "")
            )
            promotion.reject_candidate(version, decision, {**review, "comment": comment}, ctx)
            pointer = None

        outcome = pipeline.outcome(version, promoted, why, decision, metrics, pointer, manifest, ctx)
        outcome["notes"] = notes
        outcome["state"] = _state_name(promoted, review)
        artifacts.publish_outcome(outcome)
        return Completed(name=outcome["state"], message=why, data=outcome)
    finally:
        pipeline.cleanup(ctx)


def _state_name(promoted: bool, review: dict) -> str:
    """The final state's name: Promoted, Rejected (a reviewer, the policy or a timeout said no) or
    NotPromoted (approved, but the approval could not promote: no override, no comment, no name)."""
    if promoted:
        return "Promoted"
    return "NotPromoted" if review.get("approve") else "Rejected"


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.retrain --data PATH [...]` runs one retrain with embedded defaults."""
    parser = argparse.ArgumentParser(prog="python -m flows.retrain", description=retrain.__doc__)
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
