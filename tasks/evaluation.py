"""Tasks for scoring, evaluation, gate and reports."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from tailguard_tasks.retry import transient_io

from tailguard import pipeline


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def fetch_production(ctx):
    """The production version and its verified local copy, or None."""
    return pipeline.production_model(ctx)


@task(cache_policy=NO_CACHE)
def score_model(model_dir, eval_df):
    """Score the evaluation split with one model."""
    return pipeline.score(model_dir, eval_df)


@task(cache_policy=NO_CACHE)
def evaluate_models(eval_df, train, scores, params) -> dict:
    """Metrics overall and per slice with paired bootstrap intervals."""
    return pipeline.evaluate(eval_df, train, scores, params)


@task(cache_policy=NO_CACHE)
def decide_gate(evaluation: dict, drift_summary: dict | None, params) -> dict:
    """Apply the gate policy."""
    return pipeline.decide(evaluation, drift_summary, params)


@task(cache_policy=NO_CACHE)
def render_reports(eval_df, train, scores, evaluation: dict, decision: dict, ctx) -> dict:
    """Render the Evidently pages and the summary page."""
    return pipeline.render_reports(eval_df, train, scores, evaluation, decision, ctx)


@task(cache_policy=NO_CACHE)
def record_eval_rows(eval_df, train, scores, params, ctx) -> dict:
    """Write the scored eval rows and training keys that recompute metrics.json (stored with the version)."""
    return pipeline.record_eval_rows(eval_df, train, scores, params, ctx)
