"""Prefect-side operations the `tailguard` CLI offers: runs awaiting review, notification automations.

They live here, not in the library: src/tailguard never imports Prefect (tests/unit/test_boundaries.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateName,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events.schemas.automations import AutomationCore
from pydantic import ValidationError


@dataclass(frozen=True)
class PausedReview:
    """One retrain run paused for review; version and verdict are the tags the run set when it paused."""

    run_id: str
    name: str
    paused_since: str
    candidate: str
    verdict: str


def _tag_value(tags: list[str], prefix: str) -> str:
    return next((t.removeprefix(prefix) for t in tags if t.startswith(prefix)), "?")


def paused_reviews(limit: int) -> list[PausedReview]:
    """Retrain runs in state Paused, oldest first (at most `limit`); raises what the client raises."""
    paused = FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"])))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["retrain"])),
            flow_run_filter=paused,
            sort=FlowRunSort.START_TIME_ASC,
            limit=limit,
        )
    return [
        PausedReview(
            run_id=str(run.id),
            name=run.name,
            paused_since=run.state.timestamp.isoformat(timespec="seconds") if run.state else "?",
            candidate=_tag_value(run.tags, "candidate:"),
            verdict=_tag_value(run.tags, "verdict:"),
        )
        for run in runs
    ]


class AutomationFileError(ValueError):
    """An automation file that is not a valid Prefect automation; the message names the file."""


def load_automation(path: Path, block_id: str) -> AutomationCore:
    """One automation file as an AutomationCore with its notification block set; errors name the file."""
    from tailguard.pipeline import params_error

    text = path.read_text().replace("${TAILGUARD_NOTIFY_BLOCK_ID}", block_id)
    try:
        return AutomationCore.model_validate_json(text)
    except ValidationError as err:
        raise AutomationFileError(f"{path}: {params_error(err)}") from None


def install_automations(folder: Path, block_id: str) -> list[tuple[str, str]]:
    """Create (or replace, by name) every automation in folder/*.json; returns (name, id) of each."""
    wanted = [load_automation(path, block_id) for path in sorted(folder.glob("*.json"))]
    created = []
    with get_client(sync_client=True) as client:
        for automation in wanted:
            for old in client.read_automations_by_name(automation.name):
                client.delete_automation(old.id)
            created.append((automation.name, str(client.create_automation(automation))))
    return created
