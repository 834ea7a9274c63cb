"""Tasks for the production model, scoring, evaluation, gate and reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tailguard_tasks.retry import io_stage, stage

from tailguard import pipeline
from tailguard.gate import Decision
from tailguard.metrics import Evaluation
from tailguard.pipeline import Production, RetrainParams, RunContext, RunFiles, TrainingData


@io_stage
def read_production(ctx: RunContext) -> Production | None:
    """The production pointer, read once for the whole run (None before the first promotion)."""
    return pipeline.read_production(ctx)


@io_stage
def fetch_production(production: Production, ctx: RunContext) -> Path:
    """Production's verified local copy."""
    return pipeline.production_model(production, ctx)


@stage
def score_model(model_dir: Path, eval_df: pd.DataFrame, engine: str = "") -> np.ndarray:
    """Score the evaluation split with one model (on cluster actors when the engine is ray)."""
    return pipeline.score(model_dir, eval_df, engine)


@stage
def evaluate_models(
    eval_df: pd.DataFrame, train: pd.DataFrame, scores: dict[str, np.ndarray], params: RetrainParams
) -> Evaluation:
    """Metrics overall and per slice with paired bootstrap intervals."""
    return pipeline.evaluate(eval_df, train, scores, params)


@stage
def record_eval_rows(
    eval_df: pd.DataFrame,
    train: pd.DataFrame,
    scores: dict[str, np.ndarray],
    params: RetrainParams,
    files: RunFiles,
) -> dict[str, Path]:
    """Write the scored eval rows and training keys that recompute metrics.json (stored with the version)."""
    return pipeline.record_eval_rows(eval_df, train, scores, params, files)


@stage
def decide_gate(evaluation: Evaluation, drift_summary: dict | None, params: RetrainParams) -> Decision:
    """Apply the gate policy."""
    return pipeline.decide(evaluation, drift_summary, params)


@stage
def render_reports(
    data: TrainingData,
    scores: dict[str, np.ndarray],
    evaluation: Evaluation,
    decision: Decision,
    files: RunFiles,
) -> dict[str, Path]:
    """Render the Evidently pages and the summary page."""
    return pipeline.render_reports(data, scores, evaluation, decision, files)
