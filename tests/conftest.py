"""Shared fixtures: a moto_server on loopback (real S3 HTTP API) and a `store` run against local and S3."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Block until something listens on 127.0.0.1:port (or fail, naming the process' exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode} before listening")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def stop_pid(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process we started by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


@pytest.fixture(scope="session")
def procs() -> SimpleNamespace:
    """Process helpers for tests (a fixture, because conftest modules are not importable by name)."""
    return SimpleNamespace(
        repo=REPO, venv_bin=VENV_BIN, free_port=free_port, wait_for_port=wait_for_port, stop_pid=stop_pid
    )


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory) -> Iterator[str]:
    """Start `moto_server -H 127.0.0.1 -p PORT` once per session; yields its endpoint URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_pid(proc)


@pytest.fixture
def s3_env(moto_server, monkeypatch, tmp_path) -> str:
    """Point boto3 at the moto server with dummy credentials, isolated from any ~/.aws config."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return moto_server


@pytest.fixture
def s3_uri(s3_env) -> str:
    """A fresh bucket on the moto server, as s3://bucket/prefix."""
    from tailguard.store import S3Store

    bucket = f"tg-{uuid.uuid4().hex[:12]}"
    S3Store(bucket).ensure_bucket()
    return f"s3://{bucket}/tailguard"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """The same tests against LocalStore (a temp folder) and S3Store (moto_server over HTTP)."""
    from tailguard.store import open_store

    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(request.getfixturevalue("s3_uri"))
