"""A reviewer in a real browser (Debian's Chromium driven by Playwright) against the e2e stack: Prefect with
API auth, moto_server, the deployments, a cpu worker, and `tailguard reports serve` over the S3 store.

Log in through the UI's login form, start a custom run of `retrain` from the deployment's run form, wait for
the pause, open the summary page from the run's artifacts through the report viewer, read the verdict,
follow one link to an Evidently page, approve in the UI's resume form with a name and a comment, then check
the final state's name, the production pointer and the audit.

Every request that leaves 127.0.0.1 is aborted and recorded. Prefect 3.9.1's UI (v2) initialises its
Amplitude SDK on every page whatever the settings, and that SDK fetches its remote configuration from
sr-client-cfg.amplitude.com; PREFECT_SERVER_ANALYTICS_ENABLED=false (scripts/server.sh) stops the events
themselves (api2.amplitude.com), which the test asserts were never attempted (docs/OPERATIONS.md).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium")
VENV_BIN = Path(sys.executable).parent
SHOTS = Path("/tmp/ui_shots")
# The form fields this test types into, and what the run must receive (a small, fast run).
FORM_VALUES = {"epochs": 1, "max_steps": 30, "n_bootstrap": 50, "review_timeout_s": 900}
# The UI's analytics SDK fetches its config here on every page; no Prefect 3.9.1 setting stops it.
ANALYTICS_CONFIG_HOSTS = {"sr-client-cfg.amplitude.com", "sr-client-cfg.eu.amplitude.com"}
LOOPBACK = re.compile(r"^(https?|wss?)://127\.0\.0\.1[:/]")


def _client(stack) -> httpx.Client:
    user, _, password = stack["env"]["PREFECT_API_AUTH_STRING"].partition(":")
    return httpx.Client(base_url=stack["api"], timeout=30, auth=(user, password))


def _wait_for(stack, flow_run_id: str, wanted: str, timeout: float) -> dict:
    """Poll the flow run until its state type is `wanted`; fail naming the state it ended in."""
    deadline = time.monotonic() + timeout
    run: dict = {}
    with _client(stack) as client:
        while time.monotonic() < deadline:
            run = client.get(f"/flow_runs/{flow_run_id}").raise_for_status().json()
            kind = (run.get("state") or {}).get("type")
            if kind == wanted:
                return run
            if kind in ("FAILED", "CRASHED", "CANCELLED", "COMPLETED"):
                break
            time.sleep(1)
    worker_log = (stack["state"] / "worker.log").read_text(errors="replace")[-4000:]
    pytest.fail(f"flow run {flow_run_id} is {run.get('state')}, expected {wanted}\n--- worker\n{worker_log}")


def _registry(stack):
    """The S3 store's registry of model `relevance`; S3Store builds its boto3 client from the environment."""
    from tailguard.registry import Registry
    from tailguard.store import S3Store

    keys = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    with pytest.MonkeyPatch.context() as patch:
        for key in keys:
            patch.setenv(key, stack["env"][key])
        bucket, _, prefix = stack["env"]["TAILGUARD_STORE"].removeprefix("s3://").partition("/")
        return Registry(S3Store(bucket, prefix), "relevance")


@pytest.fixture(scope="module")
def viewer(stack, procs):
    """`tailguard reports serve` over the stack's S3 store on the port TAILGUARD_REPORTS_URL names."""
    port = stack["viewer_port"]
    log = open(stack["state"] / "viewer.log", "wb")  # noqa: SIM115 - closed after the viewer stops
    proc = subprocess.Popen(
        [str(VENV_BIN / "tailguard"), "reports", "serve", "--port", str(port)],
        env=stack["env"],  # TAILGUARD_STORE=s3://... and the moto endpoint
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        procs.wait_for_port(port, timeout=60, proc=proc)
        yield stack["env"]["TAILGUARD_REPORTS_URL"]
    finally:
        procs.stop_pid(proc)
        log.close()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium not installed (make browser)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def new_page(browser, outside: list[str]):
    """A page whose requests off 127.0.0.1 are aborted and appended to `outside`."""

    def guard(route) -> None:
        url = route.request.url
        if LOOPBACK.match(url) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.route("**/*", guard)
    return context, context.new_page()


def shot(page, name: str) -> None:
    """A screenshot for a person reading a failure (best effort)."""
    try:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    except Exception:  # noqa: BLE001 - a screenshot must never hide the real failure
        pass


def log_in(page, ui: str, auth: str) -> None:
    """The UI asks for the API's auth string (user:password) on its login form, then keeps it locally."""
    page.goto(f"{ui}/", wait_until="networkidle")
    page.wait_for_url(re.compile(r"/login"))  # with API auth on, every page sends a stranger here first
    page.get_by_placeholder("admin:pass").fill(auth)
    page.get_by_role("button", name="Login").click()
    page.wait_for_url(re.compile(r"/dashboard"))


def start_run_from_form(page, ui: str, deployment_id: str, data: str) -> None:
    """Fill the deployment's custom run form (the labels are the parameter names) and submit it."""
    page.goto(f"{ui}/v2/deployments/deployment/{deployment_id}/run", wait_until="networkidle")
    page.get_by_label("data", exact=True).fill(data)
    for name, value in FORM_VALUES.items():
        page.get_by_label(f"{name} (Optional)", exact=True).fill(str(value))
    shot(page, "1-run-form")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(re.compile(r"/deployments/deployment/.*tab=Runs"))


def open_summary_from_artifacts(page, ui: str, run_id: str) -> str:
    """From the run's Artifacts tab to summary.html through the report link; returns the viewer's URL."""
    page.goto(f"{ui}/v2/runs/flow-run/{run_id}?tab=Artifacts", wait_until="networkidle")
    page.get_by_text("Report: summary", exact=True).click()
    link = page.locator("main a[href$='/reports/summary.html']")
    link.wait_for()
    with page.expect_navigation(wait_until="load"):
        link.click()
    return page.url


def resume_in_form(page, ui: str, run_id: str, reviewer: str, comment: str, override: bool) -> str:
    """Approve in the run's Resume dialog (the Review RunInput as a form); returns the dialog's prompt."""
    page.goto(f"{ui}/v2/runs/flow-run/{run_id}", wait_until="networkidle")
    page.locator("main").get_by_role("button", name="Open menu").first.click()
    page.get_by_role("menuitem", name="Resume").click()
    dialog = page.get_by_role("dialog")
    # The reviewer is required (flows/retrain.Review has no default): the form must not call it optional.
    reviewer_field = dialog.get_by_label(re.compile(r"^Reviewer(?! \(Optional\))"))
    reviewer_field.wait_for()
    assert dialog.get_by_label("Reviewer (Optional)").count() == 0
    # The prompt (the pause's description) is fetched after the form's fields: read it once it is drawn
    # (a fresh-clone run read the UI's generic "Provide input to resume ..." placeholder instead).
    dialog.get_by_text(re.compile(r": candidate \S+")).first.wait_for(timeout=60_000)
    prompt = dialog.inner_text()
    dialog.get_by_label("Approve (Optional)").click()
    reviewer_field.fill(reviewer)
    dialog.get_by_label("Comment (Optional)").fill(comment)
    if override:
        dialog.get_by_label("Override (Optional)").click()
    shot(page, "4-resume-form")
    dialog.get_by_role("button", name="Resume").click()
    dialog.wait_for(state="hidden")
    return prompt


def test_review_in_the_browser(stack, worker, viewer, browser, tmp_path):
    env, ui = stack["env"], stack["ui"]
    data_dir = tmp_path / "batches"
    demo = ["demo-data", "--out", str(data_dir), "--rows", "600", "--batches", "1", "--seed", "11"]
    subprocess.run(
        [str(VENV_BIN / "tailguard"), *demo], env=env, check=True, capture_output=True, timeout=120
    )
    (batch,) = sorted(p for p in data_dir.iterdir() if p.is_file())
    with _client(stack) as client:
        deployment = client.get("/deployments/name/retrain/retrain").raise_for_status().json()
        assert client.get("/admin/settings").json()["server"]["analytics_enabled"] is False
    registry = _registry(stack)
    outside: list[str] = []
    context, page = new_page(browser, outside)
    try:
        # 1. Log in and start a custom run from the deployment's form.
        log_in(page, ui, env["PREFECT_API_AUTH_STRING"])
        start_run_from_form(page, ui, deployment["id"], str(batch))
        with _client(stack) as client:
            body = {"deployments": {"id": {"any_": [deployment["id"]]}}, "limit": 5}
            (run,) = client.post("/flow_runs/filter", json=body).raise_for_status().json()
        assert run["parameters"]["data"] == str(batch)
        assert {k: run["parameters"][k] for k in FORM_VALUES} == FORM_VALUES
        assert run["parameters"]["approval"] == "manual"  # the deployment's default, kept by the form
        paused = _wait_for(stack, run["id"], "PAUSED", timeout=600)
        assert "awaiting-review" in paused["tags"]
        (candidate,) = [t.removeprefix("candidate:") for t in paused["tags"] if t.startswith("candidate:")]

        # 2. The summary page, from the run's artifacts through the report viewer: the verdict first.
        from tailguard.summary import verdict

        decision = registry.store.get_bytes(f"{registry.version_prefix(candidate)}/decision.json")
        expected, _ = verdict(json.loads(decision))
        url = open_summary_from_artifacts(page, ui, run["id"])
        assert url == f"{viewer}/models/relevance/versions/{candidate}/reports/summary.html"
        word = page.inner_text("#verdict .word")
        shot(page, "2-summary")
        assert word == expected
        assert f"verdict:{word.lower().replace(' ', '-')}" in paused["tags"]

        # 3. One link to an Evidently page, which must draw under the viewer's CSP.
        with page.expect_navigation(wait_until="load") as nav:
            page.click("nav.reports a:text-is('classification overall')")
        assert "script-src 'sha256-" in nav.value.headers["content-security-policy"]
        page.wait_for_selector("text=ROC AUC", timeout=60_000)  # drawn by Evidently's script
        shot(page, "3-evidently")
        assert len(page.inner_text("body")) > 200

        # 4. Approve in the resume form; a verdict other than PROMOTE needs the override (and a comment).
        prompt = resume_in_form(page, ui, run["id"], "ui-ana", "read summary and ROC", word != "PROMOTE")
        assert f"{word}: candidate {candidate}" in prompt
    finally:
        shot(page, "5-last")
        context.close()

    # 5. The outcome: a named final state, the pointer in S3, the audit saying who, why and from where.
    done = _wait_for(stack, run["id"], "COMPLETED", timeout=300)
    assert done["state"]["name"] == "Promoted"
    assert "outcome:promoted" in done["tags"] and "awaiting-review" not in done["tags"]
    pointer = registry.production()
    assert (pointer["version"], pointer["approved_by"], pointer["decision_source"]) == (
        candidate,
        "ui-ana",
        "ui-form",
    )
    (promote,) = [a for a in registry.audit() if a["action"] == "promote"]
    assert (promote["version"], promote["approved_by"], promote["comment"]) == (
        candidate,
        "ui-ana",
        "read summary and ROC",
    )
    assert promote["override"] is (word != "PROMOTE")

    # 6. Nothing left 127.0.0.1 but the analytics SDK's config fetch; no analytics event was attempted.
    hosts = {urlsplit(u).hostname for u in outside}
    print("requests off 127.0.0.1 (aborted):", sorted(hosts), len(outside), file=sys.stderr)
    assert hosts <= ANALYTICS_CONFIG_HOSTS, sorted(hosts)
