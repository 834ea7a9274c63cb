"""Flow tier: a session-wide Prefect test harness (real Prefect, temporary database)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(tmp_path_factory):
    """One prefect_test_harness per session (~6-7 s once, STACK_NOTES) with the heartbeat off (~1 s a run)."""
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
