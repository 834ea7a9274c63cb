"""A read-only report viewer: the review pages of every model version, over HTTP, from any store.

`tailguard reports serve --store s3://bucket/prefix --port 8765` serves

    /                                                   index: models, versions (production marked), pages
    /models/<name>/versions/<version>/                  redirect to that version's summary.html
    /models/<name>/versions/<version>/reports/<file>    a report page (summary, Evidently pages, ...)
    /models/<name>/versions/<version>/<record>.json     manifest.json, metrics.json, decision.json, ...

and nothing else: no model weights, no batches, no quarantine, no writes (GET and HEAD only). Relative links
between the pages of one version work as they do on disk, so the summary page reaches every other page.

Why a viewer and not presigned URLs: a presigned link lives at most 7 days (SigV4) while a review or an
audit can come later, and the summary's links to its sibling pages would need a rewritten, presigned copy
of every page per reader. Why not an Evidently UI workspace: it is a second service with its own storage
of snapshots, and its pages would not be the reviewed files stored with the version.

Safety: bound to 127.0.0.1 unless told otherwise; the Host header must name the address served (a page on
another site cannot reach the viewer through DNS rebinding); every path is matched against one pattern
of plain names (no '.', '..', '/', '%2e', backslash); each response carries a Content-Security-Policy:
tailguard's summary page may load nothing but its own stylesheet (by hash) and runs no script; an
Evidently page may run exactly the four inline scripts of Evidently's page template (data, global,
library, draw call; by hash), so a script that a cell value smuggled into a page would not run; any other
page is sandboxed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from tailguard.safe_text import html_text
from tailguard.store import ArtifactStore, KeyNotFound, StoreError, content_type
from tailguard.summary import summary_css_sha256

__all__ = ["VERSION_RECORDS", "ReportViewer", "Response", "content_security_policy", "make_server"]

VERSION_RECORDS = ("manifest.json", "metrics.json", "decision.json", "drift.json", "balance.json")
# One path part: what registry version ids, model names and report file names look like. No leading dot,
# so '.', '..' and hidden files never match; '%2e%2e' is decoded before matching and fails the same way.
_PART = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}"
_RECORDS = "|".join(re.escape(r) for r in VERSION_RECORDS)
_FILE_ROUTE = re.compile(rf"/models/({_PART})/versions/({_PART})/(reports/{_PART}|{_RECORDS})")
_VERSION_ROUTE = re.compile(rf"/models/({_PART})/versions/({_PART})/?")
_VERSION_KEY = re.compile(rf"models/({_PART})/versions/({_PART})/(.+)")

_COMMON_CSP = "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
# Evidently 0.7.23's file_html_template (evidently/legacy/utils/dashboard.py) writes these inline scripts,
# in this order: the report data, `var global = globalThis`, the library bundle (~3.5 MB), the draw call.
_SCRIPT = re.compile(r"<script\b[^>]*>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
_EVIDENTLY_DATA = re.compile(
    r"\n\s*var (metric_[0-9a-f]+) = [^<\n]*;\n\s*var additional_graphs_\1 = [^<\n]*;\n", re.DOTALL
)
_EVIDENTLY_DRAW = re.compile(
    r"\s*window\.drawDashboard\((metric_[0-9a-f]+),\s*new Map\(Object\.entries\(additional_graphs_\1\)\),"
    r"\s*\"root_\1\"\s*\);\s*"
)


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def evidently_script_hashes(page: str) -> list[str] | None:
    """CSP hash sources of an Evidently page's four template scripts, or None when the page's scripts are
    not exactly that template (an extra or altered script: then no script is allowed at all).

    The data block must match `var metric_<hex> = ...;` twice with no '<' inside, which holds only for a
    page escaped by safe_text.neutralise_evidently_html.
    """
    scripts = _SCRIPT.findall(page)
    if len(scripts) != 4:
        return None
    data, glob, _library, draw = scripts
    if not (
        _EVIDENTLY_DATA.fullmatch(data)
        and glob == "var global = globalThis"
        and (m := _EVIDENTLY_DRAW.fullmatch(draw))
        and m.group(1) == _EVIDENTLY_DATA.fullmatch(data).group(1)  # type: ignore[union-attr]
    ):
        return None
    return [_sha256_source(s) for s in scripts]


def content_security_policy(key: str, body: bytes) -> str:
    """The Content-Security-Policy header for one stored object (see the module docstring)."""
    name = key.rsplit("/", 1)[-1]
    if not content_type(key).startswith("text/html"):
        return f"default-src 'none'; sandbox; {_COMMON_CSP}"
    if name == "summary.html":
        return (
            f"default-src 'self'; script-src 'none'; style-src {summary_css_sha256()}; img-src 'self' data:; "
            + _COMMON_CSP
        )
    hashes = evidently_script_hashes(body.decode("utf-8", errors="replace"))
    if hashes is None:  # unknown layout: show it, run nothing
        return f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; {_COMMON_CSP}"
    # Evidently's bundle (React + MUI + Plotly) inserts <style> elements and style attributes at run time,
    # and embeds its icon font as a data: URL; it fetches nothing.
    return (
        f"default-src 'none'; script-src {' '.join(hashes)}; style-src 'unsafe-inline'; "
        f"img-src data: blob:; font-src data:; {_COMMON_CSP}"
    )


@dataclass
class Response:
    """What the viewer answers: status, headers (Content-Type included) and body bytes."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _page(status: int, title: str, body_html: str) -> Response:
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html_text(title)}</title></head><body>{body_html}</body></html>"
    )
    return Response(
        status,
        page.encode(),
        {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": f"default-src 'none'; {_COMMON_CSP}",
        },
    )


def _error(status: HTTPStatus, detail: str) -> Response:
    return _page(status.value, f"{status.value} {status.phrase}", f"<p>{html_text(detail)}</p>")


class ReportViewer:
    """Maps a request path to a store object (pure of HTTP; `make_server` wraps it).

    allowed_hosts: Host header values accepted (None accepts any, for a viewer bound to all interfaces).
    """

    def __init__(self, store: ArtifactStore, allowed_hosts: set[str] | None = None):
        self.store = store
        self.allowed_hosts = allowed_hosts

    def respond(self, raw_path: str, host: str | None) -> Response:
        """The answer to GET raw_path (e.g. '/models/relevance/versions/v1/reports/summary.html')."""
        if self.allowed_hosts is not None and (host or "").lower() not in self.allowed_hosts:
            return _error(HTTPStatus.MISDIRECTED_REQUEST, f"host {host!r} is not served here")
        path = unquote(urlsplit(raw_path).path, errors="strict")
        if path in ("/", "/index.html"):
            return self.index()
        if path == "/favicon.ico":  # browsers ask for it on every first visit; no icon, no console error
            return Response(HTTPStatus.NO_CONTENT.value)
        if m := _VERSION_ROUTE.fullmatch(path):
            target = f"/models/{m.group(1)}/versions/{m.group(2)}/reports/summary.html"
            return Response(HTTPStatus.FOUND.value, b"", {"Location": target})
        m = _FILE_ROUTE.fullmatch(path)
        if not m:
            return _error(
                HTTPStatus.NOT_FOUND, "not a report path: /models/<name>/versions/<v>/reports/<file>"
            )
        key = f"models/{m.group(1)}/versions/{m.group(2)}/{m.group(3)}"
        try:
            body = self.store.get_bytes(key)
        except KeyNotFound:
            return _error(HTTPStatus.NOT_FOUND, f"no {key} in the store")
        except StoreError as exc:
            return _error(HTTPStatus.BAD_GATEWAY, f"the store could not be read: {exc}")
        return Response(
            HTTPStatus.OK.value,
            body,
            {
                "Content-Type": content_type(key),
                "Content-Security-Policy": content_security_policy(key, body),
            },
        )

    def _versions(self) -> dict[str, dict[str, list[str]]]:
        """{model: {version: [file under the version, e.g. 'reports/summary.html']}} of servable files."""
        found: dict[str, dict[str, list[str]]] = {}
        for key in self.store.list_keys("models/"):
            m = _VERSION_KEY.fullmatch(key)
            if m and _FILE_ROUTE.fullmatch("/" + key):
                found.setdefault(m.group(1), {}).setdefault(m.group(2), []).append(m.group(3))
        return found

    def _production(self, model: str) -> str | None:
        try:
            return json.loads(self.store.get_bytes(f"models/{model}/production.json")).get("version")
        except (KeyNotFound, StoreError, ValueError, AttributeError):
            return None

    def _history(self, model: str, last: int = 8) -> str:
        """A "History" table: trend of the headline metrics over the last versions (every cell escaped)."""
        from tailguard.history import HEADLINE_LABELS, NOT_COMPARABLE, trend
        from tailguard.registry import Registry, RegistryError
        from tailguard.summary import HEADLINE

        try:
            rows = trend(Registry(self.store, model), last=last)
        except (RegistryError, StoreError, ValueError) as exc:
            return f"<p>History unavailable: {html_text(exc)}</p>"
        if not rows:
            return ""
        head = ["version", "created (UTC)", "status", "gate", *HEADLINE_LABELS]
        body = []
        for info in rows:
            values = [(info.headline.get(f"{s}/{m}") or {}).get("candidate") for s, m in HEADLINE]
            cells = [info.version, (info.created_at or "-")[:16].replace("T", " "), info.status,
                     info.gate_label,
                     *("-" if v is None else f"{v:.3f}" for v in values)]  # fmt: skip
            body.append("<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in cells) + "</tr>")
        return (
            f"<h3>History (last {len(rows)} versions)</h3><table><tr>"
            + "".join(f"<th>{html_text(h)}</th>" for h in head)
            + "</tr>"
            + "".join(body)
            + f"</table><p>Candidate values, each on its own eval split "
            f"({html_text(NOT_COMPARABLE)} across versions): <code>tailguard models --compare V1 V2</code> "
            "pairs two versions when one was scored against the other.</p>"
        )

    def index(self) -> Response:
        """Every model and version with report pages, newest version first, production marked."""
        try:
            found = self._versions()
        except StoreError as exc:
            return _error(HTTPStatus.BAD_GATEWAY, f"the store could not be listed: {exc}")
        parts = [f"<h1>tailguard reports</h1><p>store: <code>{html_text(self.store.uri)}</code></p>"]
        if not found:
            parts.append("<p>No model version with reports in this store yet.</p>")
        for model, versions in sorted(found.items()):
            production = self._production(model)
            parts.append(f"<h2>{html_text(model)}</h2><ul>")
            for version in sorted(versions, reverse=True):  # registry version ids start with a UTC time
                base = f"/models/{model}/versions/{version}"
                pages = sorted(
                    f for f in versions[version] if f.startswith("reports/") and f.endswith(".html")
                )
                links = " · ".join(
                    f'<a href="{html_text(base)}/{html_text(f)}">{html_text(f.removeprefix("reports/"))}</a>'
                    for f in pages
                )
                mark = " <b>(production)</b>" if version == production else ""
                parts.append(f"<li><code>{html_text(version)}</code>{mark}: {links or 'no pages'}</li>")
            parts.append("</ul>")
            parts.append(self._history(model))
        return _page(HTTPStatus.OK.value, "tailguard reports", "".join(parts))


_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def _handler(viewer: ReportViewer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tailguard-viewer"
        sys_version = ""

        def _answer(self, with_body: bool) -> None:
            try:
                response = viewer.respond(self.path, self.headers.get("Host"))
            except UnicodeDecodeError:
                response = _error(HTTPStatus.BAD_REQUEST, "the path is not valid UTF-8")
            self.send_response(response.status)
            for name, value in {**_SECURITY_HEADERS, **response.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if with_body:
                self.wfile.write(response.body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(False)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
            if viewer_log_requests.is_set():
                super().log_message(format, *args)

    return Handler


# Off in tests (quiet), on for `tailguard reports serve` (an access log on stderr).
viewer_log_requests = threading.Event()


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """Host header values a viewer bound to host:port accepts; None (any) when bound to all interfaces."""
    if host in ("0.0.0.0", "::", ""):
        return None
    names = {host, "127.0.0.1", "localhost", "[::1]"} if host in ("127.0.0.1", "localhost") else {host}
    return {f"{n}:{port}".lower() for n in names} | ({host.lower()} if port == 80 else set())


def make_server(store: ArtifactStore, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A threaded HTTP server for the viewer (port 0: any free port; read `server.server_address`).

    Call `serve_forever()` on it, and `shutdown()` / `server_close()` to stop. Raises OSError when the
    address is taken.
    """
    server = ThreadingHTTPServer((host, port), _handler(ReportViewer(store)))
    server.daemon_threads = True
    bound_port = server.server_address[1]
    server.RequestHandlerClass = _handler(ReportViewer(store, allowed_hosts(host, bound_port)))
    return server
