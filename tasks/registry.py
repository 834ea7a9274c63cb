"""Registry tasks (rollback) and the Prefect client call that answers a paused review."""

from __future__ import annotations

from uuid import UUID

from tailguard_tasks.retry import io_stage


def _registry(store_uri: str = "", model_name: str = ""):
    from tailguard.registry import Registry
    from tailguard.settings import get_settings
    from tailguard.store import open_store

    settings = get_settings()
    return Registry(open_store(store_uri or settings.store_uri), model_name or settings.model_name)


@io_stage
def current_production(store_uri: str = "", model_name: str = "") -> str:
    """The production version now ('' before the first promotion): what a rollback expects to undo."""
    pointer = _registry(store_uri, model_name).production()
    return pointer["version"] if pointer else ""


@io_stage
def rollback_production(
    to: str | None,
    by: str,
    store_uri: str = "",
    model_name: str = "",
    expected_current: str = "",
    request_id: str = "",
) -> dict:
    """Point production back at `to` (default: the previous production version); returns the pointer.

    A retry after the flip landed returns the landed pointer (same request_id) instead of rolling back
    again. Holds the model's promotion lock, like the retrain flow's promotion and the CLI."""
    from tailguard_tasks.locks import promotion_lock

    registry = _registry(store_uri, model_name)
    with promotion_lock(registry.model_name):
        return registry.rollback(
            to=to, by=by, expected_current=expected_current or None, request_id=request_id or None,
            source="rollback-flow",
        )  # fmt: skip


def resume_review(flow_run_id: str, approve: bool, reviewer: str, comment: str = "", override: bool = False):
    """Answer a retrain run paused for review (the same form the Prefect UI shows, marked source=cli)."""
    from prefect.flow_runs import resume_flow_run

    run_input = {"approve": approve, "reviewer": reviewer, "comment": comment, "override": override,
                 "source": "cli"}  # fmt: skip
    resume_flow_run(UUID(flow_run_id), run_input=run_input)
