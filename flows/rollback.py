"""The rollback flow: point production back at an earlier complete version (a deployment in prefect.yaml)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.registry import rollback_production


@flow(name="rollback", log_prints=True)
def rollback(to: str = "", by: str = "", store: str = "", model_name: str = "") -> dict:
    """Roll production back to `to`, or to the version before the production one when empty."""
    pointer = rollback_production(to or None, by or "rollback-flow", store, model_name)
    get_run_logger().info("production of %s is now %s", pointer["model_name"], pointer["version"])
    return pointer


if __name__ == "__main__":
    import sys

    print(rollback(to=sys.argv[1] if len(sys.argv) > 1 else ""))
