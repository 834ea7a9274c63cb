"""Open the summary page and one Evidently page in real headless Chromium: no console errors, not blank."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tailguard import reports
from tailguard.gate import GatePolicy, decide_evaluation
from tailguard.metrics import EvalConfig, evaluate

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (make test installs it: apt-get install -y chromium)"
)
# Chromium prints every page console message (log, warn, error, uncaught exception) as INFO:CONSOLE.
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]?\s*(.*)")


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    items = [f"item{i}" for i in range(150)]
    p = np.r_[np.full(15, 0.04), np.full(135, 0.4 / 135)]
    train = pd.DataFrame(
        {"query": [f"drill {i % 200}" for i in range(2000)], "item_id": rng.choice(items, p=p, size=2000)}
    )
    n = 400
    ev = pd.DataFrame(
        {
            "query": [f"saw {i // 8}" for i in range(n)],
            "item_id": rng.choice(items, p=p, size=n),
            "label": rng.integers(0, 2, n),
        }
    )
    ev["item_title"] = np.where(
        np.arange(n) % 5 == 0, "<img src=x onerror=alert(1)> Saw & blade", "saw blade"
    )
    scores = {
        "candidate": np.clip(0.3 * ev["label"] + 0.7 * rng.random(n), 0, 1).to_numpy(),
        "production": rng.random(n),
    }
    evaluation = evaluate(ev, train, scores, EvalConfig(min_positives=10, n_bootstrap=100))
    out = tmp_path_factory.mktemp("browser")
    return reports.evaluation_reports(
        ev, scores, evaluation, decide_evaluation(evaluation, GatePolicy()), out, train_df=train
    )


def _open(page: Path, shot: Path) -> list[str]:
    """Load a page headless, screenshot it, return its console messages."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1200,900",
        "--virtual-time-budget=5000",
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={shot}",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert shot.exists(), f"no screenshot of {page}: rc={proc.returncode} {proc.stderr[-2000:]}"
    return [m.group(1) for line in proc.stderr.splitlines() if (m := CONSOLE.search(line))]


def _not_blank(shot: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    with image.open(shot) as img:
        grey = np.asarray(img.convert("L"), dtype=float)
    assert grey.std() > 5, f"{shot}: screenshot looks blank (pixel std {grey.std():.2f})"
    assert (grey < 128).mean() > 0.005, f"{shot}: almost no dark pixels (no text rendered)"


@pytest.mark.parametrize("key", ["summary", "classification_overall"])
def test_page_renders_without_console_errors(pages, key, tmp_path):
    shot = tmp_path / f"{key}.png"
    messages = _open(pages[key], shot)
    assert messages == [], f"{pages[key].name}: console messages {messages[:5]}"
    _not_blank(shot)


def test_console_errors_are_detected(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<html><body><h1>broken</h1><script>console.error('boom'); missingFn();</script></body></html>"
    )
    messages = _open(bad, tmp_path / "bad.png")
    assert any("boom" in m for m in messages) and any("missingFn" in m for m in messages)
