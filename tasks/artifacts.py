"""Tasks that publish what a reviewer reads in the Prefect UI (markdown, tables, links)."""

from __future__ import annotations

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from tailguard_tasks.retry import stage

from tailguard import summary
from tailguard.balance import report_rows
from tailguard.gate import Decision
from tailguard.metrics import Evaluation
from tailguard.pipeline import Outcome
from tailguard.validation import ValidationRecord


@stage
def publish_rejection(record: ValidationRecord, quarantine_uri: str) -> None:
    """List why the batch was refused and where it was quarantined."""
    create_markdown_artifact(
        summary.validation_markdown(record.to_dict(), quarantine_uri),
        key="batch-validation",
        description="Why this batch was refused",
    )


@stage
def publish_balance(report: dict) -> None:
    """The rebalancing before/after table."""
    create_table_artifact(report_rows(report), key="rebalancing", description="Before/after rebalancing")


@stage
def publish_review_pack(
    evaluation: Evaluation, decision: Decision, pages: dict[str, str], version: str, store_uri: str
) -> None:
    """Slice table, gate checks and report links for the reviewer."""
    create_markdown_artifact(
        summary.review_markdown(evaluation, decision, version, store_uri),
        key="candidate-review",
        description="Candidate vs production, gate checks",
    )
    for name, path in pages.items():
        create_link_artifact(link=summary.file_link(path), link_text=name, description=f"Report: {name}")


@stage
def publish_outcome(outcome: Outcome) -> None:
    """One markdown summary of the run's outcome."""
    create_markdown_artifact(
        summary.outcome_markdown(outcome.to_dict()),
        key="retrain-outcome",
        description="What this retrain did",
    )
