"""Tasks that write to the registry: the candidate's version folder, promotion, rejection."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from tailguard_tasks.locks import promotion_lock
from tailguard_tasks.retry import transient_io

from tailguard import pipeline


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def write_candidate(
    model_dir, batch, params, evaluation, decision, balance_report, drift_summary, ctx, flow_run_id: str = ""
) -> dict:
    """Upload the candidate's version folder; the manifest goes last."""
    return pipeline.write_candidate(
        model_dir, batch, params, evaluation, decision, balance_report, drift_summary, ctx, flow_run_id
    )


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def promote_candidate(
    version: str, decision: dict, review: dict, ctx, expected_production: str | None
) -> dict:
    """Flip the production pointer, one promotion per model at a time (the conditional write backs it up)."""
    with promotion_lock(ctx.settings.model_name):
        return pipeline.promote(version, decision, review, ctx, expected_production)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def reject_candidate(version: str, decision: dict, review: dict, ctx) -> None:
    """Record the rejection in the audit trail."""
    pipeline.reject(version, decision, review, ctx)
