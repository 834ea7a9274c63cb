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

# Gate decisions as pipeline.decide writes them: judged under the reviewed default policy.
PASS = {
    "promote": True,
    "reasons": ["all gates passed"],
    "policy_is_default": True,
    "policy_sha256": "d" * 64,
}
FAIL = {"promote": False, "reasons": ["tail recall@10 regressed by 0.04 > 0.02"], "policy_is_default": True}


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

    def put_file_once(self, key, path):
        self._write(key)
        self.inner.put_file_once(key, path)


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
        registry.rollback(by="oncall")
    with pytest.raises(RegistryError, match="never production"):
        registry.rollback(to=bad, by="oncall")  # rolled away from: no longer a rollback target


def test_rollback_to_named_version_pops_the_stack(store, tmp_path):
    registry = Registry(store, "relevance")
    v1, v2, v3 = (add_version(registry, tmp_path, tag) for tag in ("a", "b", "c"))
    unreviewed = add_version(registry, tmp_path, "never-promoted")
    for version in (v1, v2, v3):
        registry.promote(version, approved_by="ana", decision=PASS)
    with pytest.raises(RegistryError, match="never production"):
        registry.rollback(
            to=unreviewed, by="oncall"
        )  # rollback skips review: only former production versions
    pointer = registry.rollback(to=v1, by="oncall")
    assert (pointer["version"], pointer["previous"], pointer["history"]) == (v1, v3, [])
    assert [a["action"] for a in registry.audit()] == ["promote"] * 3 + ["rollback"]
    with pytest.raises(RegistryError, match="already production"):
        registry.promote(v1, approved_by="ana", decision=PASS)  # not mistaken for a retried promotion
    assert len(registry.audit()) == 4


def test_rollback_without_production_is_clear(store):
    with pytest.raises(RegistryError, match="no production model"):
        Registry(store, "relevance").rollback(by="oncall")


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

    rolled = runner.invoke(app, ["rollback", "--by", "oncall", "--expect", v2])
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
    no_comment = CliRunner().invoke(app, ["promote", version, "--by", "ana", "--override"])
    assert no_comment.exit_code == 1 and "needs a comment" in no_comment.output
    assert registry.production() is None
    promoted = CliRunner().invoke(
        app, ["promote", version, "--by", "ana", "--override", "--comment", "hand-made"]
    )
    assert promoted.exit_code == 0, promoted.output
    assert registry.production()["override"] is True and registry.production()["decision_source"] == "cli"


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


# --- issue 13: rollback never repeats a landed flip; every flip is audited ----------------------------


class FlakyStore(RecordingStore):
    """Fails the first write whose key ends with `fail_once` with a transient StoreError (503), then works."""

    def __init__(self, inner, fail_once: str):
        super().__init__(inner)
        self.fail_once, self.failed = fail_once, 0

    def _write(self, key):
        if not self.failed and key.endswith(self.fail_once):
            self.failed += 1
            raise StoreError(f"put {key} failed: 503 SlowDown", key=key, transient=True)
        self.writes.append(key)


def _three_in_production(registry, tmp_path):
    versions = [add_version(registry, tmp_path, tag) for tag in ("01", "02", "03")]
    for who, version in zip(("ana", "bo", "cy"), versions, strict=True):
        registry.promote(version, approved_by=who, decision=PASS)
    return versions


def test_retried_rollback_after_audit_failure_moves_back_one_version_only(store, tmp_path):
    registry = Registry(store, "relevance")
    v1, v2, v3 = _three_in_production(registry, tmp_path)
    flaky = Registry(FlakyStore(store, fail_once="-rollback.json"), "relevance")
    with pytest.raises(
        StoreError, match="503"
    ):  # the flip landed, the audit write failed: a task retry follows
        flaky.rollback(by="oncall", expected_current=v3, request_id="run-7")
    assert registry.production()["version"] == v2
    again = flaky.rollback(by="oncall", expected_current=v3, request_id="run-7")  # the retry
    assert again["version"] == v2 == registry.production()["version"]  # 03 -> 02, never 03 -> 01
    rollbacks = [a for a in registry.audit() if a["action"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["rolled_back_from"] == v3 and rollbacks[0]["audit_recovered"]
    assert rollbacks[0]["request_id"] == "run-7" and rollbacks[0]["approved_by"] == "oncall"
    # A rerun under a new request id that still expects 03 changes nothing either.
    with pytest.raises(PromotionConflict, match=f"expected production {v3}"):
        registry.rollback(by="oncall", expected_current=v3, request_id="run-8")
    assert registry.production()["version"] == v2 and len(registry.audit()) == 4
    # A deliberate second rollback names what it undoes.
    assert registry.rollback(by="oncall", expected_current=v2)["version"] == v1


def test_rollback_retry_with_only_a_request_id_is_idempotent(store, tmp_path):
    registry = Registry(store, "relevance")
    v1, v2, _ = _three_in_production(registry, tmp_path)
    first = registry.rollback(by="oncall", request_id="req-1")
    assert registry.rollback(by="oncall", request_id="req-1") == first  # no expected version given at all
    assert registry.production()["version"] == v2
    assert [a["action"] for a in registry.audit()].count("rollback") == 1
    assert registry.rollback(by="oncall", request_id="req-2")["version"] == v1  # a new request does move


def test_flip_whose_audit_was_lost_is_audited_by_the_next_promotion(store, tmp_path, monkeypatch):
    import tailguard.registry as registry_module

    monkeypatch.setattr(registry_module, "AUDIT_GRACE_S", 0.0)  # the crash was long ago
    registry = Registry(store, "relevance")
    v1, v2, v3 = (add_version(registry, tmp_path, t) for t in ("a", "b", "c"))
    registry.promote(v1, approved_by="ana", decision=PASS)
    crashing = Registry(RecordingStore(store, fail_on="-promote.json"), "relevance")
    with pytest.raises(RuntimeError):
        crashing.promote(v2, approved_by="bo", decision=PASS, comment="ship it")  # died after the flip
    assert [a["version"] for a in registry.audit()] == [v1]  # production changed, no record yet
    lost = registry.production()
    registry.promote(v3, approved_by="cy", decision=PASS)  # the next writer finds the gap and fills it
    audit = registry.audit()
    assert [(a["action"], a["version"]) for a in audit] == [("promote", v1), ("promote", v2), ("promote", v3)]
    assert audit[1]["audit_recovered"] is True and audit[1]["approved_at"] == lost["approved_at"]
    assert (audit[1]["approved_by"], audit[1]["comment"]) == ("bo", "ship it")


def test_lost_rollback_audit_is_recovered_by_the_next_rollback(store, tmp_path, monkeypatch):
    import tailguard.registry as registry_module

    monkeypatch.setattr(registry_module, "AUDIT_GRACE_S", 0.0)
    registry = Registry(store, "relevance")
    v1, v2, v3 = _three_in_production(registry, tmp_path)
    crashing = Registry(RecordingStore(store, fail_on="-rollback.json"), "relevance")
    with pytest.raises(RuntimeError):
        crashing.rollback(by="oncall", expected_current=v3)
    registry.rollback(by="oncall-2", expected_current=v2)
    rollbacks = [(a["rolled_back_from"], a["version"], a.get("audit_recovered", False))
                 for a in registry.audit() if a["action"] == "rollback"]  # fmt: skip
    assert rollbacks == [(v3, v2, True), (v2, v1, False)]


# --- issue 13 item 6: promote and rollback verify files and respect earlier decisions ----------------


def _tamper(store, registry, version, name, data: bytes | None):
    key = f"{registry.version_prefix(version)}/{name}"
    if data is None:
        store.delete(key)
    else:
        store.put_bytes(key, data)


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("model/model.safetensors", b"\x00" * 100, "model/model.safetensors: sha256"),  # corrupted weights
        ("model/tokenizer/vocab.txt", None, "model/tokenizer/vocab.txt: missing"),  # tokenizer file gone
        ("model/config.json", b'{"tag": "other"}', "model/config.json: sha256"),  # an edited config
        ("reports/classification.html", None, "reports/classification.html: missing"),
    ],
)
def test_promote_and_rollback_refuse_a_version_whose_files_do_not_match(
    store, tmp_path, name, data, expected
):
    registry = Registry(store, "relevance")
    v1, v2, v3 = (add_version(registry, tmp_path, t) for t in ("a", "b", "c"))
    registry.promote(v1, approved_by="ana", decision=PASS)
    registry.promote(v2, approved_by="bo", decision=PASS)
    _tamper(store, registry, v3, name, data)
    with pytest.raises(ChecksumError, match=expected):
        registry.promote(v3, approved_by="cy", decision=PASS)
    _tamper(store, registry, v1, name, data)  # a former production version damaged since
    with pytest.raises(ChecksumError, match=expected):
        registry.rollback(by="oncall")
    assert registry.production()["version"] == v2 and len(registry.audit()) == 2


@pytest.mark.parametrize("earlier", ["reject", "refuse"])
def test_rejected_or_stale_version_needs_a_named_override_with_a_comment(store, tmp_path, earlier):
    registry = Registry(store, "relevance")
    v1 = add_version(registry, tmp_path, "a")
    if earlier == "reject":
        registry.reject(
            v1, by="ana", decision=PASS, comment="tail looks worse in the report", source="ui-form"
        )
    else:
        registry.refuse(v1, "stale: production moved from None to v0 during review", PASS)
    with pytest.raises(RegistryError, match=f"was {earlier}ed by .*override"):
        registry.promote(v1, approved_by="bo", decision=PASS)
    with pytest.raises(RegistryError, match="needs a comment"):
        registry.promote(v1, approved_by="bo", decision=PASS, override=True, comment="  ")
    assert registry.production() is None
    pointer = registry.promote(v1, approved_by="bo", decision=PASS, override=True, comment="re-read: fine")
    assert pointer["override"] is True and pointer["gate_passed"] is True
    assert any(f"was {earlier}ed by" in r for r in pointer["override_reasons"])
    assert registry.audit()[-1]["comment"] == "re-read: fine"


# --- issue 13 items 2 and 7, issue 15 item 2: accountable decisions -------------------------------------


@pytest.mark.parametrize("who", ["", "   ", "\n\t"])
def test_anonymous_decisions_are_refused(store, tmp_path, who):
    registry = Registry(store, "relevance")
    v1, v2 = add_version(registry, tmp_path, "a"), add_version(registry, tmp_path, "b")
    with pytest.raises(RegistryError, match="anonymous"):
        registry.promote(v1, approved_by=who, decision=PASS)
    with pytest.raises(RegistryError, match="anonymous"):
        registry.reject(v1, by=who, decision=PASS)
    registry.promote(v1, approved_by="ana", decision=PASS)
    registry.promote(v2, approved_by="bo", decision=PASS)
    with pytest.raises(RegistryError, match="anonymous"):
        registry.rollback(by=who)
    assert registry.production()["version"] == v2 and len(registry.audit()) == 2


def test_failed_candidate_override_needs_comment_and_is_bound_to_the_manifest(store, tmp_path):
    # Issue 15 item 2: Approve + Override with Reviewer and Comment empty promoted AUC 0.478.
    registry = Registry(store, "relevance")
    v1 = add_version(registry, tmp_path, "a")
    with pytest.raises(RegistryError, match="needs a comment"):
        registry.promote(v1, approved_by="ana", decision=FAIL, override=True, comment="")
    pointer = registry.promote(v1, approved_by="ana", decision=FAIL, override=True, comment="known tail dip",
                               source="ui-form")  # fmt: skip
    record = registry.audit()[-1]
    manifest_sha = hashlib.sha256(store.get_bytes(f"{registry.version_prefix(v1)}/manifest.json")).hexdigest()
    assert record["manifest_sha256"] == pointer["manifest_sha256"] == manifest_sha
    assert (record["decision_source"], record["override"], record["gate_passed"]) == ("ui-form", True, False)
    assert record["override_reasons"] == ["failed the gate"]
    registry.reject(add_version(registry, tmp_path, "b"), by="bo", decision=FAIL, source="cli")
    rejected = registry.audit()[-1]
    assert rejected["decision_source"] == "cli" and len(rejected["manifest_sha256"]) == 64


@pytest.mark.parametrize(
    ("policy_fields", "needs_override"),
    [
        ({"policy_is_default": True, "policy_sha256": "a" * 64}, False),
        (
            {
                "policy_is_default": False,
                "policy_sha256": "b" * 64,
                "policy": {"source": "gate_overrides of floors"},
            },
            True,
        ),  # fmt: skip
        ({}, True),  # a decision that does not say which policy judged it is not a clean pass
    ],
)
def test_gate_pass_under_a_non_default_policy_is_an_override(store, tmp_path, policy_fields, needs_override):
    registry = Registry(store, "relevance")
    v1 = add_version(registry, tmp_path, "a")
    decision = {"promote": True, "reasons": ["every applicable check passed"], **policy_fields}
    if needs_override:
        with pytest.raises(RegistryError, match="not the reviewed default"):
            registry.promote(v1, approved_by="ana", decision=decision)
        pointer = registry.promote(
            v1, approved_by="ana", decision=decision, override=True, comment="new floors"
        )
    else:
        pointer = registry.promote(v1, approved_by="ana", decision=decision)
    assert pointer["override"] is needs_override and pointer["gate_passed"] is True
    assert pointer["policy_is_default"] is (not needs_override)
    assert pointer["policy_sha256"] == policy_fields.get("policy_sha256")
    assert registry.audit()[-1]["policy_sha256"] == policy_fields.get("policy_sha256")


def _decision(promote: bool, is_default: bool | None) -> dict:
    return {"promote": promote, "reasons": [], "policy_is_default": is_default}


@pytest.mark.parametrize(
    ("decision", "review", "promoted", "why"),
    [
        (_decision(True, True), {"approve": True, "reviewer": "ana"}, True, "approved by ana"),
        (_decision(True, True), {"approve": True, "reviewer": " "}, False, "named no reviewer"),
        (
            _decision(False, True),
            {"approve": True, "reviewer": "", "override": True},
            False,
            "named no reviewer",
        ),
        (
            _decision(False, True),
            {"approve": True, "reviewer": "ana", "override": True, "comment": ""},
            False,
            "needs a comment",
        ),  # fmt: skip
        (_decision(False, True), {"approve": True, "reviewer": "ana"}, False, "without override"),
        (_decision(True, False), {"approve": True, "reviewer": "ana"}, False, "non-default gate policy"),
        (
            _decision(True, False),
            {"approve": True, "reviewer": "ana", "override": True, "comment": "why"},
            True,
            "with an override",
        ),  # fmt: skip
        (_decision(True, True), {"approve": False, "reviewer": "bo"}, False, "rejected by bo"),
    ],
)
def test_review_answers_resolve_only_with_a_name_and_a_reasoned_override(decision, review, promoted, why):
    from tailguard.gate import Decision
    from tailguard.pipeline import ReviewAnswer, resolve_review

    got, text = resolve_review(Decision(**decision, checks=[]), ReviewAnswer(**review))
    assert got is promoted and why in text


@pytest.mark.parametrize(
    ("decision", "approve", "why"),
    [
        (_decision(True, True), True, "all gate checks passed"),
        (_decision(True, False), False, "not the reviewed default"),  # gate_overrides / gate_policy set
        (_decision(True, None), False, "not the reviewed default"),
        (_decision(False, True), False, "a gate check failed"),
    ],
)
def test_approval_auto_promotes_only_a_clean_pass_under_the_default_policy(decision, approve, why):
    from tailguard.gate import Decision
    from tailguard.pipeline import auto_review, resolve_review

    decision = Decision(**decision, checks=[])
    review = auto_review(decision)
    assert review.approve is approve and why in review.comment and review.source == "policy:auto"
    assert resolve_review(decision, review)[0] is approve


# --- issue 13 low: an S3 list failure names the listing and is retried when transient ------------------


def test_s3_list_failure_is_reported_as_such_never_as_an_invalid_key(s3_uri):
    from botocore.awsrequest import AWSResponse

    bucket, prefix = s3_uri[5:].split("/", 1)
    missing = S3Store("no-such-bucket-here", prefix, max_attempts=1)
    with pytest.raises(StoreError) as refused:
        missing.list_keys("models/relevance/versions/")
    assert "invalid store key" not in str(refused.value) and "does not exist" in str(refused.value)
    assert refused.value.transient is False
    flaky = S3Store(bucket, prefix, max_attempts=1)
    calls: list[str] = []

    class _Raw:  # the body of a 503 as S3 sends it
        def stream(self):
            yield b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    def unavailable(request, **_):
        calls.append(request.method)
        return AWSResponse(request.url, 503, {}, _Raw())

    flaky.client.meta.events.register("before-send.s3.ListObjectsV2", unavailable)
    with pytest.raises(StoreError) as busy:
        flaky.list_keys("models/relevance/audit/")
    assert "invalid store key" not in str(busy.value) and "list s3://" in str(busy.value)
    assert f"{prefix}/models/relevance/audit/" in str(busy.value)
    assert busy.value.transient is True and calls  # a task's retry_condition_fn retries it


# --- issue 13 low / item 7: the CLI answers in one line, and approve needs a name -----------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["models", "--store", "ftp://host/store"], "unsupported store URI 'ftp://host/store'"),
        (["rollback", "--by", "oncall", "--expect", "v", "--store", "s3://"], "has no bucket"),
        (["promote", "v1", "--model", "../etc"], "invalid model name"),
    ],
)
def test_cli_errors_are_one_line_never_a_traceback(tmp_path, monkeypatch, capsys, argv, expected):
    from tailguard.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAILGUARD_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        app(argv, prog_name="tailguard")
    err = capsys.readouterr().err
    assert exited.value.code == 1 and expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--reviewer", ""], "--reviewer must name who decides"),
        (["--reviewer", "   ", "--reject"], "--reviewer must name who decides"),
        (["--reviewer", "ana", "--override"], "--override needs --comment"),
        (["--reviewer", "ana", "--override", "--comment", " "], "--override needs --comment"),
    ],
)
def test_cli_approve_refuses_anonymous_or_unexplained_answers_before_contacting_prefect(args, expected):
    from tailguard_flows.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["approve", "00000000-0000-0000-0000-000000000000", *args])
    assert result.exit_code == 2 and expected in " ".join(result.output.split()), result.output


# --- review of issue 13's fixes (F1 stale gate bypass, F2 invisible names, F3 model card, CLI rollback) -----


def _stale_setup(registry: Registry, tmp_path: Path, evaluation: dict | None = None) -> tuple[str, str, str]:
    """/tmp/breaker2/stale.py: c is judged against production a, then production moves to b."""
    a = add_version(registry, tmp_path, "a")
    registry.promote(a, approved_by="ana", decision=PASS)
    extra = {"evaluation": evaluation} if evaluation else {}
    c = add_version(registry, tmp_path, "c", production_version=a, **extra)
    b = add_version(registry, tmp_path, "b", production_version=a)
    registry.promote(b, approved_by="bo", decision=PASS)
    return a, b, c


def test_stale_candidate_needs_a_named_override_even_without_expected_production(store, tmp_path):
    registry = Registry(store, "relevance")
    a, b, c = _stale_setup(registry, tmp_path)
    stale = f"stale: evaluated against production {a}, but production is now {b}"
    with pytest.raises(RegistryError, match=stale):
        registry.promote(c, approved_by="eve", decision=PASS)  # what `tailguard promote` did: "*"
    with pytest.raises(RegistryError, match="needs a comment"):
        registry.promote(c, approved_by="eve", decision=PASS, override=True, comment="\u200b")
    assert registry.production()["version"] == b
    pointer = registry.promote(c, approved_by="eve", decision=PASS, override=True, comment="checked by hand")
    assert pointer["override"] is True and pointer["version"] == c
    assert [r for r in pointer["override_reasons"] if r.startswith("stale")] == [stale]
    assert pointer["comment"] == "checked by hand"
    assert registry.audit()[-1]["override_reasons"] == pointer["override_reasons"]


def test_pipeline_candidate_judged_with_no_production_is_stale_once_one_exists(store, tmp_path):
    registry = Registry(store, "relevance")
    first = add_version(registry, tmp_path, "first", evaluation={"rows": "eval_rows.parquet"})  # none then
    other = add_version(registry, tmp_path, "other")
    registry.promote(other, approved_by="ana", decision=PASS)
    with pytest.raises(RegistryError, match="stale: evaluated against production none"):
        registry.promote(first, approved_by="eve", decision=PASS)
    # The flow's own check still answers first, with PromotionConflict (audited by the flow as a refusal).
    a, b, c = _stale_setup(Registry(store, "other-model"), tmp_path / "o")
    with pytest.raises(PromotionConflict, match=f"evaluated against production {a}"):
        Registry(store, "other-model").promote(c, approved_by="flow", decision=PASS, expected_production=a)


def test_fresh_candidate_promotes_cleanly_against_the_production_it_was_judged_on(store, tmp_path):
    registry = Registry(store, "relevance")
    a = add_version(registry, tmp_path, "a")
    registry.promote(a, approved_by="ana", decision=PASS)
    c = add_version(registry, tmp_path, "c", production_version=a, evaluation={"rows": "eval_rows.parquet"})
    pointer = registry.promote(c, approved_by="bo", decision=PASS)
    assert pointer["override"] is False and pointer["override_reasons"] == []


@pytest.mark.parametrize(
    "who", ["\u200b\u2060", "\u200b", "\u3000\u00a0\t", "\ufeff\u202e", "...", "_-_", "\x00"]
)
def test_invisible_or_punctuation_only_names_are_anonymous(store, tmp_path, who):
    registry = Registry(store, "relevance")
    v = add_version(registry, tmp_path, "a")
    for call in (
        lambda: registry.promote(v, approved_by=who, decision=PASS),
        lambda: registry.reject(v, by=who, decision=PASS),
        lambda: registry.rollback(by=who),
    ):
        with pytest.raises(RegistryError, match="no visible letter or digit"):
            call()
    assert registry.production() is None and registry.audit() == []


def test_names_are_recorded_as_a_reader_sees_them(store, tmp_path):
    from tailguard.registry import require_comment, require_name, visible_text_line

    assert require_name("a\u200bna\u2060 \u3000 lee", "promote", "--by") == "ana lee"
    assert require_name("\uff21\uff4e\uff41", "promote", "--by") == "Ana"  # NFKC folds full-width letters
    assert require_name("李\u200b", "promote", "--by") == "李" and require_name("007", "x", "y") == "007"
    assert visible_text_line("why\nnot\u200b") == "why not" and visible_text_line("\u200b\u2060") == ""
    assert require_comment("  rerun\u200b ok\n", "x") == "rerun ok"
    with pytest.raises(RegistryError, match="no visible letter or digit"):
        require_comment("\u200b \u2060", "an override")
    registry = Registry(store, "relevance")
    v = add_version(registry, tmp_path, "a")
    assert registry.promote(v, approved_by="\u200bana", decision=PASS)["approved_by"] == "ana"


HOSTILE_MD = [
    "x` [a](http://evil.example/resume) ![p](http://evil.example/p.png)",
    "<http://evil.example> www.evil.example mail@evil.example",
    "data:text/html,<script>alert(1)</script>",
    "`` ``` [c](javascript:alert(1)) |cell| \n# heading",
    "[r][x]\n\n[x]: http://evil.example",
]


def _md_nodes(card: str) -> dict[str, set[str]]:
    import mistune
    from markdown_it import MarkdownIt

    def walk(tokens):
        for t in tokens:
            yield t
            yield from walk(t.children or [])

    types = {t.type for t in walk(MarkdownIt("commonmark").enable(["table"]).parse(card))}
    html = mistune.create_markdown(escape=False, plugins=["table", "url"])(card)
    tags = {tag for tag in ("<a ", "<img", "<script", "<h1>x", "<h2>x") if tag in html}
    return {"markdown-it": types, "mistune-html": tags}


@pytest.mark.parametrize("hostile", HOSTILE_MD)
def test_model_card_makes_no_link_image_or_html_from_any_manifest_value(hostile):
    from tailguard.registry import Manifest, render_model_card

    manifest = Manifest.model_validate({
        "model_name": "relevance", "version": hostile, "git_revision": hostile, "flow_run_id": hostile,
        "params": {hostile: hostile, "base_model": hostile, "columns": {hostile: hostile}},
        "data": {"batch_id": hostile, "uri": hostile, "columns": hostile, "rows": 3, "fingerprint": {
            "sha256": hostile, "files": [{"name": hostile, "bytes": 1, "sha256": hostile}]}},
        "training_window": {"weeks": hostile, "batches": [
            {"week": hostile, "batch_id": hostile, "role": "new"}]},
        "headline": {hostile: {"candidate": 0.5, "production": None}},
        "decision": {"promote": True, "reasons": [hostile]},
        "files": {hostile: {"sha256": hostile, "size": 1}},
    })  # fmt: skip
    card = render_model_card(manifest)
    nodes = _md_nodes(card)
    assert not nodes["markdown-it"] & {"link_open", "image", "html_inline", "html_block"}, card
    assert not nodes["mistune-html"], card
    assert [ln for ln in card.splitlines() if ln.startswith("#")] == [
        ln for ln in card.splitlines() if ln.startswith(("# Model card", "## "))
    ]


def test_cli_rollback_needs_the_expected_version_and_never_rolls_back_twice(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tailguard.cli import app

    store_dir = tmp_path / "store"
    monkeypatch.setenv("TAILGUARD_STORE", str(store_dir))
    registry = Registry(open_store(str(store_dir)), "relevance")
    versions = [add_version(registry, tmp_path, tag) for tag in "abc"]
    for v in versions:
        registry.promote(v, approved_by="ana", decision=PASS)
    runner = CliRunner()
    bare = runner.invoke(app, ["rollback", "--by", "oncall"])
    assert bare.exit_code == 2 and "--expect VERSION" in bare.output and "--request-id" in bare.output
    assert registry.production()["version"] == versions[2]
    first = runner.invoke(app, ["rollback", "--by", "oncall", "--expect", versions[2]])
    assert first.exit_code == 0 and registry.production()["version"] == versions[1]
    again = runner.invoke(app, ["rollback", "--by", "oncall", "--expect", versions[2]])
    assert again.exit_code == 1 and "nothing changed" in again.output
    by_id = [runner.invoke(app, ["rollback", "--by", "oncall", "--request-id", "r-1"]) for _ in range(2)]
    assert [r.exit_code for r in by_id] == [0, 0] and registry.production()["version"] == versions[0]
    assert [a["action"] for a in registry.audit()].count("rollback") == 2
    hidden = runner.invoke(app, ["rollback", "--by", "\u200b\u2060", "--expect", versions[0]])
    assert hidden.exit_code == 2 and "no visible letter or digit" in " ".join(hidden.output.split())


@pytest.mark.parametrize(
    "args", [["--reviewer", "\u200b\u2060"], ["--reviewer", "ana", "--override", "--comment", "\u200b"]]
)
def test_cli_approve_refuses_invisible_reviewer_or_comment(args):
    from tailguard_flows.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["approve", "0b5e5b8e-0000-4000-8000-000000000000", *args])
    assert result.exit_code == 2 and "no visible letter or digit" in " ".join(result.output.split())


# --- a pass under a non-default gate policy is shown as one, by every reader (fix B) ------------------------

OVERRIDES = {"floors": {"roc_auc": 0.0, "roc_auc_per_query": 0.0}}
# What pipeline.write_candidate records for a run with --gate-overrides: every check passed, but under a
# policy that is not the reviewed default (its sha256 differs), so `tailguard promote` needs an override.
RELAXED = {
    "promote": True,
    "reasons": ["every applicable check passed"],
    "policy_is_default": False,
    "policy_sha256": "e" * 64,
}


def _relaxed_registry(tmp_path: Path) -> tuple[Registry, str, str]:
    registry = Registry(open_store(str(tmp_path / "store")), "relevance")
    clean = add_version(registry, tmp_path, "a")
    relaxed = add_version(registry, tmp_path, "b", decision=RELAXED, params={"gate_overrides": OVERRIDES})
    return registry, clean, relaxed


def test_decision_record_gate_status_is_the_one_rule():
    from tailguard.registry import DecisionRecord

    cases = [
        (PASS, "pass", True, "pass"),
        (RELAXED, "pass-non-default-policy", False, "pass (non-default policy: needs a named override)"),
        (
            {"promote": True},
            "pass-policy-unrecorded",
            False,
            "pass (policy unrecorded: needs a named override)",
        ),
        (FAIL, "fail", False, "FAIL"),
        (None, "not-judged", False, "-"),
        ({"passed": True, "policy_is_default": True}, "pass", True, "pass"),  # an older verdict name
    ]
    for decision, status, passed, label in cases:
        record = DecisionRecord.of(decision)
        got = (record.gate_status, record.gate_passed, record.gate_label)
        assert got == (status, passed, label), decision


def test_a_pass_under_a_non_default_policy_lists_as_no_gate_pass(tmp_path):
    from tailguard.commands import versions_table

    registry, clean, relaxed = _relaxed_registry(tmp_path)
    rows = {r["version"]: r for r in registry.list_versions()}
    assert rows[clean]["gate"] is True and rows[clean]["gate_policy_default"] is True
    row = rows[relaxed]
    assert row["gate"] is False and row["gate_policy_default"] is False
    assert row["gate_status"] == "pass-non-default-policy"
    assert row["gate_policy_sha256"] == "e" * 64 and row["gate_overrides"] == OVERRIDES
    listed = json.loads(versions_table(registry, as_json=True)[0])
    assert [(r["version"], r["gate"]) for r in listed] == [(clean, True), (relaxed, False)]
    lines = {line.split()[0]: line for line in versions_table(registry)[0].splitlines()[1:]}
    assert " pass (non-default policy: needs a named override) " in lines[relaxed]
    assert " pass " in lines[clean] and "non-default" not in lines[clean]
    with pytest.raises(RegistryError, match="not the reviewed default"):  # what the table warns of
        registry.promote(relaxed, approved_by="ana", decision=RELAXED)


def test_the_model_card_says_a_non_default_policy_judged_it(tmp_path):
    registry, clean, relaxed = _relaxed_registry(tmp_path)
    card = registry.store.get_bytes(f"{registry.version_prefix(relaxed)}/model_card.md").decode()
    assert "Gate verdict: **promote only with a named override**" in card
    assert "**not the reviewed default**" in card and "e" * 64 in card
    assert "- gate overrides: " in card and "roc_auc_per_query" in card
    assert "Gate verdict: **promote**" not in card
    clean_card = registry.store.get_bytes(f"{registry.version_prefix(clean)}/model_card.md").decode()
    assert "Gate verdict: **promote**" in clean_card and "reviewed default" not in clean_card


def test_hand_written_and_malformed_manifests_still_list(tmp_path):
    registry = Registry(open_store(str(tmp_path / "store")), "relevance")
    model, files = make_model(tmp_path, "a")
    old = registry.new_version_id()
    registry.write_version(old, model, files, {"data": {"rows": 5}})  # no data.batch_id, no decision
    broken = add_version(registry, tmp_path, "b")
    key = f"{registry.version_prefix(broken)}/manifest.json"
    manifest = json.loads(registry.store.get_bytes(key))
    manifest["headline"] = {"overall/roc_auc": {"candidate": "high"}}
    registry.store.put_bytes(key, json.dumps(manifest).encode())
    rows = {r["version"]: r for r in registry.list_versions()}
    assert rows[old]["rows"] == 5 and rows[old]["gate"] is None and rows[old]["flow_run_id"] == ""
    assert registry.read_manifest(old).data.batch_id == ""
    assert "headline.overall/roc_auc.candidate" in rows[broken]["manifest_error"]
    assert rows[broken]["manifest_sha256"] == hashlib.sha256(registry.store.get_bytes(key)).hexdigest()


def test_recorded_decision_falls_back_to_the_manifest_decision_as_written(tmp_path):
    from tailguard.commands import recorded_decision

    registry = Registry(open_store(str(tmp_path / "store")), "relevance")
    version = add_version(registry, tmp_path, "a", decision={"promote": True, "policy_is_default": True})
    assert recorded_decision(registry, version) == registry.manifest(version)["decision"]  # as stored
    model, files = make_model(tmp_path, "b")
    unjudged = registry.new_version_id()
    registry.write_version(unjudged, model, files, {})
    assert recorded_decision(registry, unjudged) == {}
