"""Tasks that publish what a reviewer reads in the Prefect UI (markdown, tables, links)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tailguard import summary
from tailguard.balance import report_rows


@task(cache_policy=NO_CACHE)
def publish_rejection(result: dict, quarantine_uri: str) -> None:
    """List why the batch was refused and where it was quarantined."""
    create_markdown_artifact(
        summary.validation_markdown(result, quarantine_uri),
        key="batch-validation",
        description="Why this batch was refused",
    )


@task(cache_policy=NO_CACHE)
def publish_balance(report: dict) -> None:
    """The rebalancing before/after table."""
    create_table_artifact(report_rows(report), key="rebalancing", description="Before/after rebalancing")


@task(cache_policy=NO_CACHE)
def publish_review_pack(evaluation: dict, decision: dict, pages: dict, version: str, store_uri: str) -> None:
    """Slice table, gate checks and report links for the reviewer."""
    create_markdown_artifact(
        summary.review_markdown(evaluation, decision, version, store_uri),
        key="candidate-review",
        description="Candidate vs production, gate checks",
    )
    for name, path in pages.items():
        create_link_artifact(link=summary.file_link(path), link_text=name, description=f"Report: {name}")


@task(cache_policy=NO_CACHE)
def publish_outcome(outcome: dict) -> None:
    """One markdown summary of the run's outcome."""
    create_markdown_artifact(
        summary.outcome_markdown(outcome), key="retrain-outcome", description="What this retrain did"
    )
