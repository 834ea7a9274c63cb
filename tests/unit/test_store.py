"""One suite for LocalStore and S3Store (moto_server over HTTP): same keys, errors and conditional writes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tailguard.store import (
    ConditionalWritesIgnored,
    KeyNotFound,
    LocalStore,
    PreconditionFailed,
    S3Store,
    StoreError,
    is_remote,
    open_store,
    split_uri,
    tree_digest,
)


def test_bytes_round_trip_and_listing(store):
    store.put_bytes("a/b/one.txt", b"one")
    store.put_bytes("a/two.bin", b"\x00\x01")
    store.put_bytes("z.txt", b"z")
    assert store.get_bytes("a/b/one.txt") == b"one"
    assert store.exists("a/two.bin") and not store.exists("a/missing")
    assert store.list_keys() == ["a/b/one.txt", "a/two.bin", "z.txt"]
    assert store.list_keys("a/") == ["a/b/one.txt", "a/two.bin"]
    store.put_bytes("z.txt", b"zz")  # overwrite
    assert store.get_bytes("z.txt") == b"zz"
    store.delete("z.txt")
    store.delete("z.txt")  # deleting an absent key is fine
    assert not store.exists("z.txt")


def test_missing_key_is_key_not_found_and_names_key(store):
    with pytest.raises(KeyNotFound, match="nope/x.json") as info:
        store.get_bytes("nope/x.json")
    assert isinstance(info.value, KeyError)
    assert store.read_versioned("nope/x.json") is None


def test_bad_keys_are_refused(store):
    for key in ("", "/abs", "a/../b", "a//b", ".tailguard-lock-x"):
        with pytest.raises(StoreError, match="invalid store key"):
            store.put_bytes(key, b"x")


def test_dirs_round_trip(store, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "w.safetensors").write_bytes(b"w" * 1000)
    (src / "sub" / "cfg.json").write_text("{}")
    keys = store.upload_dir(src, "models/m/versions/v1/model")
    assert keys == ["models/m/versions/v1/model/sub/cfg.json", "models/m/versions/v1/model/w.safetensors"]
    out = tmp_path / "out"
    paths = store.download_dir("models/m/versions/v1/model", out)
    assert sorted(p.relative_to(out).as_posix() for p in paths) == ["sub/cfg.json", "w.safetensors"]
    assert (out / "w.safetensors").read_bytes() == b"w" * 1000
    store.get_file("models/m/versions/v1/model/sub/cfg.json", tmp_path / "deep" / "cfg.json")
    assert (tmp_path / "deep" / "cfg.json").read_text() == "{}"
    with pytest.raises(KeyNotFound):
        store.get_file("models/m/none", tmp_path / "none")


def test_conditional_write_if_absent_then_if_match(store):
    etag1 = store.put_conditional("p.json", b"v1", None)
    with pytest.raises(PreconditionFailed):
        store.put_conditional("p.json", b"other", None)  # already exists
    data, etag = store.read_versioned("p.json")
    assert (data, etag) == (b"v1", etag1)
    etag2 = store.put_conditional("p.json", b"v2", etag)
    assert etag2 != etag1
    with pytest.raises(PreconditionFailed):
        store.put_conditional("p.json", b"v3", etag1)  # stale etag loses
    assert store.get_bytes("p.json") == b"v2"
    with pytest.raises(PreconditionFailed):
        store.put_conditional("absent.json", b"x", etag2)  # If-Match on a missing key


def test_racing_conditional_writers_have_exactly_one_winner(store):
    results: list[str] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            store.put_conditional("race.json", f"writer-{i}".encode(), None)
            results.append(f"writer-{i}")
        except PreconditionFailed:
            results.append("lost")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r != "lost"]
    assert len(results) == 8 and len(winners) == 1
    assert store.get_bytes("race.json").decode() == winners[0]


def test_tree_digest_changes_with_content_and_respects_exclude(store):
    store.put_bytes("m/a", b"1")
    store.put_bytes("m/audit/x", b"log")
    before = tree_digest(store, "m/", exclude_prefix="m/audit/")
    store.put_bytes("m/audit/y", b"more log")
    assert tree_digest(store, "m/", exclude_prefix="m/audit/") == before
    store.put_bytes("m/a", b"2")
    assert tree_digest(store, "m/", exclude_prefix="m/audit/") != before


def test_open_store_selects_backend(tmp_path, s3_env, monkeypatch):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    s3 = open_store("s3://bucket-x/some/prefix")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("bucket-x", "some/prefix")
    assert s3.endpoint == s3_env  # AWS_ENDPOINT_URL honoured by boto3 itself
    monkeypatch.setenv("TAILGUARD_STORE", str(tmp_path / "configured"))
    assert open_store("").uri == str((tmp_path / "configured").resolve())
    with pytest.raises(StoreError, match="unsupported store URI"):
        open_store("gs://bucket/x")


def test_the_store_scheme_is_parsed_in_one_place(tmp_path):
    """is_remote / split_uri are what data.py, model.py and the CLI ask instead of parsing s3:// each."""
    assert is_remote("s3://bucket/a/b.csv") and is_remote("S3://bucket") and is_remote("s3://bucket/")
    assert not any(is_remote(u) for u in (str(tmp_path), f"file://{tmp_path}", "bucket/x", "", "gs://b/x"))
    assert split_uri("s3://bucket/a/b.csv") == ("bucket", "a/b.csv")
    assert split_uri("s3://bucket") == ("bucket", "")
    assert split_uri("s3://bucket/dir/") == ("bucket", "dir/")  # the key as written
    assert split_uri("s3://bucket/a#b?c.csv") == ("bucket", "a#b?c.csv")  # both are legal in S3 keys
    for bad in ("s3://", "s3:///key", str(tmp_path), "gs://bucket/x"):
        with pytest.raises(StoreError, match="s3://bucket/prefix"):
            split_uri(bad)
    with pytest.raises(StoreError, match="has no bucket"):
        open_store("s3:///key")


def test_local_store_hides_bookkeeping_files(tmp_path):
    store = LocalStore(tmp_path)
    store.put_conditional("models/m/production.json", b"{}", None)
    assert store.list_keys() == ["models/m/production.json"]
    assert any(p.name.startswith(".tailguard-lock-") for p in Path(tmp_path, "models/m").iterdir())


def test_s3_errors_name_bucket_and_key(s3_env):
    missing_bucket = S3Store("no-such-bucket-here", "p", max_attempts=1)
    with pytest.raises(StoreError, match="no-such-bucket-here") as info:
        missing_bucket.put_bytes("k.json", b"x")
    assert info.value.bucket == "no-such-bucket-here" and info.value.key == "k.json"
    assert not info.value.transient


def test_s3_unreachable_is_a_clear_transient_error(s3_env, monkeypatch, procs):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{procs.free_port()}")  # nothing listens there
    store = S3Store("bucket", "p", max_attempts=2, connect_timeout=1)
    with pytest.raises(StoreError, match="unreachable") as info:
        store.get_bytes("models/m/production.json")
    assert info.value.transient and info.value.key == "models/m/production.json"


def test_open_store_reuses_one_s3_client_until_the_aws_environment_changes(s3_env, monkeypatch):
    """A boto3 client costs ~0.1 s to create and a retrain opens its store ~20 times."""
    first = open_store("s3://bucket-x/p")
    assert open_store("s3://bucket-x/p") is first
    assert open_store("s3://bucket-x/other") is not first
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    moved = open_store("s3://bucket-x/p")
    assert moved is not first and moved.endpoint == "http://127.0.0.1:9"


# --- endpoints that ignore conditional headers (issue 12 item 8) -------------------------------------------


def drop_headers(store: S3Store, *headers: str) -> list[str]:
    """Make the store's client behave like an S3-compatible server that ignores these PutObject headers:
    a botocore before-sign handler deletes them from every PutObject request. Returns what it dropped."""
    dropped: list[str] = []

    def handler(request, **_):
        for header in headers:
            if header in request.headers:
                del request.headers[header]
                dropped.append(header)

    store.client.meta.events.register("before-sign.s3.PutObject", handler)
    return dropped


def test_conditional_write_probe_passes_on_stores_that_enforce_them(store):
    store.require_conditional_writes()
    store.require_conditional_writes()  # cached: the probe runs once per store
    assert store.list_keys("") == []  # the scratch key is gone


def test_conditional_write_probe_runs_once_per_s3_store(s3_uri):
    store = S3Store(*s3_uri[5:].split("/", 1))
    puts: list[str] = []
    # before-send handlers must return None, or their value replaces the HTTP response.
    events = store.client.meta.events
    events.register("before-send.s3.PutObject", lambda request, **_: puts.append(request.url))
    store.require_conditional_writes()
    store.require_conditional_writes()
    assert len(puts) == 3  # write-if-absent twice, then If-Match on a wrong etag: only the first succeeds


@pytest.mark.parametrize(
    ("dropped", "named"),
    [
        (("If-None-Match", "If-Match"), "If-None-Match"),  # the example: both ignored
        (("If-None-Match",), "If-None-Match"),  # honours If-Match only
        (("If-Match",), "If-Match"),  # honours write-if-absent only: the pointer flip is still unsafe
    ],
)
def test_endpoint_ignoring_conditional_headers_is_refused_clearly(s3_uri, dropped, named):
    store = S3Store(*s3_uri[5:].split("/", 1))
    seen = drop_headers(store, *dropped)
    # Today's fault, reproduced: the second write-if-absent "succeeds" when If-None-Match is dropped.
    if "If-None-Match" in dropped:
        store.put_conditional("pointer.json", b"first", None)
        store.put_conditional("pointer.json", b"second", None)
        assert store.get_bytes("pointer.json") == b"second"
    with pytest.raises(ConditionalWritesIgnored) as info:
        store.require_conditional_writes()
    message = str(info.value)
    assert f"ignores {named} on PutObject" in message and store.endpoint in message
    assert "Promotion and rollback are refused" in message and set(seen) <= set(dropped)
    assert not [k for k in store.list_keys("") if "probe" in k]  # scratch key removed
