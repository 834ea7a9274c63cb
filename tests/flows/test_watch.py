"""Issue 16 item 1 under real Prefect: the watcher emits exactly one `tailguard.batch.ready` event per
complete batch (read back from the server's events API), none for a half-written or repeated drop."""

from __future__ import annotations

import time

from tailguard.arrival import MARKER
from tailguard.store import open_store

PART = b"query,item_id,item_title,label\ndrill,0007,cordless drill,1\n"


def _events(resource_id: str, want: int, timeout: float = 20.0) -> list:
    """Events about this resource, read back through the API (events persist asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(event=EventNameFilter(name=["tailguard.batch.ready"]),
                      resource=EventResourceFilter(id=[resource_id]))  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=flt, limit=50).events  # the server caps it at 50
        if len(events) >= want or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_watcher_emits_one_event_per_complete_batch(tmp_path):
    from tailguard_flows.watch import watch_incoming

    incoming, store = tmp_path / "incoming", str(tmp_path / "store")
    drop = open_store(str(incoming))
    drop.put_bytes("w01/part-1.csv", PART)
    assert watch_incoming(incoming=str(incoming), store=store) == []  # first part alone: nothing

    drop.put_bytes("w01/part-2.csv", PART.replace(b"0007", b"0008"))
    drop.put_bytes(f"w01/{MARKER}", b"")
    (sent,) = watch_incoming(incoming=str(incoming), store=store)
    assert sent["uri"] == f"{drop.uri}/w01"
    assert watch_incoming(incoming=str(incoming), store=store) == []  # same files: none
    for key in ("part-1.csv", "part-2.csv"):
        drop.put_bytes(f"w01-again/{key}", drop.get_bytes(f"w01/{key}"))
    drop.put_bytes(f"w01-again/{MARKER}", b"")
    assert watch_incoming(incoming=str(incoming), store=store) == []  # same content, new folder: none

    (event,) = _events(f"tailguard.batch.{sent['fingerprint']}", want=1)
    time.sleep(1.0)  # a second event, had one been sent, would have arrived by now
    assert len(_events(f"tailguard.batch.{sent['fingerprint']}", want=2, timeout=1.0)) == 1
    assert str(event.id) == sent["event_id"]
    assert event.payload["uri"] == sent["uri"] and event.payload["batch_id"] == sent["batch_id"]
