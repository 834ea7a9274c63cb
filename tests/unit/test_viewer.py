"""Content types in the store (moto_server S3) and the report viewer over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import subprocess
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from tailguard.store import LocalStore, S3Store, content_type, open_store
from tailguard.summary import SUMMARY_CSS
from tailguard.viewer import content_security_policy, evidently_script_hashes, make_server

VERSION = "20261130T120000Z-abc123"
PREFIX = f"models/relevance/versions/{VERSION}"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("reports/summary.html", "text/html; charset=utf-8"),
        ("REPORT.HTM", "text/html; charset=utf-8"),
        ("metrics.json", "application/json"),
        ("docs/review.md", "text/markdown; charset=utf-8"),
        ("reports/chart.png", "image/png"),
        ("batch/part-0.csv", "text/csv; charset=utf-8"),
        ("batch/part-0.parquet", "application/vnd.apache.parquet"),
        ("model/model.safetensors", "application/octet-stream"),
        ("no_suffix", "application/octet-stream"),
    ],
)
def test_content_type_from_suffix(key, expected) -> None:
    assert content_type(key) == expected


def _s3_content_type(store: S3Store, key: str) -> str:
    return store.client.head_object(Bucket=store.bucket, Key=store._key(key))["ContentType"]


def test_s3_writes_carry_content_types(s3_uri, tmp_path) -> None:
    """Every S3 write path sets ContentType; the old store wrote binary/octet-stream for all of them."""
    store = open_store(s3_uri)
    page = tmp_path / "reports" / "summary.html"
    page.parent.mkdir()
    page.write_text("<!doctype html><title>x</title><p>PROMOTE</p>", encoding="utf-8")
    (tmp_path / "reports" / "shot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    store.put_bytes("a/metrics.json", b"{}")
    store.put_file("a/notes.md", page)
    store.put_file_once("a/once.html", page)
    store.put_conditional("a/pointer.json", b"{}", None)
    store.upload_dir(tmp_path / "reports", "a/reports")
    got = {k: _s3_content_type(store, k) for k in store.list_keys("a/")}
    assert got == {
        "a/metrics.json": "application/json",
        "a/notes.md": "text/markdown; charset=utf-8",
        "a/once.html": "text/html; charset=utf-8",
        "a/pointer.json": "application/json",
        "a/reports/shot.png": "image/png",
        "a/reports/summary.html": "text/html; charset=utf-8",
    }


def test_presigned_summary_is_shown_not_downloaded(s3_uri, tmp_path) -> None:
    """The issue's case: a presigned summary.html must come back as text/html (a browser renders it)."""
    store = open_store(s3_uri)
    page = tmp_path / "summary.html"
    page.write_text("<!doctype html><p>DO NOT PROMOTE</p>", encoding="utf-8")
    store.put_file(f"{PREFIX}/reports/summary.html", page)
    url = store.client.generate_presigned_url(
        "get_object", Params={"Bucket": store.bucket, "Key": store._key(f"{PREFIX}/reports/summary.html")}
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert b"DO NOT PROMOTE" in response.read()


# ------------------------------------------------------------------------------------------------
# Evidently's page template, as evidently/legacy/utils/dashboard.py writes it (the library is shortened)

DATA = '\n    var metric_ab12 = {"widgets": []};\n    var additional_graphs_metric_ab12 = {};\n'
DRAW = (
    "\n    window.drawDashboard(metric_ab12,\n"
    "        new Map(Object.entries(additional_graphs_metric_ab12)),\n"
    '        "root_metric_ab12"\n    );\n    '
)


def evidently_like(extra: str = "", data: str = DATA) -> str:
    return (
        f"<!DOCTYPE html><html><head><style>.x{{}}</style><script>{data}</script></head><body>"
        f'<div id="root_metric_ab12"></div><script>var global = globalThis</script>'
        f"<script>var lib = 1; /* <\\/script> stays inside */</script>{extra}"
        f"<script>{DRAW}</script></body></html>"
    )


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_evidently_template_scripts_are_allowed_by_hash() -> None:
    hashes = evidently_script_hashes(evidently_like())
    assert hashes == [_hash(DATA), _hash("var global = globalThis"),
                      _hash("var lib = 1; /* <\\/script> stays inside */"), _hash(DRAW)]  # fmt: skip
    csp = content_security_policy(f"{PREFIX}/reports/drift.html", evidently_like().encode())
    assert f"script-src {' '.join(hashes)};" in csp and "'unsafe-inline'" not in csp.split("style-src")[0]


@pytest.mark.parametrize(
    "page",
    [
        evidently_like(extra="<script>window.__pwned = 1</script>"),  # a fifth, injected script
        evidently_like(data=DATA.replace("[]", '["</b>"]')),  # data block not escaped (raw '<')
        evidently_like(data=DATA.replace("var additional", "alert(1); var additional")),  # code in data
        "<html><body><script>alert(1)</script></body></html>",  # not an Evidently page at all
    ],
)
def test_pages_off_the_template_run_no_script(page) -> None:
    assert evidently_script_hashes(page) is None
    csp = content_security_policy(f"{PREFIX}/reports/x.html", page.encode())
    assert "script-src" not in csp and "default-src 'none'" in csp and "sandbox" in csp


def test_summary_csp_allows_only_its_stylesheet() -> None:
    csp = content_security_policy(f"{PREFIX}/reports/summary.html", b"<p>x</p>")
    assert "default-src 'self'" in csp and "script-src 'none'" in csp
    assert f"style-src {_hash(SUMMARY_CSS)};" in csp


# ------------------------------------------------------------------------------------------------
# the viewer over HTTP


def _fill(store) -> None:
    store.put_bytes(f"{PREFIX}/reports/summary.html", b"<!doctype html><p>summary of v1</p>")
    store.put_bytes(f"{PREFIX}/reports/drift.html", evidently_like().encode())
    store.put_bytes(f"{PREFIX}/reports/notes.md", b"# notes")
    store.put_bytes(f"{PREFIX}/metrics.json", b'{"models": ["candidate"]}')
    store.put_bytes(f"{PREFIX}/model/model.safetensors", b"weights")
    store.put_bytes("models/relevance/versions/20261101T000000Z-old/reports/summary.html", b"<p>old</p>")
    store.put_bytes("models/relevance/production.json", json.dumps({"version": VERSION}).encode())
    store.put_bytes("batches/b1/part.csv", b"query,item_id\n")
    store.put_bytes("quarantine/b2/validation.json", b"{}")


@pytest.fixture(params=["local", "s3"])
def viewer(request, tmp_path) -> Iterator[tuple[str, int]]:
    """A viewer on 127.0.0.1 (any free port) over a filled LocalStore or S3Store (moto_server)."""
    store = (
        LocalStore(tmp_path / "store")
        if request.param == "local"
        else open_store(request.getfixturevalue("s3_uri"))
    )
    _fill(store)
    server = make_server(store, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def get(address: tuple[str, int], path: str, method: str = "GET", host: str | None = None):
    """Send `path` byte for byte (http.client does not normalise it); returns (status, headers, body)."""
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", host or f"{address[0]}:{address[1]}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_viewer_serves_report_pages_with_types_and_csp(viewer) -> None:
    status, headers, body = get(viewer, f"/{PREFIX}/reports/summary.html")
    assert (status, body) == (200, b"<!doctype html><p>summary of v1</p>")
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    status, headers, _ = get(viewer, f"/{PREFIX}/reports/drift.html")
    assert status == 200 and _hash("var global = globalThis") in headers["Content-Security-Policy"]
    status, headers, body = get(viewer, f"/{PREFIX}/metrics.json")
    assert (status, headers["Content-Type"], json.loads(body)) == (
        200,
        "application/json",
        {"models": ["candidate"]},
    )
    status, headers, _ = get(viewer, f"/{PREFIX}/reports/notes.md")
    assert (
        headers["Content-Type"] == "text/markdown; charset=utf-8"
        and "sandbox" in headers["Content-Security-Policy"]
    )
    status, headers, body = get(viewer, f"/{PREFIX}/reports/summary.html", method="HEAD")
    assert (
        status == 200
        and body == b""
        and headers["Content-Length"] == str(len(b"<!doctype html><p>summary of v1</p>"))
    )


def test_viewer_index_lists_versions_newest_first_with_production(viewer) -> None:
    status, headers, body = get(viewer, "/")
    text = body.decode()
    assert status == 200 and headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert text.index(VERSION) < text.index("20261101T000000Z-old")
    assert re.search(rf"{VERSION}</code> <b>\(production\)</b>", text)
    assert f'href="/{PREFIX}/reports/summary.html"' in text and "safetensors" not in text
    status, headers, _ = get(viewer, f"/{PREFIX}/")
    assert status == 302 and headers["Location"] == f"/{PREFIX}/reports/summary.html"


@pytest.mark.parametrize(
    "path",
    [
        f"/{PREFIX}/reports/../../../../batches/b1/part.csv",
        f"/{PREFIX}/reports/%2e%2e/%2e%2e/%2e%2e/%2e%2e/batches/b1/part.csv",
        f"/{PREFIX}/reports/..%2f..%2fmodel%2fmodel.safetensors",
        f"/{PREFIX}/model/model.safetensors",  # weights are not a report
        "/batches/b1/part.csv",
        "/quarantine/b2/validation.json",
        "/models/relevance/production.json",
        f"/{PREFIX}/reports/.hidden.html",
        f"/{PREFIX}/reports/summary.html%00.png",
        f"/{PREFIX}/reports/..\\..\\metrics.json",
        "/models/relevance/versions/../versions/x/reports/summary.html",
        "//etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
    ],
)
def test_viewer_refuses_paths_outside_the_report_folders(viewer, path) -> None:
    status, headers, body = get(viewer, path)
    assert status == 404, (path, status)
    assert b"weights" not in body and b"query,item_id" not in body and body != b"{}"
    assert headers["Content-Type"] == "text/html; charset=utf-8"


def test_viewer_answers_a_missing_page_and_bad_methods_clearly(viewer) -> None:
    status, _, body = get(viewer, f"/{PREFIX}/reports/classification_overall.html")
    assert status == 404 and f"no {PREFIX}/reports/classification_overall.html in the store".encode() in body
    assert get(viewer, f"/{PREFIX}/reports/summary.html", method="POST")[0] == 501
    assert get(viewer, f"/{PREFIX}/reports/summary.html", method="PUT")[0] == 501
    assert get(viewer, f"/{PREFIX}/reports/%ff.html")[0] == 400  # not UTF-8


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1:1", "attacker.localhost"])
def test_viewer_refuses_other_host_headers(viewer, host) -> None:
    """A DNS-rebinding page (Host: evil.example) must not read the reports through the browser."""
    status, _, body = get(viewer, f"/{PREFIX}/reports/summary.html", host=host)
    assert status == 421 and b"summary of v1" not in body
    assert get(viewer, f"/{PREFIX}/reports/summary.html", host=f"localhost:{viewer[1]}")[0] == 200


def test_cli_serves_from_a_store_and_stops_on_sigterm(tmp_path, procs) -> None:
    store = LocalStore(tmp_path / "store")
    _fill(store)
    env = {**os.environ, "TAILGUARD_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [str(procs.venv_bin / "tailguard"), "reports", "serve", "--store", str(store.root), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        status, headers, body = get(("127.0.0.1", port), f"/{PREFIX}/reports/summary.html")
        assert status == 200 and b"summary of v1" in body
    finally:
        procs.stop_pid(proc)
    assert "Traceback" not in proc.stderr.read()


def test_cli_serve_on_a_taken_port_says_so(tmp_path, procs) -> None:
    server = make_server(LocalStore(tmp_path / "s"), "127.0.0.1", 0)
    try:
        port = server.server_address[1]
        out = subprocess.run(
            [str(procs.venv_bin / "tailguard"), "reports", "serve", "--store", str(tmp_path),
             "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        server.server_close()
    assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


# ------------------------------------------------------------------------------------------------
# upload-batch


def test_upload_batch_puts_files_in_the_bucket(s3_uri, tmp_path, procs) -> None:
    folder = tmp_path / "week-48"
    (folder / "part").mkdir(parents=True)
    (folder / "a.csv").write_text("query,item_id,item_title,label\ndrill,007,Drill,1\n")
    (folder / "part" / "b.csv").write_text("query,item_id,item_title,label\nsaw,008,Saw,0\n")
    dest = f"{s3_uri}/batches/week-48"
    out = subprocess.run(
        [str(procs.venv_bin / "tailguard"), "upload-batch", str(folder), dest],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "uploaded 2 file(s)" in out.stdout and f"tailguard retrain --data {dest}/" in out.stdout
    store = open_store(dest)
    assert store.list_keys() == ["a.csv", "part/b.csv"]
    assert store.get_bytes("a.csv") == (folder / "a.csv").read_bytes()
    assert _s3_content_type(store, "part/b.csv") == "text/csv; charset=utf-8"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}", "s3://bucket/x"], "no such file or folder"),
        (["{file}", "/local/folder"], "is not an s3://bucket/prefix URI"),
        (["{file}", "s3://"], "is not an s3://bucket/prefix URI"),
        (["{empty}", "s3://bucket/x"], "the folder holds no files"),
    ],
)
def test_upload_batch_refuses_bad_arguments_in_one_line(tmp_path, procs, args, message) -> None:
    (tmp_path / "f.csv").write_text("query\n")
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nope.csv", "file": tmp_path / "f.csv", "empty": tmp_path / "empty"}
    argv = [a.format(**paths) for a in args]
    out = subprocess.run(
        [str(procs.venv_bin / "tailguard"), "upload-batch", *argv], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_upload_batch_names_an_unreachable_endpoint(tmp_path, procs) -> None:
    (tmp_path / "f.csv").write_text("query\n")
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "TAILGUARD_S3_MAX_ATTEMPTS": "1"}  # fmt: skip
    out = subprocess.run(
        [str(procs.venv_bin / "tailguard"), "upload-batch", str(tmp_path / "f.csv"), "s3://bucket/x"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert out.returncode == 1 and "127.0.0.1:9" in out.stderr and "Traceback" not in out.stderr
