"""Tasks for the data stages: load, validate, quarantine, accept, split, drift, rebalance."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from tailguard_tasks.retry import transient_io

from tailguard import pipeline
from tailguard.pipeline import LoadedBatch, RetrainParams, RunContext


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def load_batch(params: RetrainParams, ctx: RunContext) -> LoadedBatch:
    """Read the batch into the canonical frame."""
    return pipeline.load(params, ctx)


@task(cache_policy=NO_CACHE)
def validate_batch(batch: LoadedBatch, ctx: RunContext, params: RetrainParams) -> dict:
    """Check the batch against the contract and the GX suite."""
    return pipeline.validate(batch, ctx, params)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def quarantine_batch(batch: LoadedBatch, result: dict, ctx: RunContext) -> str:
    """Store a refused batch with its reasons under quarantine/."""
    return pipeline.quarantine(batch, result, ctx)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def accept_batch(batch: LoadedBatch, result: dict, ctx: RunContext, version: str) -> str:
    """Record the batch as accepted (input, fingerprint, stats, the version stored from it)."""
    return pipeline.accept(batch, result, ctx, version)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def load_window(batch: LoadedBatch, params: RetrainParams, ctx: RunContext) -> LoadedBatch:
    """Read the earlier accepted batches of the training window (params.window_weeks) from the store."""
    return pipeline.with_window(batch, params, ctx)


@task(cache_policy=NO_CACHE)
def split_batch(batch: LoadedBatch, params: RetrainParams):
    """Hold out evaluation queries."""
    return pipeline.split(batch, params)


@task(cache_policy=NO_CACHE)
def measure_drift(train, batch: LoadedBatch, ctx: RunContext) -> dict | None:
    """Evidently drift of the batch against production's training data."""
    return pipeline.drift(train, batch, ctx)


@task(cache_policy=NO_CACHE)
def rebalance_train(train, params: RetrainParams, ctx: RunContext):
    """Rebalance the training split."""
    return pipeline.rebalance(train, params, ctx)
