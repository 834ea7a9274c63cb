"""Tasks that write to the registry: the candidate's version folder, promotion, rejection."""

from __future__ import annotations

import contextlib

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from tailguard import pipeline
from tasks.retry import transient_io


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
    name = f"promote-{ctx.settings.model_name}"
    _ensure_limit(name)
    with concurrency(name, occupy=1, strict=True):
        return pipeline.promote(version, decision, review, ctx, expected_production)


def _ensure_limit(name: str) -> None:
    """Create the one-slot limit if missing (embedded runs have none; two creators racing is harmless)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.upsert_global_concurrency_limit_by_name(name, limit=1)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def reject_candidate(version: str, decision: dict, review: dict, ctx) -> None:
    """Record the rejection in the audit trail."""
    pipeline.reject(version, decision, review, ctx)
