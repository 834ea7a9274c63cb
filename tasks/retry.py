"""Retry only transient I/O failures (a refused batch or a lost conditional write must not be retried)."""

from __future__ import annotations


def transient_io(task, task_run, state) -> bool:
    """True when the failure is a transient store/network error worth another try."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify, not handle
        from tailguard_tasks.locks import PromotionLockTimeout

        from tailguard.store import StoreError

        if isinstance(
            exc, PromotionLockTimeout
        ):  # it already waited its full timeout: retrying only waits longer
            return False
        return isinstance(exc, (ConnectionError, TimeoutError)) or (
            isinstance(exc, StoreError) and getattr(exc, "transient", False)
        )
    return False
