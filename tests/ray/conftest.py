"""A real Ray cluster for the ray tier: a head and one worker node, separate processes, on loopback only.

As root, the session enters a network namespace holding only `lo` (Ray otherwise rewrites 127.0.0.1 to the
machine's address and listens on every interface), starts both nodes there, and stops them by
PID at the end. Without root it starts them with --node-ip-address=127.0.0.1 (Ray may still advertise the
machine's address; the nodes are stopped by PID all the same).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

if importlib.util.find_spec("ray") is None:  # find_spec, not import: Ray reads its auth settings on import
    pytest.skip("the ray tier needs tailguard[ray]", allow_module_level=True)

VENV_BIN = Path(sys.executable).parent
CLONE_NEWNET = 0x40000000
WORKER_NODE_PORT = 26411  # the worker raylet's node-manager port: how the fault test finds its PID


def _setns(fd: int) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


def _enter_loopback_namespace(name: str) -> int | None:
    """Move this process into a new network namespace with only `lo`; the fd to return to, or None."""
    if os.geteuid() != 0 or sys.platform != "linux":
        return None
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True)
    if made.returncode != 0:
        return None
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    original = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)  # main thread, before ray.init: Ray's threads and children inherit it
    finally:
        os.close(target)
    return original


def _ray_pids(temp_dir: Path, port: int | None = None) -> list[int]:
    """PIDs of the processes of our cluster: every process whose command line names our temp dir, session
    or (the client server, whose parent `ray start` has exited) our GCS address, and their descendants
    (dashboard agents rename themselves), found under /proc (ray start daemonizes: Popen's PID is gone)."""
    pids, children = [], {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
        if str(temp_dir) in cmdline or (port and f"--address=127.0.0.1:{port} " in cmdline + " "):
            pids.append(int(entry.name))
    found, queue = set(pids), list(pids)
    while queue:
        for child in children.get(queue.pop(), []):
            if child not in found and child != os.getpid():
                found.add(child)
                queue.append(child)
    return sorted(found)


def worker_raylet_pid(temp_dir: Path) -> int | None:
    """PID of the worker node's raylet (started with --node-manager-port=WORKER_NODE_PORT)."""
    for pid in _ray_pids(temp_dir):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "raylet" in cmdline.split(" ")[0] and f"--node_manager_port={WORKER_NODE_PORT}" in cmdline:
            return pid
    return None


def _start(args: list[str], env: dict) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-1500:]
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {tail}")


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """Head + one worker node (1 CPU each) on 127.0.0.1, joined by this process as the driver."""
    name = f"tailguard-ray-{uuid.uuid4().hex[:8]}"
    original_ns = _enter_loopback_namespace(name)
    temp_dir = Path(f"/tmp/tgray-{uuid.uuid4().hex[:6]}")  # short: Ray's socket paths are length-limited
    port = 26400 + os.getpid() % 9
    temp_dir.mkdir(parents=True)
    # Ray 2.60 turns token authentication on: one token for head, worker and driver, in a 0600 file.
    token = temp_dir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    # A Ray job's entrypoint runs `python` from the head node's PATH, as in the worker image.
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    ray_bin = str(VENV_BIN / "ray")
    dashboard_port = port + 1000
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    started = time.perf_counter()
    try:
        _start(
            [ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", f"--temp-dir={temp_dir}",
             *common],
            env,
        )  # fmt: skip
        _start(
            [ray_bin, "start", f"--address=127.0.0.1:{port}", f"--node-manager-port={WORKER_NODE_PORT}",
             *common],
            env,
        )  # fmt: skip
        import ray  # noqa: F401  (first import here, after RAY_AUTH_* are set)

        from tailguard import ray_engine

        facts = ray_engine.connect(f"127.0.0.1:{port}")
        yield SimpleNamespace(
            address=f"127.0.0.1:{port}",
            dashboard=f"http://127.0.0.1:{dashboard_port}",  # Ray job submission
            temp_dir=temp_dir,
            facts=facts,
            namespace=name if original_ns is not None else None,
            start_s=time.perf_counter() - started,
            worker_raylet_pid=lambda: worker_raylet_pid(temp_dir),
        )
    finally:
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
        for pid in _ray_pids(temp_dir, port):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(temp_dir, ignore_errors=True)
        if original_ns is not None:
            _setns(original_ns)
            os.close(original_ns)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture(scope="session")
def harness(ray_cluster, tmp_path_factory):
    """A Prefect test server inside the cluster's loopback namespace (after ray_cluster entered it), shared
    by the tier's flow tests."""
    saved = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness(server_startup_timeout=180):
            yield
    finally:
        if saved is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = saved


def pytest_collection_modifyitems(items: list) -> None:
    """The fault test kills the worker node for good: run it after every other test of the tier."""
    items.sort(key=lambda item: "losing_the_worker_node" in item.name)
