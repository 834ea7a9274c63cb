"""Data arrival: find complete new batches under an incoming prefix and claim each content once.

The rule for "complete": a batch is a folder directly under the incoming prefix (local folder or
s3://bucket/prefix) that holds a `_SUCCESS` object. Exporters (Spark, Hadoop, `aws s3 cp` scripts) write
the data files first and the empty `_SUCCESS` marker last, so a folder without it is still being written
and is never read; a file added after the marker is a new drop (another fingerprint). The watcher flow
(flows/watch.py) composes these functions with Prefect's event API; this module imports no Prefect.

Deduplication is by content: the fingerprint is data.fingerprint_files' digest over the batch's data
files, the same one retrain derives the batch id from, so the same files dropped again (under any folder
name) are claimed by nobody. The claim is `incoming-state/<fingerprint>.json` in the tailguard store,
written with put_conditional(..., None) (If-None-Match: * on S3, a locked write-if-absent locally):
of two watchers racing on one batch exactly one wins and emits.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tailguard.store import ArtifactStore, PreconditionFailed, open_store

MARKER = "_SUCCESS"
STATE_PREFIX = "incoming-state"


@dataclass(frozen=True)
class ReadyBatch:
    """A complete batch this watcher claimed: the URI retrain reads, and its content fingerprint."""

    uri: str
    fingerprint: str  # hex sha256 over the data files' names, sizes and sha256 (data.fingerprint_files)
    batch_id: str  # 'b-' + 16 hex, as retrain names the same content
    files: list[str] = field(default_factory=list)


@dataclass
class Scan:
    """One pass over the incoming prefix: what was claimed, what was already seen, what is incomplete,
    and folders that could not be read (each with one line saying why)."""

    ready: list[ReadyBatch] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def batch_folders(incoming: str) -> tuple[list[str], list[str]]:
    """(complete, incomplete) batch folder URIs directly under `incoming`, each sorted.

    Raises StoreError when the prefix cannot be listed (e.g. a missing bucket).
    """
    store = open_store(incoming)
    names: dict[str, bool] = {}
    for key in store.list_keys(""):
        folder, sep, rest = key.partition("/")
        if not sep:  # a loose file directly under the prefix is no batch folder
            continue
        names[folder] = names.get(folder, False) or rest == MARKER
    base = store.uri.rstrip("/")
    complete = sorted(f"{base}/{name}" for name, done in names.items() if done)
    incomplete = sorted(f"{base}/{name}" for name, done in names.items() if not done)
    return complete, incomplete


def fingerprint_batch(uri: str, scratch: Path) -> dict:
    """The content fingerprint of a batch folder ({'files': [...], 'sha256': hex}), read the way retrain
    reads it (data.materialize: s3:// objects are downloaded to scratch). Raises UnreadableInput (a
    ContractError) when the folder holds no data file or a file cannot be read."""
    from tailguard.data import fingerprint_files, materialize

    return fingerprint_files(materialize(uri, scratch))


def state_key(fingerprint: str) -> str:
    """The claim's key in the tailguard store."""
    return f"{STATE_PREFIX}/{fingerprint}.json"


def claim(state: ArtifactStore, batch: ReadyBatch, claimant: str) -> bool:
    """Write the claim if nobody has (put_conditional with expected_etag None); True when this call won."""
    record = {
        "uri": batch.uri,
        "batch_id": batch.batch_id,
        "fingerprint": batch.fingerprint,
        "files": batch.files,
        "claimed_by": claimant,
        "claimed_at": datetime.now(UTC).isoformat(),
    }
    try:
        state.put_conditional(state_key(batch.fingerprint), json.dumps(record, indent=2).encode(), None)
    except PreconditionFailed:
        return False
    return True


def release(state: ArtifactStore, fingerprint: str) -> None:
    """Drop a claim whose event could not be sent, so the next pass claims the batch again."""
    state.delete(state_key(fingerprint))


def mark_emitted(state: ArtifactStore, fingerprint: str, event_id: str) -> None:
    """Add the emitted event's id to the claim (for the audit of which event started which run)."""
    found = state.read_versioned(state_key(fingerprint))
    if found is None:
        return
    record = {**json.loads(found[0]), "event_id": event_id, "emitted_at": datetime.now(UTC).isoformat()}
    state.put_conditional(state_key(fingerprint), json.dumps(record, indent=2).encode(), found[1])


def scan(incoming: str, state: ArtifactStore, claimant: str) -> Scan:
    """Find the complete batches under `incoming` whose content no watcher has claimed, and claim them.

    Every complete folder is fingerprinted on each pass (s3:// folders are downloaded to a scratch folder
    removed afterwards), because a folder name says nothing about its content. A folder that cannot be
    read is reported in `problems` and left unclaimed, so it is retried once fixed.
    """
    from tailguard.contract import ContractError
    from tailguard.data import batch_id_for

    complete, incomplete = batch_folders(incoming)
    out = Scan(incomplete=incomplete)
    for uri in complete:
        scratch = Path(tempfile.mkdtemp(prefix="tailguard-arrival-"))
        try:
            fp = fingerprint_batch(uri, scratch)
        except ContractError as exc:
            out.problems.append(f"{uri}: {exc}")
            continue
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        batch = ReadyBatch(uri=uri, fingerprint=fp["sha256"], batch_id=batch_id_for(fp),
                           files=[f["name"] for f in fp["files"]])  # fmt: skip
        if claim(state, batch, claimant):
            out.ready.append(batch)
        else:
            out.seen.append(uri)
    return out
