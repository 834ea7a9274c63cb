"""Fixtures of the e2e tier: scripts/server.sh's stack (Prefect with API auth, PostgreSQL when installed,
moto_server) on free loopback ports, the deployments of prefect.yaml and a process worker on the cpu pool.

Module-scoped: each test module gets its own servers and bucket, so one module's promotions never show in
another's registry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _run(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def stack(procs):
    """scripts/server.sh start in a private folder on free ports; stopped (by PID) when the module ends.

    `viewer_port` is reserved for a report viewer (`tailguard reports serve`): TAILGUARD_REPORTS_URL points
    there for every process started with `env`, the worker included, so link artifacts name it.
    """
    # 0755: PostgreSQL runs as the postgres user when we are root and must reach its data folder.
    state = Path(tempfile.mkdtemp(prefix="tailguard-e2e-"))
    state.chmod(0o755)
    ports = {name: procs.free_port() for name in ("PREFECT_PORT", "MOTO_PORT", "PG_PORT")}
    viewer_port = procs.free_port()
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "TAILGUARD_SERVER_DIR": str(state / "server"),
        "TAILGUARD_BUCKET": "tailguard-e2e",
        "VENV_BIN": str(VENV_BIN),
    }
    for name in ("PREFECT_API_URL", "AWS_PROFILE", "TAILGUARD_STORE", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    started = time.monotonic()
    try:
        start = subprocess.run(
            ["bash", "scripts/server.sh", "start"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert start.returncode == 0, f"server.sh start failed:\n{start.stdout}\n{start.stderr}"
        for line in (state / "server" / "env.sh").read_text().splitlines():
            for pair in line.removeprefix("export ").split():
                key, _, value = pair.partition("=")
                env[key] = value
        env.update(
            PREFECT_HOME=str(state / "client-home"),
            TAILGUARD_HOME=str(state / "tg"),
            TAILGUARD_TORCH_THREADS="1",
            PREFECT_WORKER_QUERY_SECONDS="1",  # default 10 s polling would dominate the test
            PREFECT_LOGGING_LEVEL="INFO",
            HF_HUB_OFFLINE="1",
            AWS_CONFIG_FILE=str(state / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(state / "no-aws-credentials"),
            TAILGUARD_REPORTS_URL=f"http://127.0.0.1:{viewer_port}",
        )
        yield {
            "env": env,
            "state": state,
            "api": env["PREFECT_API_URL"],
            "ui": env["PREFECT_API_URL"].removesuffix("/api"),
            "viewer_port": viewer_port,
            "start_s": time.monotonic() - started,
            "postgres": "postgres: 127.0.0.1" in start.stdout,
        }
    finally:
        subprocess.run(
            ["bash", "scripts/server.sh", "stop"], cwd=REPO, env=env, capture_output=True, timeout=120
        )
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def worker(stack, procs):
    """Deploy from prefect.yaml, then one process worker on the cpu pool (own session, stopped by PID)."""
    env = stack["env"]
    prefect = str(VENV_BIN / "prefect")
    for pool in ("cpu", "gpu", "cpu"):  # the second `cpu` proves the creation is idempotent
        _run([prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"], env)
    _run([prefect, "--no-prompt", "deploy", "--all"], env)  # what `make deploy` runs
    log = open(stack["state"] / "worker.log", "wb")  # noqa: SIM115 - closed after the worker stops
    proc = subprocess.Popen(
        [prefect, "worker", "start", "--pool", "cpu", "--type", "process"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own session, like `set -m`: SIGTERM reaches it
    )
    try:
        yield proc
    finally:
        procs.stop_pid(proc, timeout=30)
        log.close()
