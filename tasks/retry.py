"""The task decorators every tailguard task uses, and the rule that retries only transient I/O failures.

A refused batch, a lost conditional write or a promotion lock that timed out must never be retried: only a
store or network error the store marks transient is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

F = TypeVar("F", bound=Callable[..., Any])

# Two retries 2 s apart: an S3 throttle or a dropped connection clears within seconds; a store that is
# still down after ~4 s is down, and the run fails with the store's own error instead of waiting.
IO_RETRIES = 2
IO_RETRY_DELAY_S = 2


def transient_io(task, task_run, state) -> bool:
    """True when the failure is a transient store/network error worth another try."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify, not handle
        from tailguard_tasks.locks import PromotionLockTimeout

        from tailguard.store import StoreError

        if isinstance(exc, PromotionLockTimeout):  # it already waited its full timeout: retrying only waits
            return False
        return isinstance(exc, (ConnectionError, TimeoutError)) or (
            isinstance(exc, StoreError) and getattr(exc, "transient", False)
        )
    return False


def stage(fn: F) -> F:
    """A task that computes (no retry: the same inputs fail the same way). Never cached: inputs are frames
    and run contexts, and a rerun must recompute."""
    return task(cache_policy=NO_CACHE)(fn)


def io_stage(fn: F) -> F:
    """A task that reads or writes the store: retried IO_RETRIES times, IO_RETRY_DELAY_S apart, only for
    transient I/O failures (transient_io)."""
    return task(
        cache_policy=NO_CACHE,
        retries=IO_RETRIES,
        retry_delay_seconds=IO_RETRY_DELAY_S,
        retry_condition_fn=transient_io,
    )(fn)
