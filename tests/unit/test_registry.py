"""Registry against LocalStore and S3Store (moto_server): versions, pointer flips, audit, faults, races."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tailguard.registry import (
    ChecksumError,
    IncompleteVersion,
    PromotionConflict,
    Registry,
    RegistryError,
)
from tailguard.store import S3Store, StoreError, open_store, tree_digest

PASS = {"promote": True, "reasons": ["all gates passed"]}
FAIL = {"promote": False, "reasons": ["tail recall@10 regressed by 0.04 > 0.02"]}


def make_model(tmp_path: Path, tag: str) -> tuple[Path, dict[str, Path]]:
    """A tiny fake model folder plus metrics and a report folder, distinct per tag."""
    model = tmp_path / f"model-{tag}"
    (model / "tokenizer").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(hashlib.sha256(tag.encode()).digest() * 64)
    (model / "config.json").write_text(json.dumps({"tag": tag}))
    (model / "tokenizer" / "vocab.txt").write_text(f"[PAD]\n{tag}\n")
    reports = tmp_path / f"reports-{tag}"
    reports.mkdir()
    (reports / "classification.html").write_text(f"<html>{tag}</html>")
    metrics = tmp_path / f"metrics-{tag}.json"
    metrics.write_text(json.dumps({"roc_auc": 0.7}))
    return model, {"metrics.json": metrics, "reports": reports}


def add_version(registry: Registry, tmp_path: Path, tag: str, **extra) -> str:
    version = registry.new_version_id()
    model, files = make_model(tmp_path, tag)
    registry.write_version(version, model, files, {"flow_run_id": f"run-{tag}", "decision": PASS, **extra})
    return version


class RecordingStore:
    """Wraps a store, records write order and can fail one chosen write (a crash mid-promotion)."""

    def __init__(self, inner, fail_on: str | None = None):
        self.inner, self.fail_on, self.writes = inner, fail_on, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _write(self, key):
        if self.fail_on and key.endswith(self.fail_on):
            raise RuntimeError(f"simulated crash before writing {key}")
        self.writes.append(key)

    def put_bytes(self, key, data):
        self._write(key)
        self.inner.put_bytes(key, data)

    def put_file(self, key, path):
        self._write(key)
        self.inner.put_file(key, path)

    def put_conditional(self, key, data, expected_etag):
        self._write(key)
        return self.inner.put_conditional(key, data, expected_etag)


def test_write_version_uploads_everything_then_manifest_last(store, tmp_path):
    recorder = RecordingStore(store)
    registry = Registry(recorder, "relevance")
    version = registry.new_version_id()
    model, files = make_model(tmp_path, "a")
    manifest = registry.write_version(
        version,
        model,
        files,
        {  # the keys pipeline.write_candidate writes (tests/flows renders a card from a real run's)
            "flow_run_id": "abc",
            "data": {"batch_id": "b-f00", "uri": "s3://in/batch.csv", "rows": 4000},
            "params": {"epochs": 1, "balance": "random_under"},
            "headline": {"overall/roc_auc": {"candidate": 0.71234, "production": None}},
            "decision": {"promote": True, "reasons": ["all gates passed"]},
            "timings_s": {"train": 1.5},
        },
    )
    prefix = f"models/relevance/versions/{version}/"
    assert recorder.writes[-1] == prefix + "manifest.json"
    assert recorder.writes[-2] == prefix + "model_card.md"
    assert set(manifest["files"]) == {
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer/vocab.txt",
        "metrics.json",
        "reports/classification.html",
        "model_card.md",
    }
    for name, meta in manifest["files"].items():
        assert hashlib.sha256(store.get_bytes(prefix + name)).hexdigest() == meta["sha256"]
    assert manifest["flow_run_id"] == "abc" and manifest["package_version"]
    assert manifest["data"]["batch_id"] == "b-f00" and manifest["version"] == version
    card = store.get_bytes(prefix + "model_card.md").decode()
    assert f"# Model card: relevance {version}" in card and "| epochs | 1 |" in card and "`abc`" in card
    assert "| batch_id | b-f00 |" in card and "| rows | 4000 |" in card
    assert "| overall/roc_auc | 0.7123 | - |" in card and "| train | 1.5 |" in card
    assert "Gate verdict: **promote**" in card
    with pytest.raises(RegistryError, match="immutable"):
        registry.write_version(version, model, files, {})


def test_promote_flips_pointer_and_audits(store, tmp_path):
    registry = Registry(store, "relevance")
    assert registry.production() is None
    v1 = add_version(registry, tmp_path, "a")
    v2 = add_version(registry, tmp_path, "b")
    p1 = registry.promote(v1, approved_by="ana", decision=PASS, comment="first")
    p2 = registry.promote(v2, approved_by="bo", decision=PASS)
    assert registry.production() == p2
    assert (p1["previous"], p2["previous"], p2["history"]) == (None, v1, [v1])
    manifest_bytes = store.get_bytes(f"models/relevance/versions/{v2}/manifest.json")
    assert p2["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    audit = registry.audit()
    assert [(a["action"], a["version"], a["approved_by"]) for a in audit] == [
        ("promote", v1, "ana"),
        ("promote", v2, "bo"),
    ]
    assert audit[0]["decision"] == PASS and audit[0]["comment"] == "first"
    assert all(a["key"].startswith("models/relevance/audit/") for a in audit)
    rows = registry.list_versions()
    assert [(r["version"], r["production"], r["complete"]) for r in rows] == [
        (v1, False, True),
        (v2, True, True),
    ]


def test_failing_gate_needs_override_and_is_recorded(store, tmp_path):
    registry = Registry(store, "relevance")
    v1 = add_version(registry, tmp_path, "a")
    with pytest.raises(RegistryError, match="override"):
        registry.promote(v1, approved_by="ana", decision=FAIL)
    assert registry.production() is None and registry.audit() == []
    pointer = registry.promote(
        v1, approved_by="ana", decision=FAIL, override=True, comment="known flaky slice"
    )
    assert pointer["override"] is True and pointer["gate_passed"] is False
    (record,) = registry.audit()
    assert record["override"] is True and record["decision"] == FAIL


def test_reject_writes_audit_only(store, tmp_path):
    registry = Registry(store, "relevance")
    v1, v2 = add_version(registry, tmp_path, "a"), add_version(registry, tmp_path, "b")
    registry.promote(v1, approved_by="ana", decision=PASS)
    pointer_before = store.read_versioned("models/relevance/production.json")
    registry.reject(v2, by="bo", decision=FAIL, comment="tail got worse")
    assert store.read_versioned("models/relevance/production.json") == pointer_before
    last = registry.audit()[-1]
    assert (last["action"], last["version"], last["rejected_by"], last["comment"]) == (
        "reject",
        v2,
        "bo",
        "tail got worse",
    )


def test_rollback_after_bad_promotion_restores_previous_model_exactly(store, tmp_path):
    registry = Registry(store, "relevance")
    good, bad = add_version(registry, tmp_path, "good"), add_version(registry, tmp_path, "bad")
    registry.promote(good, approved_by="ana", decision=PASS)
    good_pointer_sha = registry.production()["manifest_sha256"]
    good_files = registry.fetch_model("production", tmp_path / "before")
    registry.promote(bad, approved_by="bo", decision=PASS)
    pointer = registry.rollback(by="oncall")
    assert (pointer["version"], pointer["previous"], pointer["action"]) == (good, bad, "rollback")
    assert pointer["manifest_sha256"] == good_pointer_sha and pointer["history"] == []
    restored = registry.fetch_model("production", tmp_path / "after")
    for path in good_files.rglob("*"):
        if path.is_file():
            assert (restored / path.relative_to(good_files)).read_bytes() == path.read_bytes()
    assert registry.audit()[-1]["action"] == "rollback" and registry.audit()[-1]["rolled_back_from"] == bad
    with pytest.raises(RegistryError, match="no previous version"):
        registry.rollback()
    with pytest.raises(RegistryError, match="never production"):
        registry.rollback(to=bad)  # rolled away from: no longer a rollback target


def test_rollback_to_named_version_pops_the_stack(store, tmp_path):
    registry = Registry(store, "relevance")
    v1, v2, v3 = (add_version(registry, tmp_path, tag) for tag in ("a", "b", "c"))
    unreviewed = add_version(registry, tmp_path, "never-promoted")
    for version in (v1, v2, v3):
        registry.promote(version, approved_by="ana", decision=PASS)
    with pytest.raises(RegistryError, match="never production"):
        registry.rollback(to=unreviewed)  # rollback skips review: only former production versions
    pointer = registry.rollback(to=v1, by="oncall")
    assert (pointer["version"], pointer["previous"], pointer["history"]) == (v1, v3, [])
    assert [a["action"] for a in registry.audit()] == ["promote"] * 3 + ["rollback"]
    with pytest.raises(RegistryError, match="already production"):
        registry.promote(v1, approved_by="ana", decision=PASS)  # not mistaken for a retried promotion
    assert len(registry.audit()) == 4


def test_rollback_without_production_is_clear(store):
    with pytest.raises(RegistryError, match="no production model"):
        Registry(store, "relevance").rollback()


def test_corrupted_artifact_is_detected_at_load(store, tmp_path):
    registry = Registry(store, "relevance")
    v1 = add_version(registry, tmp_path, "a")
    registry.promote(v1, approved_by="ana", decision=PASS)
    key = f"models/relevance/versions/{v1}/model/model.safetensors"
    store.put_bytes(key, b"flipped bits")
    with pytest.raises(ChecksumError, match="model/model.safetensors: sha256"):
        registry.fetch_model("production", tmp_path / "dl")
    assert not (tmp_path / "dl" / "model" / "model.safetensors").exists()
    store.delete(key)
    with pytest.raises(ChecksumError, match="model/model.safetensors: missing"):
        registry.fetch_model(v1, tmp_path / "dl2")


def test_tampered_manifest_is_refused_for_production(store, tmp_path):
    registry = Registry(store, "relevance")
    v1 = add_version(registry, tmp_path, "a")
    registry.promote(v1, approved_by="ana", decision=PASS)
    key = f"models/relevance/versions/{v1}/manifest.json"
    manifest = json.loads(store.get_bytes(key))
    manifest["flow_run_id"] = "someone-else"
    store.put_bytes(key, json.dumps(manifest).encode())
    with pytest.raises(ChecksumError, match="does not match"):
        registry.fetch_model("production", tmp_path / "dl")


def test_crash_after_upload_before_flip_leaves_production_intact(store, tmp_path):
    registry = Registry(store, "relevance")
    v1 = add_version(registry, tmp_path, "a")
    registry.promote(v1, approved_by="ana", decision=PASS)
    before = tree_digest(store, "models/relevance/", exclude_prefix="models/relevance/versions/")
    crashing = Registry(RecordingStore(store, fail_on="manifest.json"), "relevance")
    orphan = crashing.new_version_id()
    model, files = make_model(tmp_path, "orphan")
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.write_version(orphan, model, files, {})
    assert registry.production()["version"] == v1
    assert tree_digest(store, "models/relevance/", exclude_prefix="models/relevance/versions/") == before
    assert [r["version"] for r in registry.list_versions()] == [v1]
    flagged = {r["version"]: r["complete"] for r in registry.list_versions(include_incomplete=True)}
    assert flagged == {v1: True, orphan: False}
    with pytest.raises(IncompleteVersion, match="did not finish"):
        registry.promote(orphan, approved_by="ana", decision=PASS)
    with pytest.raises(IncompleteVersion):
        registry.fetch_model(orphan, tmp_path / "dl")
    assert registry.production()["version"] == v1


def test_crash_at_pointer_flip_changes_nothing(store, tmp_path):
    registry = Registry(store, "relevance")
    v1, v2 = add_version(registry, tmp_path, "a"), add_version(registry, tmp_path, "b")
    registry.promote(v1, approved_by="ana", decision=PASS)
    crashing = Registry(RecordingStore(store, fail_on="production.json"), "relevance")
    with pytest.raises(RuntimeError):
        crashing.promote(v2, approved_by="bo", decision=PASS)
    assert registry.production()["version"] == v1 and len(registry.audit()) == 1


def test_retried_promotion_after_flip_finishes_audit_without_second_flip(store, tmp_path):
    registry = Registry(store, "relevance")
    v1, v2 = add_version(registry, tmp_path, "a"), add_version(registry, tmp_path, "b")
    registry.promote(v1, approved_by="ana", decision=PASS)
    crashing = Registry(RecordingStore(store, fail_on="-promote.json"), "relevance")
    with pytest.raises(RuntimeError):
        crashing.promote(v2, approved_by="bo", decision=PASS)  # flip landed, audit write crashed
    pointer = registry.production()
    assert pointer["version"] == v2 and len(registry.audit()) == 1
    again = registry.promote(v2, approved_by="bo", decision=PASS)  # the task retry
    assert again == pointer == registry.production()
    last = registry.audit()[-1]
    assert (last["version"], last["approved_at"], last["audit_recovered"]) == (
        v2,
        pointer["approved_at"],
        True,
    )
    assert registry.promote(v2, approved_by="bo", decision=PASS) == pointer and len(registry.audit()) == 2


def _count_requests(store: S3Store) -> list[str]:
    sent: list[str] = []
    store.client.meta.events.register("before-send.s3.*", lambda request, **_: sent.append(request.method))
    return sent


def test_s3_unreachable_during_promotion_fails_clearly_and_leaves_pointer(
    s3_uri, tmp_path, monkeypatch, procs
):
    healthy = open_store(s3_uri)
    registry = Registry(healthy, "relevance")
    v1, v2 = add_version(registry, tmp_path, "a"), add_version(registry, tmp_path, "b")
    registry.promote(v1, approved_by="ana", decision=PASS)
    pointer_before = healthy.read_versioned("models/relevance/production.json")

    monkeypatch.setenv(
        "AWS_ENDPOINT_URL", f"http://127.0.0.1:{procs.free_port()}"
    )  # the S3 endpoint goes away
    bucket, prefix = s3_uri[5:].split("/", 1)
    dead = S3Store(bucket, prefix, max_attempts=3, connect_timeout=1)
    sent = _count_requests(dead)
    with pytest.raises(StoreError, match="unreachable") as info:
        Registry(dead, "relevance").promote(v2, approved_by="bo", decision=PASS)
    assert info.value.transient and info.value.bucket == bucket
    assert len(sent) == 3  # connection errors are transient: retried up to max_attempts
    assert healthy.read_versioned("models/relevance/production.json") == pointer_before
    assert len(registry.audit()) == 1


def test_s3_lost_conditional_write_is_not_retried(s3_uri):
    store = S3Store(*s3_uri[5:].split("/", 1), max_attempts=5)
    store.put_conditional("k.json", b"1", None)
    sent = _count_requests(store)
    with pytest.raises(StoreError):
        store.put_conditional("k.json", b"2", None)
    assert sent == ["PUT"]  # 412 is final, not transient


@pytest.mark.parametrize("start_empty", [True, False])
def test_eight_concurrent_promotions_leave_one_consistent_pointer(s3_uri, tmp_path, start_empty):
    registry = Registry(open_store(s3_uri), "relevance")
    base = None if start_empty else add_version(registry, tmp_path, "base")
    if base:
        registry.promote(base, approved_by="ana", decision=PASS)
    versions = [add_version(registry, tmp_path, f"c{i}") for i in range(8)]
    barrier = threading.Barrier(8)
    outcomes: dict[str, str] = {}

    def promote(version: str) -> None:
        own = Registry(S3Store(*s3_uri[5:].split("/", 1)), "relevance")  # a client per reviewer process
        barrier.wait()
        try:
            own.promote(version, approved_by=f"rev-{version[-6:]}", decision=PASS, expected_production=base)
            outcomes[version] = "won"
        except PromotionConflict:
            outcomes[version] = "lost"

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [v for v, o in outcomes.items() if o == "won"]
    assert len(outcomes) == 8 and len(winners) == 1
    pointer = registry.production()
    promotes = [a for a in registry.audit() if a["action"] == "promote"]
    assert pointer["version"] == winners[0] and pointer["previous"] == base
    # The audit agrees with the pointer: one promote record per successful flip, the last one is production.
    assert len(promotes) == (1 if start_empty else 2)
    assert promotes[-1]["version"] == pointer["version"]
    assert promotes[-1]["approved_at"] == pointer["approved_at"]


def test_promotion_refused_when_production_moved_since_evaluation(store, tmp_path):
    registry = Registry(store, "relevance")
    v1, v2 = add_version(registry, tmp_path, "a"), add_version(registry, tmp_path, "b")
    registry.promote(v1, approved_by="ana", decision=PASS, expected_production=None)
    with pytest.raises(PromotionConflict, match="re-evaluate"):
        registry.promote(v2, approved_by="bo", decision=PASS, expected_production=None)
    assert registry.production()["version"] == v1
    assert registry.promote(v2, approved_by="bo", decision=PASS, expected_production=v1)["version"] == v2


def test_concurrent_audit_writes_are_never_lost(s3_uri):
    registry = Registry(open_store(s3_uri), "relevance")
    moment = datetime(2026, 11, 28, 13, 25, 1, tzinfo=UTC)  # all eight race for the same key
    barrier = threading.Barrier(8)
    keys: list[str] = []

    def write(i: int) -> None:
        barrier.wait()
        keys.append(registry.record_audit("reject", {"version": f"v{i}"}, at=moment))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 8
    assert sorted(a["version"] for a in registry.audit()) == [f"v{i}" for i in range(8)]


def test_cli_models_promote_rollback(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tailguard.cli import app

    store_dir = tmp_path / "store"
    monkeypatch.setenv("TAILGUARD_STORE", str(store_dir))
    registry = Registry(open_store(str(store_dir)), "relevance")
    v1, v2 = add_version(registry, tmp_path, "a"), add_version(registry, tmp_path, "b")
    failing = registry.new_version_id()
    model, files = make_model(tmp_path, "f")
    registry.write_version(failing, model, files, {"decision": FAIL})
    registry.store.put_bytes("models/relevance/versions/20000101T000000Z-000000/model/x.bin", b"partial")
    runner = CliRunner()

    assert runner.invoke(app, ["promote", v1, "--by", "ana"]).exit_code == 0
    assert runner.invoke(app, ["promote", v2, "--by", "bo", "--comment", "better tail"]).exit_code == 0
    listing = runner.invoke(app, ["models"])
    assert listing.exit_code == 0
    lines = {
        line.split()[1] if line.startswith("*") else line.split()[0]: line
        for line in listing.output.splitlines()
    }
    assert lines[v2].startswith("*") and "production" in lines[v2] and v1 in lines
    assert " FAIL " in lines[failing] and " FAIL " not in lines[v1]  # the gate's verdict, from the manifest
    assert "20000101T000000Z-000000" not in listing.output and "1 incomplete version(s)" in listing.output
    assert "INCOMPLETE" in runner.invoke(app, ["models", "--all"]).output

    refused = runner.invoke(app, ["promote", failing, "--by", "bo"])
    assert refused.exit_code == 1 and "override" in refused.output
    assert registry.production()["version"] == v2

    rolled = runner.invoke(app, ["rollback", "--by", "oncall"])
    assert rolled.exit_code == 0 and f"is now {v1}" in rolled.output
    assert registry.production()["version"] == v1 and registry.audit()[-1]["approved_by"] == "oncall"
    missing = runner.invoke(app, ["promote", "20990101T000000Z-abcdef"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


# --- issue 12 items 8-10 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("decision", [{}, {"promote": None, "reasons": []}, {"reasons": ["not judged"]}])
def test_version_without_gate_verdict_needs_override(store, tmp_path, decision):
    registry = Registry(store, "relevance")
    version = add_version(registry, tmp_path, "x", decision=decision or None)
    with pytest.raises(RegistryError, match="has no gate decision.*override"):
        recorded = registry.manifest(version).get("decision") or {}
        registry.promote(version, approved_by="ana", decision=recorded)
    assert registry.production() is None and registry.audit() == []
    pointer = registry.promote(version, approved_by="ana", decision=decision, override=True, comment="hotfix")
    assert pointer["override"] is True and pointer["gate_passed"] is False


def test_cli_promote_of_manifest_without_decision_is_refused_without_override(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tailguard.cli import app

    monkeypatch.setenv("TAILGUARD_STORE", str(tmp_path / "store"))
    registry = Registry(open_store(str(tmp_path / "store")), "relevance")
    version = registry.new_version_id()
    model, files = make_model(tmp_path, "n")
    registry.write_version(version, model, files, {"flow_run_id": "hand-made"})  # no decision at all
    refused = CliRunner().invoke(app, ["promote", version, "--by", "ana"])
    assert refused.exit_code == 1 and "no gate decision" in refused.output and "--override" in refused.output
    assert registry.production() is None
    assert CliRunner().invoke(app, ["promote", version, "--by", "ana", "--override"]).exit_code == 0
    assert registry.production()["override"] is True


def _dropping_store(s3_uri: str) -> S3Store:
    """An S3Store on moto whose client drops If-Match / If-None-Match (a store that ignores them)."""
    store = S3Store(*s3_uri[5:].split("/", 1))

    def drop(request, **_):
        for header in ("If-Match", "If-None-Match"):
            if header in request.headers:
                del request.headers[header]

    store.client.meta.events.register("before-sign.s3.PutObject", drop)
    return store


def test_promotions_racing_on_store_that_ignores_conditions_are_refused(s3_uri, tmp_path):
    """Two reviewers, each with a client on a header-dropping endpoint: without the probe both flips
    succeed (the audit shows two promotions with the same predecessor); with it, neither changes anything."""
    setup = Registry(open_store(s3_uri), "relevance")
    base = add_version(setup, tmp_path, "base")
    setup.promote(base, approved_by="ana", decision=PASS)
    v1, v2 = add_version(setup, tmp_path, "c1"), add_version(setup, tmp_path, "c2")
    before = setup.store.read_versioned("models/relevance/production.json")
    outcomes: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def promote(version: str) -> None:
        own = Registry(_dropping_store(s3_uri), "relevance")
        barrier.wait()
        try:
            own.promote(version, approved_by="rev", decision=PASS, expected_production=base)
            outcomes[version] = "won"
        except StoreError as err:
            outcomes[version] = str(err)

    threads = [threading.Thread(target=promote, args=(v,)) for v in (v1, v2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(outcomes) == {v1, v2}
    assert all("ignores If-None-Match on PutObject" in o for o in outcomes.values()), outcomes
    assert setup.store.read_versioned("models/relevance/production.json") == before
    assert [a["action"] for a in setup.audit()] == ["promote"]
    with pytest.raises(StoreError, match="Promotion and rollback are refused"):
        Registry(_dropping_store(s3_uri), "relevance").rollback(by="oncall")


def test_cli_finds_the_demo_store_when_nothing_is_configured(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tailguard.cli import app

    monkeypatch.chdir(tmp_path)
    for name in ("TAILGUARD_HOME", "TAILGUARD_STORE", "TAILGUARD_MODEL_NAME"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    empty = runner.invoke(app, ["models"])  # nothing anywhere: says where it looked
    assert empty.exit_code == 0 and "no versions of 'relevance' in store" in empty.output
    assert str(tmp_path / ".tailguard" / "store") in empty.output
    demo = Registry(open_store(str(tmp_path / ".tailguard" / "demo" / "store")), "relevance")
    version = add_version(demo, tmp_path, "demo")
    listing = runner.invoke(app, ["models"])  # what a newcomer types after `make demo`
    assert listing.exit_code == 0 and version in listing.output
    assert "using the demo's store" in listing.output
    # A configured home wins, even when it is empty (then the CLI says so).
    monkeypatch.setenv("TAILGUARD_HOME", str(tmp_path / "elsewhere"))
    configured = runner.invoke(app, ["models"])
    assert version not in configured.output and str(tmp_path / "elsewhere" / "store") in configured.output
    # A store at the default location wins over the demo's.
    monkeypatch.delenv("TAILGUARD_HOME")
    default_store = open_store(str(tmp_path / ".tailguard" / "store"))
    own = add_version(Registry(default_store, "relevance"), tmp_path, "own")
    default = runner.invoke(app, ["models"])
    assert own in default.output and version not in default.output and "demo" not in default.output
