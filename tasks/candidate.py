"""Tasks that produce the candidate model: on the gpu work pool through the store, or in this process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from prefect import get_run_logger
from prefect.deployments import run_deployment
from tailguard_tasks.retry import io_stage, stage
from tailguard_tasks.training import publish_training_summary

from tailguard import pipeline
from tailguard.pipeline import RunContext

if TYPE_CHECKING:  # torch loads with tailguard.model (~2 s): only for annotations
    from tailguard.model import TrainResult


@stage
def produce_candidate(balanced: pd.DataFrame, config: dict, ctx: RunContext) -> Path:
    """The candidate's model folder: trained by the fine-tune deployment on the gpu pool when
    settings.training_pool names one (frame and model travel through the store), else in this process."""
    if ctx.settings.training_pool:
        return fetch_trained(train_on_pool(stage_training_data(balanced, ctx), config, ctx), ctx)
    trained = train_candidate(balanced, config, ctx)
    publish_training_summary(trained, trained.model_dir)
    return Path(trained.model_dir)


@stage
def train_candidate(balanced: pd.DataFrame, config: dict, ctx: RunContext) -> TrainResult:
    """Fine-tune the candidate in this process (embedded default), logging each epoch to Prefect."""
    logger = get_run_logger()
    return pipeline.train_in_process(balanced, config, ctx, on_epoch=lambda row: logger.info("epoch %s", row))


@io_stage
def stage_training_data(balanced: pd.DataFrame, ctx: RunContext) -> str:
    """Upload the training frame for a remote fine-tune run."""
    return pipeline.stage_training_data(balanced, ctx)


@stage
def train_on_pool(data_key: str, config: dict, ctx: RunContext) -> str:
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


@io_stage
def fetch_trained(prefix: str, ctx: RunContext) -> Path:
    """Download the candidate a fine-tune run left in the store."""
    return pipeline.fetch_trained(prefix, ctx)
