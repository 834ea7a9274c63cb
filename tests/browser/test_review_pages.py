"""A reviewer's browser on the report viewer: `tailguard reports serve` over a store, Debian's Chromium.

Opens summary.html through the viewer, reads the verdict, checks that nothing overlaps the slice table at
1280, 1366 and 1440 px, follows links to Evidently pages that must render under the viewer's CSP, and
shows that the CSP stops a script smuggled into a stored page.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from playwright import sync_api as playwright_api

from tailguard import reports, summary
from tailguard.gate import decide_evaluation, resolve_policy
from tailguard.metrics import EvalConfig, evaluate
from tailguard.store import LocalStore

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make browser)")
VERSION = "20261130T120000Z-review"
PREFIX = f"models/relevance/versions/{VERSION}"


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> tuple[LocalStore, str]:
    """A store holding one version's real report pages (Evidently, drift, class balance, summary)."""
    rng = np.random.default_rng(3)
    items = [f"item{i}" for i in range(150)]
    p = np.r_[np.full(15, 0.04), np.full(135, 0.4 / 135)]
    n_train, n = 2000, 600
    train = pd.DataFrame(
        {
            "query": [f"drill {i % 200}" for i in range(n_train)],
            "item_id": rng.choice(items, p=p, size=n_train),
            "item_title": "drill bit",
            "label": rng.integers(0, 2, n_train),
        }
    )
    ev = pd.DataFrame(
        {
            "query": [f"saw {i // 8}" for i in range(n)],
            "item_id": rng.choice(items, p=p, size=n),
            "item_title": np.where(np.arange(n) % 7 == 0, "<b>saw</b> </script> & blade", "saw blade"),
            "label": rng.integers(0, 2, n),
        }
    )
    scores = {
        "candidate": np.clip(0.25 * ev["label"] + 0.7 * rng.random(n), 0, 1),
        "production": rng.random(n),
    }
    evaluation = evaluate(ev, train, scores, EvalConfig(min_positives=10, n_bootstrap=100))
    policy, record = resolve_policy()
    out = tmp_path_factory.mktemp("review") / "reports"
    out.mkdir()
    drift = reports.drift_report(train, ev, out / "drift.html")
    reports.class_balance_report(train, ev, out / "class_balance.html")
    decision = decide_evaluation(evaluation, policy, drift=drift).with_policy(record)
    reports.evaluation_reports(ev, scores, evaluation, decision, out, train_df=train)
    store = LocalStore(out.parent / "store")
    store.upload_dir(out, f"{PREFIX}/reports")
    return store, summary.verdict(decision)[0]


@pytest.fixture(scope="module")
def viewer_url(stored, procs):
    """`tailguard reports serve --port 0` as a subprocess; yields its base URL."""
    store, _ = stored
    proc = subprocess.Popen(
        [str(procs.venv_bin / "tailguard"), "reports", "serve", "--store", str(store.root), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", proc.stdout.readline())
        assert match, f"viewer did not start: {proc.stderr.read() if proc.poll() is not None else ''}"
        yield match.group(1)
    finally:
        procs.stop_pid(proc)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_page(browser, url: str, width: int = 1366):
    """A page on `url` with every request off 127.0.0.1 refused and console errors collected."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    response = page.goto(url, wait_until="load")
    return context, page, response, errors


def _overlaps(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and (a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])
    )


@pytest.mark.parametrize("width", [1280, 1366, 1440])
def test_summary_reads_verdict_first_and_nothing_overlaps_the_slice_table(browser, viewer_url, stored, width):
    _, expected = stored
    context, page, response, errors = open_page(browser, f"{viewer_url}/{PREFIX}/reports/summary.html", width)
    try:
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'none'" in response.headers["content-security-policy"]
        word = page.inner_text("#verdict .word")
        assert word == expected and word in ("PROMOTE", "DO NOT PROMOTE", "NEEDS REVIEW")
        # the verdict is the first thing under the title, coloured by its class
        colour = page.eval_on_selector("#verdict", "e => getComputedStyle(e).backgroundColor")
        assert colour in ("rgb(218, 251, 225)", "rgb(255, 235, 233)", "rgb(255, 248, 197)")
        table = page.eval_on_selector(
            "#slices-table", "e => e.closest('.scroll').getBoundingClientRect().toJSON()"
        )
        others = page.eval_on_selector_all(
            "main > *:not(:has(#slices-table)), main > * > svg",
            "els => els.map(e => e.getBoundingClientRect().toJSON()).filter(r => r.width && r.height)",
        )
        assert len(others) > 5
        assert not [o for o in others if _overlaps(table, o)], f"{width}px: elements overlap the slice table"
        assert table["x"] + table["width"] <= width, "the slice table runs past the window"
        assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
        assert errors == [], errors
    finally:
        context.close()


def test_summary_links_every_page_and_they_render(browser, viewer_url, stored):
    store, _ = stored
    pages = {k.rsplit("/", 1)[1] for k in store.list_keys(f"{PREFIX}/reports/")} - {"summary.html"}
    assert {"drift.html", "class_balance.html", "classification_overall.html"} <= pages
    context, page, _, errors = open_page(browser, f"{viewer_url}/{PREFIX}/reports/summary.html")
    try:
        hrefs = set(page.eval_on_selector_all("nav.reports a", "els => els.map(a => a.getAttribute('href'))"))
        assert hrefs == pages
        for link_text, shown in (("classification overall", "ROC AUC"), ("drift", "Drift")):
            with page.expect_navigation(wait_until="load") as nav:
                page.click(f"nav.reports a:text-is('{link_text}')")
            headers = nav.value.headers
            assert headers["content-type"] == "text/html; charset=utf-8"
            assert "script-src 'sha256-" in headers["content-security-policy"]
            page.wait_for_selector(f"text={shown}", timeout=30_000)  # drawn by Evidently's script
            assert len(page.inner_text("body")) > 200
            page.go_back(wait_until="load")
        assert errors == [], errors  # no CSP violation, no script error
    finally:
        context.close()


def test_csp_stops_a_script_smuggled_into_a_stored_page(browser, viewer_url, stored):
    """An Evidently page with one extra inline script: the viewer allows none of its scripts."""
    store, _ = stored
    page_html = store.get_bytes(f"{PREFIX}/reports/drift.html").decode()
    store.put_bytes(
        f"{PREFIX}/reports/tampered.html",
        page_html.replace("</body>", "<script>window.__pwned = 'tampered'</script></body>").encode(),
    )
    context, page, response, errors = open_page(browser, f"{viewer_url}/{PREFIX}/reports/tampered.html")
    try:
        page.wait_for_timeout(1000)
        assert page.evaluate("window.__pwned ?? null") is None
        assert "sandbox" in response.headers["content-security-policy"]
        assert any("Content Security Policy" in e for e in errors), errors
    finally:
        context.close()
