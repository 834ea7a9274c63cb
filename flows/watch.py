"""The watcher: find complete new batches under the incoming prefix and emit one Prefect event for each.

The `watch-incoming` deployment runs it every few minutes; the `retrain-weekly` deployment's trigger
(prefect.yaml) starts a retrain for each `tailguard.batch.ready` event with the event's URI as `data`.
The rule for a complete batch and the once-per-content claim are in tailguard.arrival.
"""

from __future__ import annotations

import argparse
import json
import sys

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.events import emit_event

from tailguard import arrival
from tailguard.store import open_store

EVENT = "tailguard.batch.ready"


def _claimant() -> str:
    try:
        return f"flow-run/{get_run_context().flow_run.id}"
    except Exception:  # noqa: BLE001 - outside a flow run there is no id
        return "watch-incoming"


@flow(name="watch-incoming", log_prints=True)
def watch_incoming(incoming: str, store: str = "") -> list[dict]:
    """Claim and announce every complete, never-seen batch under `incoming` (folder or s3:// prefix).

    store: where the claims live (default: the tailguard store, TAILGUARD_STORE). Returns one dict per
    event sent: uri, batch_id, fingerprint, event_id. A batch whose event could not be sent is released,
    so the next run announces it again.
    """
    logger = get_run_logger()
    state = open_store(store)
    found = arrival.scan(incoming, state, _claimant())
    for problem in found.problems:
        logger.warning("batch folder not announced: %s", problem)
    if found.incomplete:
        logger.info(
            "%d folder(s) without %s yet: %s", len(found.incomplete), arrival.MARKER, found.incomplete[:5]
        )
    sent = []
    for batch in found.ready:
        try:
            event = emit_event(
                event=EVENT,
                resource={
                    "prefect.resource.id": f"tailguard.batch.{batch.fingerprint}",
                    "prefect.resource.name": batch.batch_id,
                },  # fmt: skip
                payload={"uri": batch.uri, "batch_id": batch.batch_id, "fingerprint": batch.fingerprint},
            )
        except Exception:
            arrival.release(state, batch.fingerprint)
            raise
        if event is None:  # events are off in this Prefect setup: leave the batch for a run that can send
            arrival.release(state, batch.fingerprint)
            logger.warning("could not emit %s for %s (events disabled); released the claim", EVENT, batch.uri)
            continue
        arrival.mark_emitted(state, batch.fingerprint, str(event.id))
        logger.info("announced %s (%s) as event %s", batch.uri, batch.batch_id, event.id)
        sent.append({"uri": batch.uri, "batch_id": batch.batch_id, "fingerprint": batch.fingerprint,
                     "event_id": str(event.id)})  # fmt: skip
    return sent


def main(argv: list[str] | None = None) -> int:
    """`python -m tailguard_flows.watch --incoming PREFIX` runs one pass."""
    from tailguard.runtime import configure_embedded

    configure_embedded()  # a local run: make PREFECT_HOME now
    parser = argparse.ArgumentParser(
        prog="python -m tailguard_flows.watch", description=watch_incoming.__doc__
    )
    parser.add_argument("--incoming", required=True, help="folder or s3:// prefix holding batch folders")
    parser.add_argument("--store", default="", help="where claims live (default TAILGUARD_STORE)")
    args = parser.parse_args(argv)
    print(json.dumps(watch_incoming(incoming=args.incoming, store=args.store), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
