"""Tasks for the data stages: load, validate, collect, quarantine, accept, window, split, drift, rebalance."""

from __future__ import annotations

import pandas as pd
from tailguard_tasks.retry import io_stage, stage

from tailguard import pipeline
from tailguard.pipeline import LoadedBatch, Production, RetrainParams, RunContext, RunFiles
from tailguard.validation import ValidationRecord


@io_stage
def load_batch(params: RetrainParams, ctx: RunContext) -> LoadedBatch:
    """Read the batch into the canonical frame."""
    return pipeline.load(params, ctx)


@stage
def validate_batch(batch: LoadedBatch, ctx: RunContext, params: RetrainParams) -> ValidationRecord:
    """Check the batch against the contract and the GX suite."""
    return pipeline.validate(batch, ctx, params)


@stage
def collect_batch(batch: LoadedBatch) -> LoadedBatch:
    """The validated batch as a frame in this process (a Ray batch is collected; pandas unchanged)."""
    return pipeline.collect(batch)


@io_stage
def quarantine_batch(batch: LoadedBatch, record: ValidationRecord, ctx: RunContext) -> str:
    """Store a refused batch with its reasons under quarantine/."""
    return pipeline.quarantine(batch, record, ctx)


@io_stage
def accept_batch(batch: LoadedBatch, record: ValidationRecord, ctx: RunContext, version: str) -> str:
    """Record the batch as accepted (input, fingerprint, stats, the version stored from it)."""
    return pipeline.accept(batch, record, ctx, version)


@io_stage
def load_window(batch: LoadedBatch, params: RetrainParams, ctx: RunContext) -> LoadedBatch:
    """Read the earlier accepted batches of the training window (params.window_weeks) from the store."""
    return pipeline.with_window(batch, params, ctx)


@stage
def split_batch(batch: LoadedBatch, params: RetrainParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out evaluation queries."""
    return pipeline.split(batch, params)


@stage
def measure_drift(
    batch: LoadedBatch, production: Production | None, files: RunFiles, ctx: RunContext
) -> dict | None:
    """Evidently drift of the batch against production's training data."""
    return pipeline.drift(batch, production, files, ctx)


@stage
def rebalance_train(train: pd.DataFrame, params: RetrainParams, files: RunFiles) -> tuple[pd.DataFrame, dict]:
    """Rebalance the training split."""
    return pipeline.rebalance(train, params, files)
