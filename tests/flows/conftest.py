"""Flow tier: a session-wide Prefect test harness (real Prefect, temporary database)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(tmp_path_factory):
    """One prefect_test_harness per session (~6-7 s once on 2 cores) with the heartbeat off (~1 s a run)."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


@pytest.fixture
def tailguard_home(tmp_path, monkeypatch):
    """A fresh tailguard state folder (local store inside) for one test."""
    home = tmp_path / "tg"
    monkeypatch.setenv("TAILGUARD_HOME", str(home))
    monkeypatch.delenv("TAILGUARD_STORE", raising=False)
    monkeypatch.setenv("TAILGUARD_TORCH_THREADS", "1")
    return home


@contextlib.contextmanager
def _module_home(home: Path) -> Iterator[Path]:
    """TAILGUARD_HOME set to `home` (local store inside, one torch thread) for a module-scoped fixture's
    flow runs, undone after; the per-test `tailguard_home` does the same with monkeypatch."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TAILGUARD_HOME", str(home))
    mp.delenv("TAILGUARD_STORE", raising=False)
    mp.setenv("TAILGUARD_TORCH_THREADS", "1")
    try:
        yield home
    finally:
        mp.undo()


@contextlib.contextmanager
def _lock_held_elsewhere(name: str) -> Iterator[None]:
    """Another holder (a thread) keeps the promotion lock of model `name` for the block; released after."""
    from tailguard_tasks.locks import promotion_lock

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with promotion_lock(name, timeout_s=30):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        yield
    finally:
        release.set()
        holder.join()


@pytest.fixture(scope="session")
def module_home():
    """`with module_home(folder) as home:` TAILGUARD_HOME for a module-scoped fixture's flow runs."""
    return _module_home


@pytest.fixture(scope="session")
def lock_held_elsewhere():
    """`with lock_held_elsewhere(model_name):` another holder keeps that model's promotion lock."""
    return _lock_held_elsewhere
