"""Model registry on an ArtifactStore: immutable versions, a production pointer flipped last, an audit log."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


def _gate_passed(decision: dict) -> bool:
    """Whether a gate decision allows promotion; decisions without a verdict count as passing."""
    for key in ("promote", "passed", "approved"):
        if key in decision:
            return bool(decision[key])
    return True


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
        self, version: str, model_dir: Path, extra_files: dict[str, Path], manifest: dict
    ) -> dict:
        """Upload model/ and extra files, then the model card, then manifest.json last; returns it."""
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

        full = dict(manifest)
        full.setdefault("package_version", __version__)
        full.setdefault("git_revision", git_revision())
        full.update(model_name=self.model_name, version=version, created_at=_iso(_utc_now()))
        card = render_model_card({**full, "files": files}).encode()
        self.store.put_bytes(f"{prefix}/{MODEL_CARD}", card)
        files[MODEL_CARD] = {"sha256": hashlib.sha256(card).hexdigest(), "size": len(card)}
        full["files"] = dict(sorted(files.items()))
        full["upload_seconds"] = round(time.perf_counter() - started, 3)
        # The manifest goes last: a version without one is an interrupted upload and is never served.
        self.store.put_bytes(f"{prefix}/{MANIFEST}", _json_bytes(full))
        return full

    def manifest(self, version: str) -> dict:
        """The manifest of a complete version; IncompleteVersion or RegistryError otherwise."""
        return json.loads(self._manifest_bytes(version))

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
        gate_passed = _gate_passed(decision)
        if not gate_passed and not override:
            raise RegistryError(
                f"version {version} failed the gate; promoting it needs override=True (recorded in the audit)"
            )
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


def render_model_card(manifest: dict) -> str:
    """A markdown model card from a manifest: identity, data, configs, metrics, decision, timings, files."""
    lines = [
        f"# Model card: {manifest.get('model_name', '?')} {manifest.get('version', '?')}",
        "",
        "Query–item relevance cross-encoder for e-commerce search, retrained by tailguard.",
        "",
        "| field | value |",
        "|---|---|",
    ]
    for field in ("version", "created_at", "package_version", "git_revision", "flow_run_id", "base_model"):
        if manifest.get(field) is not None:
            lines.append(f"| {field} | `{manifest[field]}` |")
    sections = [
        ("Training data", "fingerprints"),
        ("Configuration", "configs"),
        ("Metrics", "metrics"),
        ("Gate decision", "decision"),
        ("Stage timings (s)", "timings"),
    ]
    for title, field in sections:
        value = manifest.get(field)
        if not value:
            continue
        lines += ["", f"## {title}", ""]
        if isinstance(value, dict) and all(not isinstance(v, dict | list) for v in value.values()):
            lines += ["| name | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in value.items()]
        else:
            lines += ["```json", json.dumps(value, indent=2, sort_keys=True, default=str), "```"]
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
    for name, meta in sorted(manifest.get("files", {}).items()):
        lines.append(f"| {name} | {meta['size']} | `{meta['sha256'][:16]}…` |")
    return "\n".join(lines) + "\n"
