"""The per-model promotion lock: one Prefect global concurrency slot (`promote-<model>`), stale slots freed.

The retrain flow's promotion, the rollback flow and `tailguard promote` / `rollback` (when a Prefect server
is configured) all take it, so two of them never flip one model's production.json at once. It lives here,
outside the library, because tailguard/ never imports prefect.

A holder killed with -9 never releases its slot. A long-running `prefect server` revokes it once the
holder's lease lapses (300 s, Prefect's lease_duration), but the embedded server runs no lease
service and keeps leases in memory, so there the slot stayed taken forever (issue 13: 4 of 4 crash
points, still blocked after 481 s). Each holder therefore records itself (host, pid, since) in a Prefect
variable; a waiter frees a slot whose holder is a dead process on this host, or that has been held longer
than STALE_AFTER_S. The conditional write of production.json stays the real guard: the lock only keeps
promotions of one model in a queue.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from prefect.concurrency.sync import concurrency

# A promotion holds the slot for seconds (verify + flip + audit: ~0.3 s on a local store, ~10 s for a
# 90 MB MiniLM on S3); Prefect's own lease lapses after 300 s, so a holder older than that is gone.
STALE_AFTER_S = 300.0
# How often a waiter looks for a stale holder while it waits (s).
POLL_S = 10.0


class PromotionLockTimeout(TimeoutError):
    """The model's promotion slot was not granted in time; nothing was changed (not retried by tasks)."""


def lock_name(model_name: str) -> str:
    """The concurrency limit's name for a model."""
    return f"promote-{model_name}"


def holder_variable(name: str) -> str:
    """The Prefect variable recording who holds the lock `name` (variable names allow [a-z0-9_-] only)."""
    safe = re.sub(r"[^a-z0-9_-]", "_", name.lower())[:200]
    return f"tailguard-lock-{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def ensure_limit(name: str) -> None:
    """Create the one-slot limit if missing (embedded runs have none; two creators racing is harmless)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.upsert_global_concurrency_limit_by_name(name, limit=1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_reason(name: str, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the taken slot of lock `name` is stale (its holder is gone), or None when it is free or live."""
    from prefect.client.orchestration import get_client
    from prefect.variables import Variable

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    if limit.active_slots < 1:
        return None
    holder = Variable.get(holder_variable(name), default=None) or {}
    since = holder.get("since") or (limit.updated.isoformat() if limit.updated else None)
    age = (datetime.now(UTC) - datetime.fromisoformat(since)).total_seconds() if since else 0.0
    pid, host = holder.get("pid"), holder.get("host")
    if pid and host == socket.gethostname() and not _pid_alive(int(pid)):
        return f"its holder (pid {pid} on {host}, since {since}) no longer runs"
    if age > stale_after_s:
        who = f"pid {pid} on {host}" if pid else "an unrecorded holder"
        return f"held by {who} for {age:.0f} s, longer than a promotion takes ({stale_after_s:g} s)"
    return None


def release_stale(name: str, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Free the slot of lock `name` when its holder is gone; returns why it was freed, or None."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from prefect.variables import Variable

    why = stale_reason(name, stale_after_s)
    if why is None:
        return None
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
    Variable.unset(holder_variable(name))
    return why


def _acquire(name: str, timeout_s: float | None, stack: contextlib.ExitStack) -> None:
    """Take the slot within timeout_s (None: forever), freeing a stale one on the way."""
    from prefect.logging import get_logger

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        freed = release_stale(name)
        if freed:
            get_logger("tailguard.locks").warning("freed the stale promotion lock %r: %s", name, freed)
        wait = POLL_S if deadline is None else min(POLL_S, max(deadline - time.monotonic(), 0.0))
        try:
            stack.enter_context(concurrency(name, occupy=1, strict=True, timeout_seconds=max(wait, 0.5)))
            return
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise


@contextlib.contextmanager
def promotion_lock(model_name: str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the model's one promotion slot for the block.

    timeout_s: seconds to wait for the slot (None: settings.promotion_lock_timeout_s, 0 there: forever).
    Raises PromotionLockTimeout (a TimeoutError) naming the lock when it is not granted in time; errors
    inside the block pass through untouched. A slot left by a dead holder is freed (see module doc).
    """
    from prefect.variables import Variable

    from tailguard.settings import get_settings

    if timeout_s is None:
        timeout_s = get_settings().promotion_lock_timeout_s or None
    name = lock_name(model_name)
    ensure_limit(name)
    stack = contextlib.ExitStack()
    try:
        _acquire(name, timeout_s, stack)
    except TimeoutError as err:
        raise PromotionLockTimeout(
            f"the promotion lock {name!r} was not granted within {timeout_s:g} s: another promotion or "
            f"rollback of {model_name!r} holds it (see Concurrency in the Prefect UI; docs/OPERATIONS.md "
            "'Promotion lock' says how to free it); nothing was changed"
        ) from err
    with stack:
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": datetime.now(UTC).isoformat()}
        Variable.set(holder_variable(name), holder, overwrite=True)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # the slot release below is what matters
                Variable.unset(holder_variable(name))
