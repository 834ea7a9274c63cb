"""Every HTML page tailguard stores, opened in headless Chromium with hostile text in every text column.

Each payload tries to run script (`window.__pwned = '<column>'`, or a dialog) by closing a <script>
element, opening an HTML tag, or breaking out of an attribute. A page passes when nothing ran and, where
the page shows a value, it shows the payload's characters as text. The last test proves the detector: the
same data through Evidently's own `save_html` does run the payload (Evidently 0.7.23).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from playwright import sync_api as playwright_api

from tailguard import reports
from tailguard.gate import GatePolicy, decide_evaluation
from tailguard.metrics import EvalConfig, evaluate
from tailguard.validation import ValidationPolicy, build_data_docs, validate_frame

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make browser)")

# One payload per column, each naming its column, each a different way out of the page's context.
HOSTILE = {
    "query": "drill </script><svg/onload=window.__pwned='query'>",
    "item_id": "sku\"'><img src=x onerror=window.__pwned='item_id'>",
    "item_title": "saw </script><script>window.__pwned='item_title';alert('item_title')</script><!--",
    "category": "tools\u2028</script><img src=x onerror=window.__pwned='category'> &amp; more",
}
# A file name cannot hold '/', so no `</script>`: it attacks attributes and HTML text instead.
HOSTILE_FILE = "batch\"'><img src=x onerror=window.__pwned='file'>.csv"


@dataclass
class Visit:
    pwned: object
    dialogs: list[str]
    text: str
    data: str  # Evidently's embedded report data as the page's JavaScript sees it ("" elsewhere)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def visit(browser, page_path: Path) -> Visit:
    """Open a stored page offline, let its handlers fire, and report what ran and what it shows."""
    context = browser.new_context()
    context.route(re.compile(r"^https?://"), lambda route: route.abort())  # offline, like a reviewer's file
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(page_path.as_uri(), wait_until="load")
    page.wait_for_timeout(1500)  # onerror/onload of injected elements fire after load; Evidently draws late
    pwned = page.evaluate("window.__pwned ?? null")
    text = page.inner_text("body")
    data = page.evaluate(
        "Object.keys(window).filter(k => /^(additional_graphs_)?metric_/.test(k))"
        ".map(k => JSON.stringify(window[k])).join('\\n')"
    )
    context.close()
    return Visit(pwned, dialogs, text, data)


def assert_inert(v: Visit, where: str) -> None:
    assert v.pwned is None and v.dialogs == [], f"{where}: script ran (__pwned={v.pwned!r}, {v.dialogs})"


def hostile_frame(n: int, seed: int, items: list[str]) -> pd.DataFrame:
    """n rows of plain shop text with every 6th row carrying the column's payload."""
    rng = np.random.default_rng(seed)
    words = ["drill", "saw", "hammer", "lamp", "hose", "paint", "ladder", "glue"]
    hostile = np.arange(n) % 6 == 0
    df = pd.DataFrame(
        {
            "query": [f"{words[i % 8]} {words[(i // 8) % 8]}" for i in range(n)],
            "item_id": rng.choice(items, size=n),
            "item_title": [f"{words[(i * 3) % 8]} set {i % 17}" for i in range(n)],
            "label": rng.integers(0, 2, n),
            "category": rng.choice(["garden", "tools", "lighting"], size=n),
        }
    )
    for col, payload in HOSTILE.items():
        df.loc[hostile, col] = payload
    return df


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("hostile")
    items = [f"item{i}" for i in range(120)]
    train = hostile_frame(1500, 0, items)
    train.loc[train["item_id"] == HOSTILE["item_id"], "item_id"] = "item0"  # cold in eval, see below
    ev = hostile_frame(420, 1, items[:60] + [f"new{i}" for i in range(30)])
    bad = ev["item_id"] == HOSTILE["item_id"]
    # The hostile rows are cold items the models disagree on most: the summary's examples table shows them.
    rng = np.random.default_rng(2)
    cand = np.where(bad, 0.99, np.clip(0.3 * ev["label"] + 0.6 * rng.random(len(ev)), 0, 1))
    prod = np.where(bad, 0.01, rng.random(len(ev)))
    scores = {"candidate": cand, "production": prod}
    evaluation = evaluate(ev, train, scores, EvalConfig(min_positives=5, n_bootstrap=50))
    made = reports.evaluation_reports(
        ev, scores, evaluation, decide_evaluation(evaluation, GatePolicy()), out / "eval", train_df=train
    )
    reports.drift_report(train, ev, out / "drift.html")
    reports.class_balance_report(
        train.assign(label=train["label"].astype(str)), ev, out / "class_balance.html"
    )
    made |= {"drift": out / "drift.html", "class_balance": out / "class_balance.html"}
    # GX: short length limits make every query and title an unexpected value shown in the data docs.
    result = validate_frame(
        ev, str(out / HOSTILE_FILE), None, ValidationPolicy(title_max_length=12, query_max_length=12)
    )
    assert not result.success
    docs = build_data_docs(result, out / "data_docs")
    for page in sorted(docs.rglob("*.html")):
        made[f"gx:{page.relative_to(docs)}"] = page
    return made


def test_every_page_exists(pages) -> None:
    assert {"summary", "classification_overall", "drift", "class_balance", "gx:index.html"} <= set(pages)
    assert any(k.startswith("gx:validations/") and "titles" in k for k in pages)


@pytest.mark.parametrize(
    "key", ["summary", "classification_overall", "drift", "class_balance", "gx:index.html"]
)
def test_page_runs_no_hostile_script(browser, pages, key) -> None:
    assert_inert(visit(browser, pages[key]), key)


def test_gx_validation_pages_run_nothing_and_show_the_values_as_text(browser, pages) -> None:
    shown = ""
    for key, path in pages.items():
        if key.startswith("gx:validations/"):
            v = visit(browser, path)
            assert_inert(v, key)
            shown += v.text
    assert HOSTILE["item_title"] in shown and HOSTILE["query"] in shown


def test_summary_shows_hostile_cells_as_text(browser, pages) -> None:
    v = visit(browser, pages["summary"])
    for col in ("query", "item_id", "item_title"):
        assert HOSTILE[col] in v.text, f"summary does not show the {col} payload as text"
    # category slices are named after the value; the line separator renders as whitespace
    assert "</script><img src=x onerror=window.__pwned='category'>" in v.text


def test_drift_page_keeps_hostile_values_intact_in_its_data(browser, pages) -> None:
    v = visit(browser, pages["drift"])
    assert_inert(v, "drift")
    assert v.data, "drift: no Evidently report data found in the page"
    # The category plot carries the category values: decoded by the page, they equal the input exactly.
    assert json.dumps(HOSTILE["category"], ensure_ascii=False)[1:-1] in v.data


def test_detector_catches_evidently_own_output(browser, pages, tmp_path) -> None:
    """Positive control: Evidently's save_html with the same drift data runs the category payload."""
    ev, presets = reports._evidently()
    frame = pd.DataFrame({"category": [HOSTILE["category"], "garden", "tools"] * 20})
    definition = ev.DataDefinition(categorical_columns=["category"])
    snapshot = ev.Report([presets.DataDriftPreset(columns=["category"])]).run(
        ev.Dataset.from_pandas(frame, data_definition=definition),
        ev.Dataset.from_pandas(frame.iloc[::-1].reset_index(drop=True), data_definition=definition),
    )
    raw = tmp_path / "raw.html"
    snapshot.save_html(str(raw))
    assert visit(browser, raw).pwned == "category"
    safe = tmp_path / "safe.html"
    reports._save_html(snapshot, safe)
    assert_inert(visit(browser, safe), "escaped page")
