"""Process environment for embedded runs: quiet, offline Prefect and Hugging Face (set before they import)."""

from __future__ import annotations

import os
from pathlib import Path

from tailguard.settings import get_settings


def configure_embedded(create_home: bool = True) -> None:
    """Fill in environment defaults; values the user already set win.

    create_home: make PREFECT_HOME now (an unwritable one then fails here, at once). Importing the flows
    package passes False, so `tailguard --help` or `tailguard validate` in any folder creates nothing; the
    commands and entry points that start a local flow run call it with True.
    """
    settings = get_settings()
    home = settings.home.resolve()
    defaults = {
        # An unwritable PREFECT_HOME failed after 25 s with a misleading timeout: keep it ours.
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # The temporary server needs 9-13 s on 2 idle cores; its 20 s default timed out on a loaded machine.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if settings.offline:
        defaults |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    if create_home:
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
