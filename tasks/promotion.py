"""Tasks that write to the registry: the candidate's version folder, promotion, rejection."""

from __future__ import annotations

from tailguard_tasks.locks import promotion_lock
from tailguard_tasks.retry import io_stage

from tailguard import pipeline
from tailguard.gate import Decision
from tailguard.pipeline import Judgement, RetrainParams, ReviewAnswer, RunContext, RunFiles, TrainingData
from tailguard.registry import Manifest


@io_stage
def write_candidate(
    data: TrainingData, judged: Judgement, params: RetrainParams, files: RunFiles, ctx: RunContext
) -> Manifest:
    """Upload the candidate's version folder; the manifest goes last."""
    return pipeline.write_candidate(data, judged, params, files, ctx)


@io_stage
def promote_candidate(
    version: str, decision: Decision, review: ReviewAnswer, ctx: RunContext, expected_production: str | None
) -> dict:
    """Flip the production pointer, one promotion per model at a time (the conditional write backs it up)."""
    with promotion_lock(ctx.settings.model_name):
        return pipeline.promote(version, decision, review, ctx, expected_production)


@io_stage
def reject_candidate(version: str, decision: Decision, review: ReviewAnswer, ctx: RunContext) -> None:
    """Record the rejection in the audit trail."""
    pipeline.reject(version, decision, review, ctx)
