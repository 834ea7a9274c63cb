"""The rollback flow: point production back at an earlier complete version (a deployment in prefect.yaml)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from tailguard_tasks.registry import current_production, rollback_production


class RollbackRefused(ValueError):
    """The rollback request is incomplete (no name); nothing was changed."""


@flow(name="rollback", log_prints=True)
def rollback(
    to: str = "", by: str = "", expected_current: str = "", store: str = "", model_name: str = ""
) -> dict:
    """Roll production back to `to`, or to the version before the production one when empty.

    by: who rolls back (required: a rollback is never audited anonymously). expected_current: the
    production version this rollback undoes; empty pins the one found when the run starts. The run's id
    is the request id: a retried task or a rerun of this flow run never rolls back twice.
    """
    if not by.strip():
        raise RollbackRefused("rollback needs `by`: the name of who rolls back (recorded in the audit)")
    run_id = str(get_run_context().flow_run.id)
    expected = expected_current or current_production(store, model_name)
    pointer = rollback_production(to or None, by, store, model_name, expected, run_id)
    get_run_logger().info("production of %s is now %s", pointer["model_name"], pointer["version"])
    return pointer


if __name__ == "__main__":
    import sys

    print(rollback(to=sys.argv[1] if len(sys.argv) > 1 else "", by=sys.argv[2] if len(sys.argv) > 2 else ""))
