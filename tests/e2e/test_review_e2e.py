"""End to end: a real Prefect server (PostgreSQL when installed) and moto_server on loopback, deployments
from prefect.yaml, a process worker, a manual review answered with `tailguard approve`, the pointer in S3.
The `stack` and `worker` fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

RUN_PARAMS = {
    "approval": "manual",
    "epochs": 1,
    "max_steps": 30,
    "n_bootstrap": 50,
    "base_model": "tiny",
    "review_timeout_s": 900,
    "allow_duplicate_batch": True,
}


def _run(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def gpu_worker(stack, worker, procs):
    """A process worker on the `gpu` pool, where the fine-tune deployment runs (a CPU stands in here)."""
    log = open(stack["state"] / "gpu-worker.log", "wb")  # noqa: SIM115 - closed after the worker stops
    proc = subprocess.Popen(
        [str(VENV_BIN / "prefect"), "worker", "start", "--pool", "gpu", "--type", "process"],
        cwd=REPO,
        env=stack["env"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        procs.stop_pid(proc, timeout=30)
        log.close()


def _client(stack) -> httpx.Client:
    user, _, password = stack["env"]["PREFECT_API_AUTH_STRING"].partition(":")
    return httpx.Client(base_url=stack["api"], timeout=30, auth=(user, password))


def test_api_refuses_strangers_and_foreign_origins(stack):
    """Issue 13: the server make server starts has auth on, CORS limited to its UI, the secret 0600."""
    server_dir = stack["state"] / "server"
    for name in ("prefect-auth", "env.sh"):
        assert (server_dir / name).stat().st_mode & 0o777 == 0o600, name
    ui_origin = stack["api"].removesuffix("/api")
    with httpx.Client(base_url=stack["api"], timeout=30) as anonymous:
        assert anonymous.get("/health").status_code == 200  # probes stay open by Prefect's design
        refused = anonymous.post("/flow_runs/filter", json={"limit": 1})
        assert refused.status_code == 401, refused.text
        wrong = anonymous.post("/flow_runs/filter", json={"limit": 1}, auth=("tailguard", "guess"))
        assert wrong.status_code == 401
        for origin in ("http://evil.example", "null"):  # "null": a page opened from file://
            preflight = anonymous.options(
                "/flow_runs/filter",
                headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
            )
            assert "access-control-allow-origin" not in preflight.headers, (origin, preflight.headers)
        own = anonymous.options(
            "/flow_runs/filter", headers={"Origin": ui_origin, "Access-Control-Request-Method": "POST"}
        )
        assert own.headers.get("access-control-allow-origin") == ui_origin
    with _client(stack) as client:
        assert client.post("/flow_runs/filter", json={"limit": 1}).status_code == 200


def _trigger(
    stack, data: Path | None, deployment: str = "retrain/retrain", job_env: dict | None = None, **parameters
) -> str:
    """Create a flow run of a deployment through the REST API (job_env: the run's extra environment)."""
    if data is not None:
        parameters = {"data": str(data), **RUN_PARAMS, **parameters}
    body: dict = {"parameters": parameters}
    if job_env:
        body["job_variables"] = {"env": job_env}
    with _client(stack) as client:
        found = client.get(f"/deployments/name/{deployment}").raise_for_status().json()
        created = client.post(f"/deployments/{found['id']}/create_flow_run", json=body)
    return created.raise_for_status().json()["id"]


def _logs(stack, flow_run_id: str) -> str:
    with _client(stack) as client:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
        rows = client.post("/logs/filter", json=body).json()
    return "\n".join(row["message"] for row in rows)[-6000:]


def _wait_for(stack, flow_run_id: str, wanted: str, timeout: float) -> dict:
    """Poll the flow run until its state type is `wanted`; fail with its logs if it ends otherwise."""
    deadline = time.monotonic() + timeout
    state = None
    with _client(stack) as client:
        while time.monotonic() < deadline:
            run = client.get(f"/flow_runs/{flow_run_id}").raise_for_status().json()
            state = (run.get("state") or {}).get("type")
            if state == wanted:
                return run
            if state in ("FAILED", "CRASHED", "CANCELLED") or (
                state == "COMPLETED" and wanted != "COMPLETED"
            ):
                break
            time.sleep(1)
    worker_log = (stack["state"] / "worker.log").read_text(errors="replace")[-4000:]
    pytest.fail(f"flow run {flow_run_id} is {state}, expected {wanted}\n--- logs\n{_logs(stack, flow_run_id)}"
                f"\n--- worker\n{worker_log}")  # fmt: skip


def _approve(stack, flow_run_id: str, *args: str) -> str:
    return _run(
        [str(VENV_BIN / "tailguard"), "approve", flow_run_id, *args], stack["env"], timeout=120
    ).stdout


def _registry(stack):
    from tailguard.registry import Registry
    from tailguard.store import S3Store

    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update({k: stack["env"][k] for k in saved})
    try:
        store = S3Store(stack["env"]["TAILGUARD_STORE"][5:].split("/", 1)[0], "store")
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return Registry(store, "relevance")


def _version_of(registry, flow_run_id: str) -> str:
    (row,) = [r for r in registry.list_versions() if r.get("flow_run_id") == flow_run_id]
    return row["version"]


def test_manual_review_approve_then_reject(stack, worker, tmp_path):
    timings = {"servers_start_s": round(stack["start_s"], 1)}
    started = time.monotonic()
    data_dir = tmp_path / "batches"
    demo = ["demo-data", "--out", str(data_dir), "--rows", "600", "--batches", "1"]
    _run([str(VENV_BIN / "tailguard"), *demo], stack["env"])
    (batch,) = sorted(p for p in data_dir.iterdir() if p.is_file())
    registry = _registry(stack)

    # 1. Approved: the run pauses for review, `tailguard approve` resumes it, the pointer flips in S3.
    first = _trigger(stack, batch)
    _wait_for(stack, first, "PAUSED", timeout=600)
    timings["first_run_to_paused_s"] = round(time.monotonic() - started, 1)
    assert registry.production() is None  # nothing is promoted while the review is open
    # --override: a tiny model on 600 rows may fail a gate; the override is then recorded in the audit.
    out = _approve(stack, first, "--reviewer", "e2e-ana", "--comment", "reports read", "--override")
    assert "approved" in out
    assert _wait_for(stack, first, "COMPLETED", timeout=300)["state"]["name"] == "Promoted"
    candidate = _version_of(registry, first)
    pointer = registry.production()
    assert pointer["version"] == candidate and pointer["approved_by"] == "e2e-ana"
    assert pointer["decision_source"] == "cli" and pointer["policy_is_default"] is True
    promotes = [a for a in registry.audit() if a["action"] == "promote"]
    assert [(a["version"], a["approved_by"], a["comment"]) for a in promotes] == [
        (candidate, "e2e-ana", "reports read")
    ]
    pointer_bytes = registry.store.read_versioned(registry.pointer_key)

    # 2. Rejected: same flow, the reviewer says no; the pointer object is byte-for-byte unchanged.
    second = _trigger(stack, batch)
    _wait_for(stack, second, "PAUSED", timeout=600)
    assert "rejected" in _approve(
        stack, second, "--reviewer", "e2e-bo", "--reject", "--comment", "tail worse"
    )
    assert _wait_for(stack, second, "COMPLETED", timeout=300)["state"]["name"] == "Rejected"
    rejected = _version_of(registry, second)
    assert rejected != candidate
    assert registry.store.read_versioned(registry.pointer_key) == pointer_bytes
    rejects = [a for a in registry.audit() if a["action"] == "reject"]
    assert [(a["version"], a["rejected_by"]) for a in rejects] == [(rejected, "e2e-bo")]
    assert "tail worse" in rejects[0]["comment"]

    # Answering a run that is no longer paused is a clear error, not a silent success.
    late = subprocess.run([str(VENV_BIN / "tailguard"), "approve", second, "--reviewer", "x"], cwd=REPO,
                          env=stack["env"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert late.returncode == 1 and "could not resume" in late.stderr

    # 3. A bad promotion (the rejected candidate, by hand) is undone by the `rollback` deployment.
    tailguard = str(VENV_BIN / "tailguard")
    promote = [tailguard, "promote", rejected, "--by", "e2e-carol", "--override", "--comment", "e2e test"]
    _run(promote, stack["env"])
    assert registry.production()["version"] == rejected
    undo = _trigger(stack, None, "rollback/rollback", by="e2e-oncall")
    _wait_for(stack, undo, "COMPLETED", timeout=300)
    pointer = registry.production()
    assert (pointer["version"], pointer["action"], pointer["approved_by"]) == (
        candidate,
        "rollback",
        "e2e-oncall",
    )
    assert registry.audit()[-1]["action"] == "rollback"
    assert f"* {candidate}" in _run([tailguard, "models"], stack["env"]).stdout
    timings["total_s"] = round(time.monotonic() - started + stack["start_s"], 1)
    timings["postgres"] = stack["postgres"]
    print("e2e timings:", json.dumps(timings), file=sys.stderr)


def test_training_on_the_gpu_pool_through_the_store(stack, worker, gpu_worker, tmp_path):
    """TAILGUARD_TRAINING_POOL=gpu: retrain stages the compact frame in S3, the fine-tune deployment trains
    it on the gpu pool's worker, and retrain evaluates the model it left in the store."""
    import pandas as pd

    data_dir = tmp_path / "batches"
    demo = ["demo-data", "--out", str(data_dir), "--rows", "600", "--batches", "1", "--seed", "5"]
    _run([str(VENV_BIN / "tailguard"), *demo], stack["env"])
    (batch,) = sorted(p for p in data_dir.iterdir() if p.is_file())
    run_id = _trigger(
        stack, batch, job_env={"TAILGUARD_TRAINING_POOL": "gpu"}, approval="auto", balance="random_over"
    )
    _wait_for(stack, run_id, "COMPLETED", timeout=600)

    with _client(stack) as client:
        body = {"flows": {"name": {"any_": ["fine-tune"]}}, "sort": "START_TIME_DESC", "limit": 5}
        (fine_tune,) = client.post("/flow_runs/filter", json=body).raise_for_status().json()
        pool = client.get(f"/work_pools/{fine_tune['work_pool_name']}").raise_for_status().json()
    assert fine_tune["state"]["type"] == "COMPLETED" and pool["name"] == "gpu"
    data_key = fine_tune["parameters"]["data_key"]
    assert data_key.endswith("/train.parquet")

    registry = _registry(stack)
    version = _version_of(registry, run_id)
    manifest = registry.manifest(version)
    assert "model/model.safetensors" in manifest["files"]
    # The staged frame is the compact one: distinct rows with `repeats` counting the duplicated positives.
    local = tmp_path / "train.parquet"
    registry.store.get_file(data_key, local)
    staged = pd.read_parquet(local)
    after = manifest["balance"]["after"]
    assert staged["repeats"].max() > 1 and int(staged["repeats"].sum()) == after["rows"] > len(staged)
