"""Model registry on an ArtifactStore: immutable versions, a production pointer flipped last, an audit log."""

from __future__ import annotations

import hashlib
import html
import json
import re
import secrets
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tailguard import __version__
from tailguard.store import ArtifactStore, KeyNotFound, PreconditionFailed, sha256_file

MANIFEST = "manifest.json"
MODEL_CARD = "model_card.md"
POINTER = "production.json"
# Versions sort by time: "20261128T132501Z-3f2a9c".
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")
_HISTORY_LIMIT = 50
# promote(expected_production=ANY_PRODUCTION) skips the "production has not moved" check.
ANY_PRODUCTION = "*"


class RegistryError(Exception):
    """A registry operation cannot proceed (unknown or incomplete version, nothing to roll back to)."""


class IncompleteVersion(RegistryError):
    """The version folder has no manifest.json: its upload never finished."""


class ChecksumError(RegistryError):
    """A stored file does not match the sha256 recorded in the manifest."""


class PromotionConflict(RegistryError):
    """Another promotion or rollback flipped the pointer first; nothing was changed by this one."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json_bytes(payload: dict) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode()


def git_revision(cwd: Path | None = None) -> str | None:
    """The git commit of the code, or None outside a repository (or without git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _gate_verdict(decision: dict | None) -> bool | None:
    """The gate's verdict in a decision (True/False), or None when it holds none (never judged)."""
    for key in ("promote", "passed", "approved"):
        if (decision or {}).get(key) is not None:
            return bool(decision[key])
    return None


class DataRecord(BaseModel):
    """The batch a version was trained on (manifest "data")."""

    model_config = ConfigDict(extra="allow")

    batch_id: str = Field(description="Content id of the accepted batch, 'b-' + 16 hex (data.batch_id_for).")
    uri: str = Field("", description="Where the batch was read from: path or s3:// URI.")
    fingerprint: dict[str, Any] = Field(
        default_factory=dict, description="{'files': [{'name', 'bytes', 'sha256'}], 'sha256': digest}."
    )
    columns: str | None = Field(None, description="Column mapping it was read with, if any.")
    rows: int | None = Field(None, ge=0, description="Rows in the batch (train + eval).")


class DecisionRecord(BaseModel):
    """The gate's verdict as recorded with the version; promote None means the gate never judged it."""

    model_config = ConfigDict(extra="allow")

    promote: bool | None = None
    reasons: list[str] = Field(default_factory=list)


class FileRecord(BaseModel):
    """One stored file of a version."""

    sha256: str
    size: int = Field(ge=0, description="Bytes.")


class Manifest(BaseModel):
    """manifest.json of a version: what the pipeline records, plus what write_version adds.

    The pipeline fills data, params, decision, headline ({"slice/metric": {"candidate", "production"}}),
    balance, drift, runtime, flow_run_id and timings_s (seconds per stage); the registry fills
    model_name, version, created_at, package_version, git_revision, files and upload_seconds (s).
    Unknown keys are kept, so manifests written by older versions still load.
    """

    model_config = ConfigDict(extra="allow")

    data: DataRecord | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    decision: DecisionRecord | None = None
    headline: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    balance: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    runtime: dict[str, Any] = Field(default_factory=dict)
    flow_run_id: str = ""
    timings_s: dict[str, float] = Field(default_factory=dict)
    model_name: str | None = None
    version: str | None = None
    created_at: str | None = None
    package_version: str | None = None
    git_revision: str | None = None
    files: dict[str, FileRecord] = Field(default_factory=dict)
    upload_seconds: float | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON form written to the store (unset optional parts left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class Registry:
    """Versions, the production pointer and the audit log of one model in a store."""

    def __init__(self, store: ArtifactStore, model_name: str):
        if not _VERSION_RE.match(model_name):
            raise RegistryError(f"invalid model name {model_name!r}: use letters, digits, '.', '_', '-'")
        self.store = store
        self.model_name = model_name
        self.root = f"models/{model_name}"

    # --- keys -------------------------------------------------------------------------------------------

    def version_prefix(self, version: str) -> str:
        """Store prefix of a version folder (models/<name>/versions/<version>)."""
        if not _VERSION_RE.match(version):
            raise RegistryError(f"invalid version id {version!r}")
        return f"{self.root}/versions/{version}"

    @property
    def pointer_key(self) -> str:
        return f"{self.root}/{POINTER}"

    # --- versions ---------------------------------------------------------------------------------------

    def new_version_id(self) -> str:
        """A new, time-sortable version id such as '20261128T132501Z-3f2a9c'."""
        return f"{_utc_now():%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"

    def write_version(
        self, version: str, model_dir: Path, extra_files: dict[str, Path], manifest: Manifest | dict
    ) -> dict:
        """Upload model/ and extra files, then the model card, then manifest.json last; returns it.

        manifest: a Manifest (a dict is validated into one; pydantic.ValidationError on a wrong shape).
        """
        if not isinstance(manifest, Manifest):
            manifest = Manifest.model_validate(manifest)
        prefix = self.version_prefix(version)
        if self.store.exists(f"{prefix}/{MANIFEST}"):
            raise RegistryError(
                f"version {version} of {self.model_name!r} already exists; versions are immutable"
            )
        started = time.perf_counter()
        sources: list[tuple[str, Path]] = []
        for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
            sources.append((f"model/{path.relative_to(model_dir).as_posix()}", path))
        if not sources:
            raise RegistryError(f"model folder {model_dir} has no files")
        for name, source in sorted(extra_files.items()):
            source = Path(source)
            if source.is_dir():
                sources.extend(
                    (f"{name}/{p.relative_to(source).as_posix()}", p)
                    for p in sorted(source.rglob("*"))
                    if p.is_file()
                )
            elif source.is_file():
                sources.append((name, source))
            else:
                raise RegistryError(f"extra file {name!r}: {source} does not exist")
        reserved = {MANIFEST, MODEL_CARD}
        clash = [name for name, _ in sources if name in reserved]
        if clash:
            raise RegistryError(f"extra files may not be named {clash}: the registry writes them")

        files: dict[str, dict[str, Any]] = {}
        for name, source in sources:
            files[name] = {"sha256": sha256_file(source), "size": source.stat().st_size}
            self.store.put_file(f"{prefix}/{name}", source)

        full = manifest.model_copy(
            update={
                "package_version": manifest.package_version or __version__,
                "git_revision": manifest.git_revision or git_revision(),
                "model_name": self.model_name,
                "version": version,
                "created_at": _iso(_utc_now()),
                "files": {k: FileRecord(**v) for k, v in files.items()},
            }
        )
        card = render_model_card(full).encode()
        self.store.put_bytes(f"{prefix}/{MODEL_CARD}", card)
        files[MODEL_CARD] = {"sha256": hashlib.sha256(card).hexdigest(), "size": len(card)}
        full.files = {k: FileRecord(**v) for k, v in sorted(files.items())}
        full.upload_seconds = round(time.perf_counter() - started, 3)
        full = full.to_json_dict()
        # The manifest goes last: a version without one is an interrupted upload and is never served.
        self.store.put_bytes(f"{prefix}/{MANIFEST}", _json_bytes(full))
        return full

    def manifest(self, version: str) -> dict:
        """The manifest of a complete version as a dict; IncompleteVersion or RegistryError otherwise."""
        return json.loads(self._manifest_bytes(version))

    def read_manifest(self, version: str) -> Manifest:
        """The manifest of a complete version, typed; IncompleteVersion or RegistryError otherwise."""
        return Manifest.model_validate_json(self._manifest_bytes(version))

    def _manifest_bytes(self, version: str) -> bytes:
        prefix = self.version_prefix(version)
        try:
            return self.store.get_bytes(f"{prefix}/{MANIFEST}")
        except KeyNotFound:
            if self.store.list_keys(prefix + "/"):
                raise IncompleteVersion(
                    f"version {version} of {self.model_name!r} has no {MANIFEST}: its upload did not finish"
                ) from None
            raise RegistryError(f"version {version} of {self.model_name!r} does not exist") from None

    def list_versions(self, include_incomplete: bool = False) -> list[dict]:
        """Versions, oldest first, with flags (complete, production); incomplete ones only when asked."""
        base = f"{self.root}/versions/"
        keys_by_version: dict[str, list[str]] = {}
        for key in self.store.list_keys(base):
            version, _, rest = key[len(base) :].partition("/")
            keys_by_version.setdefault(version, []).append(rest)
        pointer = self.production()
        production_version = pointer["version"] if pointer else None
        rows = []
        for version, names in sorted(keys_by_version.items()):
            complete = MANIFEST in names
            if not complete and not include_incomplete:
                continue
            row: dict[str, Any] = {
                "version": version,
                "complete": complete,
                "production": version == production_version,
                "objects": len(names),
            }
            if complete:
                data = self._manifest_bytes(version)
                manifest = json.loads(data)
                params = manifest.get("params") or {}
                row.update(
                    created_at=manifest.get("created_at"),
                    manifest_sha256=hashlib.sha256(data).hexdigest(),
                    flow_run_id=manifest.get("flow_run_id"),
                    gate=(manifest.get("decision") or {}).get("promote"),
                    balance=params.get("balance"),
                    base_model=params.get("base_model"),
                    rows=(manifest.get("data") or {}).get("rows"),
                    headline=manifest.get("headline") or {},
                )
            rows.append(row)
        # Ids made in the same second are not ordered by their random suffix: the manifest time is.
        return sorted(rows, key=lambda row: (row.get("created_at") or "", row["version"]))

    def fetch_model(self, version: str, dest: Path) -> Path:
        """Download a version (or 'production') into dest, verifying every sha256; returns dest/model."""
        expected_manifest_sha = None
        if version == "production":
            pointer = self.production()
            if pointer is None:
                raise RegistryError(f"{self.model_name!r} has no production model yet")
            version, expected_manifest_sha = pointer["version"], pointer.get("manifest_sha256")
        data = self._manifest_bytes(version)
        actual_manifest_sha = hashlib.sha256(data).hexdigest()
        if expected_manifest_sha and actual_manifest_sha != expected_manifest_sha:
            raise ChecksumError(
                f"{self.root}/versions/{version}/{MANIFEST}: sha256 {actual_manifest_sha} does not match "
                f"{expected_manifest_sha} recorded in {POINTER}; refusing to load"
            )
        manifest = json.loads(data)
        prefix = self.version_prefix(version)
        dest = Path(dest)
        bad = []
        for name, meta in manifest["files"].items():
            target = dest / name
            try:
                self.store.get_file(f"{prefix}/{name}", target)
            except KeyNotFound:
                bad.append(f"{name}: missing")
                continue
            actual = sha256_file(target)
            if actual != meta["sha256"]:
                target.unlink(missing_ok=True)
                bad.append(f"{name}: sha256 {actual[:16]}… expected {meta['sha256'][:16]}…")
        if bad:
            raise ChecksumError(
                f"version {version} of {self.model_name!r} failed verification ({len(bad)} of "
                f"{len(manifest['files'])} files): " + "; ".join(bad[:5]) + "; refusing to load"
            )
        return dest / "model"

    # --- pointer and audit ------------------------------------------------------------------------------

    def production(self) -> dict | None:
        """The production pointer (production.json) or None before the first promotion."""
        found = self.store.read_versioned(self.pointer_key)
        return json.loads(found[0]) if found else None

    def _flip(self, pointer: dict, expected_etag: str | None, action: str) -> None:
        """The commit point: write the pointer only if nobody else flipped it since we read it."""
        body = _json_bytes(pointer)
        lost = (
            f"{action} of {self.model_name!r} to {pointer['version']} lost a race: {self.pointer_key} "
            "changed since it was read; production is whatever the other writer set. Re-run the review."
        )
        try:
            self.store.put_conditional(self.pointer_key, body, expected_etag)
        except PreconditionFailed as exc:
            raise PromotionConflict(lost) from exc
        # Read our write back: a server whose conditional put checks and then writes without a lock
        # (moto_server's threaded handler does) could let two racers "win"; the loser finds out here,
        # before it writes any audit.
        found = self.store.read_versioned(self.pointer_key)
        if found is None or found[0] != body:
            raise PromotionConflict(
                lost + " (overwritten right after the flip: the store's conditional write is not atomic)"
            )

    def promote(
        self,
        version: str,
        approved_by: str,
        decision: dict,
        override: bool = False,
        comment: str = "",
        expected_production: str | None = ANY_PRODUCTION,
    ) -> dict:
        """Flip production to a complete version (conditional write), then audit; returns the pointer.

        expected_production: the production version the candidate was evaluated against (None: none);
        if production moved since, the promotion is refused. The default "*" skips this check.
        """
        if not approved_by:
            raise RegistryError("promote needs the name of who approved it (approved_by)")
        verdict = _gate_verdict(decision)
        gate_passed = bool(verdict)
        if not gate_passed and not override:
            why = "failed the gate" if verdict is False else "has no gate decision (it was never judged)"
            raise RegistryError(
                f"version {version} {why}; promoting it needs override=True / --override "
                "(recorded in the audit)"
            )
        self.store.require_conditional_writes()
        manifest_sha = hashlib.sha256(self._manifest_bytes(version)).hexdigest()
        found = self.store.read_versioned(self.pointer_key)
        previous = json.loads(found[0]) if found else None
        previous_version = previous["version"] if previous else None
        if previous_version == version:
            if previous.get("action") == "promote" and previous.get("manifest_sha256") == manifest_sha:
                # A retried promotion whose flip already landed: finish its audit instead of flipping twice.
                return self._ensure_promote_audit(previous, decision)
            raise RegistryError(f"{version} is already production of {self.model_name!r}")
        if expected_production != ANY_PRODUCTION and previous_version != expected_production:
            raise PromotionConflict(
                f"{version} was evaluated against production {expected_production}, but production is now "
                f"{previous_version}; re-evaluate before promoting"
            )
        history = list(previous.get("history", [])) + [previous["version"]] if previous else []
        now = _utc_now()
        pointer = {
            "model_name": self.model_name,
            "version": version,
            "manifest_sha256": manifest_sha,
            "action": "promote",
            "approved_by": approved_by,
            "approved_at": _iso(now),
            "override": bool(override),
            "gate_passed": gate_passed,
            "comment": comment,
            "previous": previous["version"] if previous else None,
            "history": history[-_HISTORY_LIMIT:],
        }
        self._flip(pointer, found[1] if found else None, "promotion")
        self.record_audit("promote", {**pointer, "decision": decision}, at=now)
        return pointer

    def _ensure_promote_audit(self, pointer: dict, decision: dict) -> dict:
        """Write the promote audit of a pointer if it is missing (a crash between flip and audit)."""
        recorded = any(
            a["action"] == "promote" and a.get("approved_at") == pointer.get("approved_at")
            for a in self.audit()
        )
        if not recorded:
            self.record_audit("promote", {**pointer, "decision": decision, "audit_recovered": True})
        return pointer

    def reject(self, version: str, by: str, decision: dict, comment: str = "") -> None:
        """Record a rejection; production is untouched."""
        self.record_audit(
            "reject", {"version": version, "rejected_by": by, "decision": decision, "comment": comment}
        )

    def rollback(self, to: str | None = None, by: str = "") -> dict:
        """Point production at `to` (default: the version before the production one); returns the pointer."""
        self.store.require_conditional_writes()
        found = self.store.read_versioned(self.pointer_key)
        if found is None:
            raise RegistryError(f"{self.model_name!r} has no production model to roll back")
        current = json.loads(found[0])
        history = list(current.get("history", []))
        if to is None:
            if not history:
                raise RegistryError(
                    f"production {current['version']} of {self.model_name!r} has no previous version; "
                    "name one with --to"
                )
            target, history = history[-1], history[:-1]
        else:
            if to not in history:
                # Rollback skips review, so it may only return to a version that was in production before.
                raise RegistryError(
                    f"{to} was never production of {self.model_name!r} (rollback targets: "
                    f"{', '.join(history[::-1]) or 'none'}); promote it through review instead"
                )
            # Rolling back to an older version drops everything after it from the rollback stack.
            target, history = to, history[: len(history) - history[::-1].index(to) - 1]
        if target == current["version"]:
            raise RegistryError(f"{target} is already in production")
        manifest_sha = hashlib.sha256(self._manifest_bytes(target)).hexdigest()
        now = _utc_now()
        pointer = {
            "model_name": self.model_name,
            "version": target,
            "manifest_sha256": manifest_sha,
            "action": "rollback",
            "approved_by": by or "unknown",
            "approved_at": _iso(now),
            "override": False,
            "comment": f"rollback from {current['version']}",
            "previous": current["version"],
            "history": history[-_HISTORY_LIMIT:],
        }
        self._flip(pointer, found[1], "rollback")
        self.record_audit("rollback", {**pointer, "rolled_back_from": current["version"]}, at=now)
        return pointer

    def record_audit(self, action: str, payload: dict, at: datetime | None = None) -> str:
        """Write one audit object at models/<name>/audit/<utc>-<action>.json (never overwrites)."""
        if not re.match(r"^[a-z][a-z0-9_-]*$", action):
            raise RegistryError(f"invalid audit action {action!r}")
        moment = at or _utc_now()
        for _ in range(100):
            key = f"{self.root}/audit/{moment:%Y%m%dT%H%M%S.%fZ}-{action}.json"
            body = {"action": action, "model_name": self.model_name, "at": _iso(moment), **payload}
            try:
                # Write-if-absent: two writers in the same microsecond never overwrite each other.
                self.store.put_conditional(key, _json_bytes(body), None)
                return key
            except PreconditionFailed:
                moment = _utc_now()
        raise RegistryError(f"could not find a free audit key for {action}")

    def audit(self) -> list[dict]:
        """Every audit record, oldest first."""
        base = f"{self.root}/audit/"
        return [
            {"key": key, **json.loads(self.store.get_bytes(key))}
            for key in self.store.list_keys(base)
            if key.endswith(".json")
        ]


def _md(value: Any) -> str:
    """A markdown table cell that stays one cell for any text: HTML escaped, '|' and newlines neutralised."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return html.escape(text, quote=False).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _kv_table(pairs: list[tuple[str, Any]]) -> list[str]:
    return ["| name | value |", "|---|---|"] + [f"| {_md(k)} | {_md(v)} |" for k, v in pairs]


def _data_section(data: DataRecord) -> list[str]:
    pairs = [("batch_id", data.batch_id), ("uri", data.uri), ("rows", data.rows)]
    pairs += [("columns", data.columns)] if data.columns else []
    digest = data.fingerprint.get("sha256")
    pairs += [("fingerprint sha256", digest)] if digest else []
    lines = _kv_table(pairs)
    files = data.fingerprint.get("files") or []
    if files:
        lines += ["", "| input file | bytes | sha256 |", "|---|---|---|"]
        lines += [f"| {_md(f.get('name'))} | {_md(f.get('bytes'))} | `{_md(f.get('sha256'))}` |"
                  for f in files]  # fmt: skip
    return lines


def _metrics_section(headline: dict[str, dict[str, float | None]]) -> list[str]:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    if not headline:
        return ["No headline metric is defined on this evaluation split (e.g. one class only): see "
                "metrics.json for why each one is undefined."]  # fmt: skip
    lines = ["| slice/metric | candidate | production |", "|---|---|---|"]
    for name, values in headline.items():
        lines.append(f"| {_md(name)} | {fmt(values.get('candidate'))} | {fmt(values.get('production'))} |")
    return lines + ["", "All metrics, per slice with 95% intervals: metrics.json."]


def _decision_section(decision: DecisionRecord) -> list[str]:
    verdict = {True: "promote", False: "do not promote", None: "not judged"}[decision.promote]
    return [f"Gate verdict: **{verdict}**", ""] + [f"- {_md(r)}" for r in decision.reasons]


def render_model_card(manifest: Manifest | dict) -> str:
    """A markdown model card from a manifest: identity, training data, configuration, metrics, gate
    decision, stage timings (s), files. Every cell is escaped (safe for any text in the batch or params)."""
    m = manifest if isinstance(manifest, Manifest) else Manifest.model_validate(manifest)
    lines = [
        f"# Model card: {_md(m.model_name or '?')} {_md(m.version or '?')}",
        "",
        "Query–item relevance cross-encoder for e-commerce search, retrained by tailguard.",
        "",
        "| field | value |",
        "|---|---|",
    ]
    identity = [("version", m.version), ("created_at", m.created_at), ("package_version", m.package_version),
                ("git_revision", m.git_revision), ("flow_run_id", m.flow_run_id or None),
                ("base_model", m.params.get("base_model"))]  # fmt: skip
    lines += [f"| {k} | `{_md(v)}` |" for k, v in identity if v is not None]
    sections: list[tuple[str, list[str]]] = []
    if m.data is not None:
        sections.append(("Training data", _data_section(m.data)))
    if m.params:
        sections.append(("Configuration", _kv_table(sorted(m.params.items()))))
    if m.headline or m.decision is not None:  # a judged version always says what its metrics were
        sections.append(("Metrics", _metrics_section(m.headline)))
    if m.decision is not None:
        sections.append(("Gate decision", _decision_section(m.decision)))
    if m.timings_s:
        sections.append(("Stage timings (s)", _kv_table(list(m.timings_s.items()))))
    for title, body in sections:
        lines += ["", f"## {title}", "", *body]
    lines += [
        "",
        "## Intended use and limits",
        "",
        "Scores (query, item title) pairs for ranking. Judge it by the per-slice evaluation in metrics.json "
        "and the reports: gains on head items can hide losses on tail and cold items.",
        "",
        "## Files",
        "",
        "| file | bytes | sha256 |",
        "|---|---|---|",
    ]
    for name, meta in sorted(m.files.items()):
        lines.append(f"| {_md(name)} | {meta.size} | `{meta.sha256[:16]}…` |")
    return "\n".join(lines) + "\n"
