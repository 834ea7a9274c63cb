"""Issue 13 items 2, 4, 5, 7 and issue 15 items 2-3 under real Prefect: per-run gate overrides are never a
clean pass, a killed promotion does not wedge the lock, the rollback flow needs a name and never rolls
back twice, and a run's final state says what happened."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from tailguard.demo import DemoConfig, generate_batches
from tailguard.registry import Registry
from tailguard.store import open_store


def _registry(home) -> Registry:
    return Registry(open_store(str(home / "store")), "relevance")


@pytest.fixture(scope="module")
def small_batch(tmp_path_factory):
    return generate_batches(DemoConfig(rows=1200, batches=1, seed=3), tmp_path_factory.mktemp("small"))[0]


def test_gate_overrides_with_approval_auto_never_promote_and_record_the_policy(tailguard_home, small_batch):
    from tailguard_flows.retrain import retrain

    off = {"floors": {"roc_auc": 0.0, "roc_auc_per_query": 0.0}, "regression_dimensions": [],
           "max_share_drifted_columns": None}  # fmt: skip
    state = retrain(data=str(small_batch), epochs=1, n_bootstrap=0, gate_overrides=off, return_state=True)
    outcome = state.result()
    assert state.is_completed() and state.name == "Rejected"
    decision = outcome["decision"]
    assert decision["promote"] is True  # the switched-off gate "passes" ...
    assert decision["policy_is_default"] is False and len(decision["policy_sha256"]) == 64
    assert decision["policy"]["source"] == (
        "deployment-parameter: gate_overrides of floors, max_share_drifted_columns, regression_dimensions"
    )
    assert (
        outcome["promoted"] is False and "not the reviewed default" in outcome["why"]
    )  # ... and never ships
    registry = _registry(tailguard_home)
    assert registry.production() is None
    (refused,) = [a for a in registry.audit() if a["action"] == "reject"]
    assert refused["rejected_by"] == "policy:auto" and refused["decision_source"] == "policy:auto"
    assert refused["decision"]["policy_sha256"] == decision["policy_sha256"]
    assert refused["manifest_sha256"] == registry.list_versions()[-1]["manifest_sha256"]
    # The stored decision keeps the policy record: a hand promotion is an override too.
    with pytest.raises(Exception, match="not the reviewed default"):
        registry.promote(outcome["version"], approved_by="ana", decision=decision)


def test_default_policy_auto_promotion_names_the_state_and_records_the_source(tailguard_home, small_batch):
    from tailguard_flows.retrain import retrain

    state = retrain(data=str(small_batch), epochs=2, n_bootstrap=0, return_state=True)
    outcome = state.result()
    assert state.name == ("Promoted" if outcome["promoted"] else "Rejected"), outcome["why"]
    assert outcome["state"] == state.name and state.message == outcome["why"]
    record = _registry(tailguard_home).audit()[-1]
    assert record["decision_source"] == "policy:auto"
    assert record["decision"]["policy_is_default"] is True


def test_rollback_flow_needs_a_name_and_a_rerun_never_rolls_back_twice(tailguard_home, tmp_path):
    from tailguard_flows.rollback import RollbackRefused, rollback

    registry = _registry(tailguard_home)
    versions = []
    for tag in ("01", "02", "03"):
        model = tmp_path / f"m{tag}"
        model.mkdir()
        (model / "model.safetensors").write_bytes(tag.encode() * 32)
        version = registry.new_version_id()
        registry.write_version(version, model, {}, {"decision": {"promote": True, "policy_is_default": True}})
        registry.promote(version, approved_by="ana", decision={"promote": True, "policy_is_default": True})
        versions.append(version)
    with pytest.raises(RollbackRefused, match="needs `by`"):
        rollback()  # a Quick run with empty fields
    assert registry.production()["version"] == versions[2]
    state = rollback(by="oncall", return_state=True)
    pointer = state.result()
    assert pointer["version"] == versions[1] and pointer["decision_source"] == "rollback-flow"
    assert pointer["request_id"] == str(state.state_details.flow_run_id)
    # A second run that still believes production is 03 changes nothing.
    with pytest.raises(Exception, match=f"expected production {versions[2]}"):
        rollback(by="oncall", expected_current=versions[2])
    assert registry.production()["version"] == versions[1]
    assert [a["action"] for a in registry.audit()].count("rollback") == 1


_HOLD_AND_DIE = textwrap.dedent(
    """
    import os, signal, sys
    from tailguard_tasks.locks import promotion_lock
    with promotion_lock(sys.argv[1], timeout_s=60):
        print("held", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 inside the slot: nothing releases it
    """
)


def test_slot_of_a_promotion_killed_with_sigkill_is_freed_for_the_next(tailguard_home, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from tailguard_tasks.locks import lock_name, promotion_lock, stale_reason

    model = "wedged"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", _HOLD_AND_DIE, model], env=env, capture_output=True,
                          text=True, timeout=180)  # fmt: skip
    assert done.returncode == -9 and "held" in done.stdout, done.stderr[-2000:]
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(lock_name(model)).active_slots == 1  # wedged
    assert "no longer runs" in (stale_reason(lock_name(model)) or "")
    started = time.monotonic()
    with promotion_lock(model, timeout_s=60):  # used to block forever (481 s and counting)
        waited = time.monotonic() - started
        assert stale_reason(lock_name(model)) is None  # a live holder is never taken for stale
    assert waited < 30, waited


def test_a_live_holder_keeps_the_slot_until_the_timeout_which_is_not_retried(
    tailguard_home, lock_held_elsewhere
):
    from tailguard_tasks.locks import PromotionLockTimeout, lock_name, promotion_lock, stale_reason
    from tailguard_tasks.retry import transient_io

    with lock_held_elsewhere("busy"):
        assert stale_reason(lock_name("busy")) is None
        assert "longer than a promotion takes" in stale_reason(lock_name("busy"), stale_after_s=0)
        with (
            pytest.raises(PromotionLockTimeout, match="promote-busy.*OPERATIONS.md") as timeout,
            promotion_lock("busy", timeout_s=2),
        ):
            pass

    class _State:
        def result(self):
            raise timeout.value

    assert transient_io(None, None, _State()) is False  # it waited its full timeout already


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_review_form_schema_the_server_checks_refuses_a_blank_reviewer(blank):
    from prefect.utilities.schema_tools import ValidationError, validate
    from tailguard_flows.retrain import Review

    # The schema Prefect stores with the pause and checks a resume against (REJECT on a mismatch).
    schema = Review.with_initial_data(description="Candidate v1 PASSES the gate.").model_json_schema()
    answer = {"approve": True, "reviewer": "ana", "comment": "", "override": False}
    validate(answer, schema, raise_on_error=True)
    with pytest.raises(ValidationError, match="reviewer"):
        validate({"approve": True, "reviewer": blank, "override": True}, schema, raise_on_error=True)
    assert "reviewer" in schema["required"]  # the UI form marks it required, not "(Optional)"
    with pytest.raises(ValidationError, match="reviewer"):
        validate({"approve": True, "override": False}, schema, raise_on_error=True)
