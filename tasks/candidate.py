"""Tasks that produce the candidate model: in-process, or on the gpu work pool through the store."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from tailguard_tasks.retry import transient_io

from tailguard import pipeline


@task(cache_policy=NO_CACHE)
def train_candidate(balanced, config: dict, ctx) -> dict:
    """Fine-tune the candidate in this process (embedded default), logging each epoch to Prefect."""
    logger = get_run_logger()
    return pipeline.train_in_process(balanced, config, ctx, on_epoch=lambda row: logger.info("epoch %s", row))


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def stage_training_data(balanced, ctx) -> str:
    """Upload the training frame for a remote fine-tune run."""
    return pipeline.stage_training_data(balanced, ctx)


@task(cache_policy=NO_CACHE)
def train_on_pool(data_key: str, config: dict, ctx) -> str:
    """Run the fine-tune deployment (gpu pool) and return the store prefix of the model it wrote."""
    from tailguard_flows.fine_tune import fine_tune_prefix

    output_prefix = fine_tune_prefix(ctx.run_id)  # runs/<run>/fine-tune/model: never under models/
    flow_run = run_deployment(
        ctx.settings.fine_tune_deployment,
        timeout=None,
        parameters={"data_key": data_key, "config": config, "output_prefix": output_prefix},
    )
    if not flow_run.state or not flow_run.state.is_completed():
        raise RuntimeError(f"fine-tune run {flow_run.id} ended {flow_run.state and flow_run.state.name}")
    return output_prefix


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def fetch_trained(prefix: str, ctx):
    """Download the candidate a fine-tune run left in the store."""
    return pipeline.fetch_trained(prefix, ctx)
