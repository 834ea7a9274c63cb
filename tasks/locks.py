"""The per-model promotion lock: one Prefect global concurrency slot (`promote-<model>`).

The retrain flow's promotion, the rollback flow and `tailguard promote` / `rollback` (when a Prefect server
is configured) all take it, so two of them never flip one model's production.json at once. It lives here,
outside the library, because tailguard/ never imports prefect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect.concurrency.sync import concurrency


def lock_name(model_name: str) -> str:
    """The concurrency limit's name for a model."""
    return f"promote-{model_name}"


def ensure_limit(name: str) -> None:
    """Create the one-slot limit if missing (embedded runs have none; two creators racing is harmless)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.upsert_global_concurrency_limit_by_name(name, limit=1)


@contextlib.contextmanager
def promotion_lock(model_name: str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the model's one promotion slot for the block.

    timeout_s: seconds to wait for the slot (None: settings.promotion_lock_timeout_s, 0 there: forever).
    Raises TimeoutError naming the lock when it is not granted in time; errors inside the block pass
    through untouched.
    """
    from tailguard.settings import get_settings

    if timeout_s is None:
        timeout_s = get_settings().promotion_lock_timeout_s or None
    name = lock_name(model_name)
    ensure_limit(name)
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(concurrency(name, occupy=1, strict=True, timeout_seconds=timeout_s))
    except TimeoutError as err:
        raise TimeoutError(
            f"the promotion lock {name!r} was not granted within {timeout_s:g} s: another promotion or "
            f"rollback of {model_name!r} holds it (see Concurrency in the Prefect UI); nothing was changed"
        ) from err
    with stack:
        yield
