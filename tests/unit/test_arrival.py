"""Issue 16 item 1: complete batches are found by their _SUCCESS marker and claimed once per content,
against a local folder and the S3 API (moto_server)."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from tailguard.arrival import MARKER, ReadyBatch, batch_folders, claim, mark_emitted, release, scan, state_key
from tailguard.data import batch_id_for, fingerprint_files, materialize
from tailguard.store import S3Store, open_store

PART_1 = b"query,item_id,item_title,label\ndrill,0007,cordless drill,1\n"
PART_2 = b"query,item_id,item_title,label\nNA,0008,hammer,0\n"


@pytest.fixture(params=["local", "s3"])
def incoming(request, tmp_path) -> str:
    """An empty incoming prefix: a local folder, or s3://bucket/incoming on the moto server."""
    if request.param == "local":
        (tmp_path / "incoming").mkdir()
        return str(tmp_path / "incoming")
    request.getfixturevalue("s3_env")
    bucket = f"tg-in-{uuid.uuid4().hex[:10]}"
    S3Store(bucket).ensure_bucket()
    return f"s3://{bucket}/incoming"


@pytest.fixture
def state(tmp_path):
    return open_store(str(tmp_path / "store"))


def _drop(incoming: str, key: str, data: bytes) -> None:
    open_store(incoming).put_bytes(key, data)


def test_two_part_drop_counts_only_once_complete_and_once_only(incoming, state, tmp_path):
    _drop(incoming, "2026-w01/part-1.csv", PART_1)
    first = scan(incoming, state, "watcher-a")
    assert first.ready == [] and first.incomplete == [f"{open_store(incoming).uri}/2026-w01"]
    assert state.list_keys("incoming-state/") == []  # nothing claimed while it is being written

    _drop(incoming, "2026-w01/part-2.csv", PART_2)
    _drop(incoming, f"2026-w01/{MARKER}", b"")
    second = scan(incoming, state, "watcher-a")
    (ready,) = second.ready
    assert ready.uri.endswith("/2026-w01") and ready.files == ["part-1.csv", "part-2.csv"]
    # The fingerprint is the one retrain computes when it reads the URI: the batch ids agree.
    fp = fingerprint_files(materialize(ready.uri, tmp_path / "read"))
    assert (ready.fingerprint, ready.batch_id) == (fp["sha256"], batch_id_for(fp))
    record = json.loads(state.get_bytes(state_key(ready.fingerprint)))
    assert record["uri"] == ready.uri and record["claimed_by"] == "watcher-a"

    third = scan(incoming, state, "watcher-b")
    assert third.ready == [] and third.seen == [ready.uri]
    # The same files again under another folder name: same content, claimed by nobody.
    for name, data in (("part-1.csv", PART_1), ("part-2.csv", PART_2), (MARKER, b"")):
        _drop(incoming, f"2026-w01-resent/{name}", data)
    again = scan(incoming, state, "watcher-b")
    assert again.ready == [] and len(again.seen) == 2


def test_new_content_is_a_new_batch_and_a_marker_without_data_is_reported(incoming, state):
    _drop(incoming, f"empty/{MARKER}", b"")
    _drop(incoming, MARKER, b"")  # a marker loose under the prefix is no batch
    _drop(incoming, "loose.csv", PART_1)
    found = scan(incoming, state, "w")
    assert found.ready == [] and len(found.problems) == 1
    assert "/empty" in found.problems[0] and "has_data_files" in found.problems[0]
    _drop(incoming, "empty/data.csv", PART_2)  # fixed: now it is claimed
    (ready,) = scan(incoming, state, "w").ready
    assert ready.uri.endswith("/empty")
    _drop(incoming, "other/data.csv", PART_2 + b"NA,0009,saw,1\n")
    _drop(incoming, f"other/{MARKER}", b"")
    (other,) = scan(incoming, state, "w").ready
    assert other.uri.endswith("/other") and other.fingerprint != ready.fingerprint


def test_complete_and_incomplete_folders_are_listed_apart(incoming):
    _drop(incoming, "a/x.csv", PART_1)
    _drop(incoming, f"b/{MARKER}", b"")
    _drop(incoming, "b/y.parquet", b"PAR1")
    _drop(incoming, "c/_SUCCESS.tmp", b"")  # a marker still being renamed into place is not the marker
    complete, incomplete = batch_folders(incoming)
    base = open_store(incoming).uri
    assert complete == [f"{base}/b"] and incomplete == [f"{base}/a", f"{base}/c"]


def test_racing_watchers_claim_a_batch_exactly_once(incoming, state):
    store = (
        open_store(str(state.uri)) if not incoming.startswith("s3://") else open_store(incoming + "-state")
    )
    batch = ReadyBatch(uri="x", fingerprint="f" * 64, batch_id="b-" + "f" * 16)
    wins: list[str] = []
    start = threading.Barrier(8)

    def race(name: str) -> None:
        start.wait()
        if claim(store, batch, name):
            wins.append(name)

    threads = [threading.Thread(target=race, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert json.loads(store.get_bytes(state_key(batch.fingerprint)))["claimed_by"] == wins[0]
    mark_emitted(store, batch.fingerprint, "evt-1")
    assert json.loads(store.get_bytes(state_key(batch.fingerprint)))["event_id"] == "evt-1"
    release(store, batch.fingerprint)  # an event that could not be sent: the next pass claims it again
    assert claim(store, batch, "w-next")
