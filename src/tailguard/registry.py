"""Model registry on an ArtifactStore: immutable versions, a production pointer flipped last, an audit log."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import subprocess
import tempfile
import time
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tailguard import __version__
from tailguard.safe_text import markdown_code, markdown_text
from tailguard.store import ArtifactStore, KeyNotFound, PreconditionFailed, sha256_file

if TYPE_CHECKING:
    from tailguard.gate import Decision

MANIFEST = "manifest.json"
MODEL_CARD = "model_card.md"
POINTER = "production.json"
# Versions sort by time: "20261128T132501Z-3f2a9c".
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")
_HISTORY_LIMIT = 50
# promote(expected_production=ANY_PRODUCTION) skips the "production has not moved" check.
ANY_PRODUCTION = "*"
# Seconds after a flip during which a missing audit record is taken as in flight (written by its own
# writer milliseconds later), not lost to a crash.
AUDIT_GRACE_S = 60.0


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


class DataRecord(BaseModel):
    """The batch a version was trained on (manifest "data")."""

    model_config = ConfigDict(extra="allow")

    # Lenient: hand-written and older manifests without a batch id must still list and load.
    batch_id: str = Field(
        "", description="Content id of the accepted batch, 'b-' + 16 hex (data.batch_id_for); '' unrecorded."
    )
    uri: str = Field("", description="Where the batch was read from: path or s3:// URI.")
    fingerprint: dict[str, Any] = Field(
        default_factory=dict, description="{'files': [{'name', 'bytes', 'sha256'}], 'sha256': digest}."
    )
    columns: str | None = Field(None, description="Column mapping it was read with, if any.")
    rows: int | None = Field(None, ge=0, description="Rows in the batch (train + eval).")


class DecisionRecord(BaseModel):
    """The gate's verdict as recorded with the version; promote None means the gate never judged it.

    policy_sha256 / policy_is_default: the resolved gate policy that judged it (gate.PolicyRecord), None
    when unrecorded (versions written before policies were recorded).
    """

    model_config = ConfigDict(extra="allow")

    promote: bool | None = None
    reasons: list[str] = Field(default_factory=list)
    policy_sha256: str | None = None
    policy_is_default: bool | None = None

    @classmethod
    def of(cls, decision: BaseModel | Mapping[str, Any] | None) -> DecisionRecord:
        """The verdict of any recorded decision: a gate.Decision, its decision.json dict, a manifest's
        decision, or None (never judged). Older records named the verdict `passed` or `approved`."""
        if isinstance(decision, BaseModel):
            decision = decision.model_dump()
        raw = dict(decision or {})
        verdict = next((raw[k] for k in ("promote", "passed", "approved") if raw.get(k) is not None), None)
        return cls.model_validate({**raw, "promote": None if verdict is None else bool(verdict)})

    @property
    def policy_source(self) -> str:
        """Where the judging policy came from (gate.PolicyRecord.source), or 'unrecorded'."""
        policy = (self.model_extra or {}).get("policy")
        return str(policy.get("source", "unrecorded")) if isinstance(policy, Mapping) else "unrecorded"

    @property
    def gate_status(self) -> GateStatus:
        """The one rule every reader shows (`models` table and --json, model card, summary page):

        'pass' only when the gate passed under the reviewed default policy, the only pass that
        Registry.promote accepts without a named override (gate.Decision.promote_unattended, the same rule
        on a fresh decision); 'pass-non-default-policy' / 'pass-policy-unrecorded' when it passed under
        another policy or one not recorded (both need a named override); 'fail'; 'not-judged'.
        """
        if self.promote is None:
            return "not-judged"
        if not self.promote:
            return "fail"
        if self.policy_is_default is True:
            return "pass"
        return "pass-non-default-policy" if self.policy_is_default is False else "pass-policy-unrecorded"

    @property
    def gate_passed(self) -> bool:
        """True only for a pass under the reviewed default policy (gate_status == 'pass')."""
        return self.gate_status == "pass"

    @property
    def gate_label(self) -> str:
        """gate_status in the `tailguard models` table's words: pass, FAIL, -, or a pass that needs an
        override, e.g. 'pass (non-default policy: needs a named override)'."""
        return GATE_LABELS[self.gate_status]


GateStatus = Literal["pass", "pass-non-default-policy", "pass-policy-unrecorded", "fail", "not-judged"]
GATE_LABELS: dict[str, str] = {
    "pass": "pass",
    "pass-non-default-policy": "pass (non-default policy: needs a named override)",
    "pass-policy-unrecorded": "pass (policy unrecorded: needs a named override)",
    "fail": "FAIL",
    "not-judged": "-",
}


def _decision_json(decision: BaseModel | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A decision as the audit records it: gate.Decision.to_dict() (its decision.json form), or as given."""
    return decision.model_dump() if isinstance(decision, BaseModel) else decision  # type: ignore[return-value]


class EvaluationRecord(BaseModel):
    """The manifest's evaluation: the metrics.EvalConfig fields and the stored files that recompute
    metrics.json (pipeline.recheck_metrics)."""

    model_config = ConfigDict(extra="allow")

    config: dict[str, Any] | None = Field(
        None, description="metrics.EvalConfig fields (n_bootstrap, seed, ...)."
    )
    rows: str = Field("eval_rows.parquet", description="The scored eval rows' file in the version.")
    train_keys: str = Field("train_keys.parquet", description="The training (query, item_id) rows' file.")


class FileRecord(BaseModel):
    """One stored file of a version."""

    sha256: str
    size: int = Field(ge=0, description="Bytes.")


class Manifest(BaseModel):
    """manifest.json of a version: what the pipeline records, plus what write_version adds.

    The pipeline fills data, params, decision, headline ({"slice/metric": {"candidate", "production"}}),
    production_version (what "production" in metrics.json was), balance, drift, training_window,
    evaluation, runtime, flow_run_id and timings_s (seconds per stage);
    the registry fills model_name, version, created_at, package_version, git_revision, files and
    upload_seconds (s).
    Unknown keys are kept, so manifests written by older versions still load.
    """

    model_config = ConfigDict(extra="allow")

    data: DataRecord | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    decision: DecisionRecord | None = None
    headline: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    balance: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    training_window: dict[str, Any] | None = Field(
        None,
        description="{'weeks': N, 'batches': [{'batch_id', 'fingerprint_sha256', 'uri', 'accepted_at', "
        "'week' (ISO, e.g. '2026-W48'), 'rows', 'role' ('window' | 'new')}]}: every batch trained on.",
    )
    evaluation: EvaluationRecord | None = Field(
        None,
        description="What recomputes metrics.json (pipeline.recheck_metrics); None: no eval rows were kept.",
    )
    production_version: str | None = Field(
        None,
        description="The production version the candidate was scored against on the same eval rows "
        "(metrics.json's 'production' column); None when there was no production model then, or unrecorded.",
    )
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


def visible_text_line(text: object) -> str:
    r"""`text` as a reader sees it, on one line: NFKC, control/format/invisible characters dropped
    (contract.visible_text), every run of white space (tabs, line breaks, Zs such as U+3000) one space.

    visible_text_line("\u200b\u2060") == "", visible_text_line(" a\u200bna\nb ") == "ana b".
    """
    from tailguard.contract import visible_text

    return " ".join(visible_text(" ".join(str(text or "").split())).split())


def _has_letter_or_digit(text: str) -> bool:
    return any(unicodedata.category(char)[0] in "LN" for char in text)


def require_comment(comment: object, action: str) -> str:
    """The visible form of a comment that must say why (an override): at least one letter or digit once
    invisible characters are dropped (visible_text_line), else RegistryError."""
    text = visible_text_line(comment)
    if not _has_letter_or_digit(text):
        raise RegistryError(
            f"{action} needs a comment saying why (--comment); {str(comment or '')[:40]!r} has no visible "
            "letter or digit"
        )
    return text


def require_name(who: object, action: str, field: str) -> str:
    r"""A person's (or policy's) name for the record, as a reader sees it (visible_text_line): at least one
    letter or digit, at most 200 characters. The UI form, the CLI and the registry all check with this.

    Raises RegistryError for an empty, blank or invisible-only name ("\u200b\u2060") or one past 200 chars.
    """
    name = visible_text_line(who)
    if not _has_letter_or_digit(name):
        raise RegistryError(
            f"{action} needs the name of who decides ({field}); {str(who or '')[:40]!r} has no visible "
            "letter or digit: an anonymous decision is refused"
        )
    if len(name) > 200:
        raise RegistryError(f"{action}: the name {name[:40]!r}… is {len(name)} characters long (at most 200)")
    return name


class Registry:
    """Versions, the production pointer and the audit log of one model in a store.

    Layout under models/<model_name>/: versions/<version>/ (model/ files, extra files, model_card.md and
    manifest.json, written once each and the manifest last, so a version without one is an interrupted
    upload), production.json (the pointer, flipped by a conditional write: If-Match on S3, lock + atomic
    rename locally) and audit/<utc>-<action>.json (one object per promote, reject, refuse and rollback).
    Version ids sort by time ("20261128T132501Z-3f2a9c"); sizes are bytes, times UTC ISO 8601.

    Raises RegistryError (refused: unknown, incomplete or duplicate version, an override without a name
    or comment), its subclasses IncompleteVersion, ChecksumError (a stored file differs from its manifest
    sha256) and PromotionConflict (another writer flipped the pointer first), and StoreError from the
    store. model_name: letters, digits, '.', '_', '-' (RegistryError otherwise).
    """

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
            self._put_once(f"{prefix}/{name}", source, files[name]["sha256"])

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
        self._put_bytes_once(f"{prefix}/{MODEL_CARD}", card)
        files[MODEL_CARD] = {"sha256": hashlib.sha256(card).hexdigest(), "size": len(card)}
        full.files = {k: FileRecord(**v) for k, v in sorted(files.items())}
        full.upload_seconds = round(time.perf_counter() - started, 3)
        full = full.to_json_dict()
        # The manifest goes last: a version without one is an interrupted upload and is never served.
        self._put_bytes_once(f"{prefix}/{MANIFEST}", _json_bytes(full))
        return full

    def _put_once(self, key: str, source: Path, sha256: str) -> None:
        """Write a version file once (If-None-Match: *). A retry of an interrupted upload may find its
        own identical file there (same sha256): that is kept; any other content raises RegistryError."""
        try:
            self.store.put_file_once(key, source)
        except PreconditionFailed:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="tailguard-once-") as tmp:
                self.store.get_file(key, Path(tmp) / "existing")
                if sha256_file(Path(tmp) / "existing") != sha256:
                    raise RegistryError(
                        f"{key} already exists with other content; versions are immutable "
                        "(write a new version instead)"
                    ) from None

    def _put_bytes_once(self, key: str, data: bytes) -> None:
        # The model card and manifest carry a creation time, so a retry's copy differs: refused too.
        try:
            self.store.put_conditional(key, data, None)
        except PreconditionFailed:
            raise RegistryError(f"{key} already exists; versions are immutable") from None

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
                row.update(self._listing_fields(version))
            rows.append(row)
        # Ids made in the same second are not ordered by their random suffix: the manifest time is.
        return sorted(rows, key=lambda row: (row.get("created_at") or "", row["version"]))

    def _listing_fields(self, version: str) -> dict[str, Any]:
        """list_versions' fields of a complete version, read through the typed Manifest.

        gate is True only for a pass under the reviewed default policy (DecisionRecord.gate_passed), None
        when never judged; gate_status / gate_policy_default / gate_policy_sha256 / gate_overrides say why
        a pass is not one. A manifest that does not validate still lists, with manifest_error naming the
        field (one broken upload must not hide every other version).
        """
        data = self._manifest_bytes(version)
        fields: dict[str, Any] = {"manifest_sha256": hashlib.sha256(data).hexdigest()}
        try:
            manifest = Manifest.model_validate_json(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return {**fields, "manifest_error": f"manifest.json field {where!r}: {first['msg']}"}
        decision = DecisionRecord.of(manifest.decision)
        judged = decision.promote is not None
        return {
            "created_at": manifest.created_at,
            **fields,
            # An absent flow_run_id lists as null, as it did when the manifest was read as a dict.
            "flow_run_id": manifest.flow_run_id if "flow_run_id" in manifest.model_fields_set else None,
            "gate": decision.gate_passed if judged else None,
            "gate_status": decision.gate_status,
            "gate_policy_default": decision.policy_is_default if judged else None,
            "gate_policy_sha256": decision.policy_sha256,
            "gate_overrides": manifest.params.get("gate_overrides") or None,
            "gate_policy_file": manifest.params.get("gate_policy") or None,
            "balance": manifest.params.get("balance"),
            "base_model": manifest.params.get("base_model"),
            "rows": manifest.data.rows if manifest.data is not None else None,
            "headline": manifest.headline,
        }

    def fetch_model(self, version: str, dest: Path) -> Path:
        """Download a version (or 'production') into dest, verifying every sha256; returns dest/model.

        Raises ChecksumError (a file missing or changed, or a manifest that is not the one the pointer
        names), IncompleteVersion or RegistryError.
        """
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
        self._download_verified(version, json.loads(data), Path(dest))
        return Path(dest) / "model"

    def fetch_files(self, version: str, names: list[str], dest: Path) -> Path:
        """Download some files of a version into dest, each checked against the manifest's sha256; returns
        dest. Raises ChecksumError naming a file missing from the manifest or the store, or changed."""
        manifest = self.manifest(version)
        unknown = [n for n in names if n not in manifest.get("files", {})]
        if unknown:
            raise ChecksumError(f"version {version} of {self.model_name!r}: {unknown} not in its {MANIFEST}")
        chosen = {**manifest, "files": {n: manifest["files"][n] for n in names}}
        self._download_verified(version, chosen, Path(dest))
        return Path(dest)

    def verify(self, version: str) -> str:
        """Check every file of a version against its manifest (downloaded to a scratch folder, then removed).

        Returns the hex sha256 of the manifest that was verified, the one a pointer must record. Raises
        ChecksumError naming each missing or changed file (e.g. corrupted weights, a deleted tokenizer file).
        """
        data = self._manifest_bytes(version)
        with tempfile.TemporaryDirectory(prefix="tailguard-verify-") as scratch:
            self._download_verified(version, json.loads(data), Path(scratch))
        return hashlib.sha256(data).hexdigest()

    def _download_verified(self, version: str, manifest: dict, dest: Path) -> None:
        prefix = self.version_prefix(version)
        bad = []
        for name, meta in manifest.get("files", {}).items():
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
        if not manifest.get("files"):
            bad.append(f"{MANIFEST} lists no files")
        if bad:
            raise ChecksumError(
                f"version {version} of {self.model_name!r} failed verification ({len(bad)} of "
                f"{len(manifest.get('files', {}))} files): " + "; ".join(bad[:5]) + "; refusing to use it"
            )

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
        decision: Decision | Mapping[str, Any] | None,
        override: bool = False,
        comment: str = "",
        expected_production: str | None = ANY_PRODUCTION,
        source: str = "api",
    ) -> dict:
        """Verify a complete version, flip production to it (conditional write), audit; returns the pointer.

        decision: the gate's Decision (or a recorded one: its decision.json dict); it promotes without
        override only when it passed under the reviewed default policy (policy_is_default) and nobody
        rejected or refused this version before; the audit records it as decision.json has it.
        Otherwise override=True, a named approved_by and a non-empty comment are needed.
        expected_production: the production version the candidate was evaluated against (None: none);
        if production moved since, the promotion is refused. The default "*" skips this check.
        source: where the decision came from (ui-form, cli, policy:auto, api), recorded with it.
        Raises RegistryError (refused), ChecksumError (a file does not match the manifest),
        PromotionConflict (production moved), ConditionalWritesIgnored.
        """
        approved_by = require_name(approved_by, "promote", "approved_by / --by")
        comment = visible_text_line(comment)
        verdict = DecisionRecord.of(decision)
        decision = _decision_json(decision)
        needs_override = self._override_reasons(version, verdict)
        self._check_override(version, needs_override, override, comment)  # before downloading anything
        self.store.require_conditional_writes()
        manifest_sha = self.verify(version)
        found = self.store.read_versioned(self.pointer_key)
        previous = json.loads(found[0]) if found else None
        previous_version = previous["version"] if previous else None
        if previous_version == version:
            if previous.get("action") == "promote" and previous.get("manifest_sha256") == manifest_sha:
                # A retried promotion whose flip already landed: finish its audit instead of flipping twice.
                return self._ensure_audit(previous, decision)
            raise RegistryError(f"{version} is already production of {self.model_name!r}")
        if previous is not None:
            self._ensure_audit(
                previous, grace_s=AUDIT_GRACE_S
            )  # a crash after the last flip left it unaudited
        if expected_production != ANY_PRODUCTION and previous_version != expected_production:
            raise PromotionConflict(
                f"{version} was evaluated against production {expected_production}, but production is now "
                f"{previous_version}; re-evaluate before promoting"
            )
        stale = self._stale_reason(version, previous_version)
        if stale:
            needs_override = [*needs_override, stale]
            self._check_override(version, needs_override, override, comment)
        history = list(previous.get("history", [])) + [previous["version"]] if previous else []
        now = _utc_now()
        pointer = self._pointer(
            "promote", version, manifest_sha, approved_by, now, previous_version, history,
            override=bool(needs_override), override_reasons=needs_override, gate_passed=bool(verdict.promote),
            policy_sha256=verdict.policy_sha256, policy_is_default=verdict.policy_is_default is True,
            decision_source=source, comment=comment,
        )  # fmt: skip
        self._flip(pointer, found[1] if found else None, "promotion")
        self.record_audit("promote", {**pointer, "decision": decision}, at=now)
        return pointer

    def _pointer(
        self,
        action: str,
        version: str,
        manifest_sha: str,
        by: str,
        at: datetime,
        previous: str | None,
        history: list[str],
        **fields: Any,
    ) -> dict[str, Any]:
        """production.json's content (written with sorted keys): the version and its manifest sha256, the
        action that set it, who and when (UTC ISO 8601), the version it replaced, the rollback stack (the
        last _HISTORY_LIMIT = 50 versions) and the action's own fields (override, comment, ...)."""
        return {"model_name": self.model_name, "version": version, "manifest_sha256": manifest_sha,
                "action": action, "approved_by": by, "approved_at": _iso(at), "previous": previous,
                "history": history[-_HISTORY_LIMIT:], **fields}  # fmt: skip

    def _check_override(self, version: str, reasons: list[str], override: bool, comment: str) -> None:
        """Refuse (RegistryError) a promotion that needs an override without override=True and a comment."""
        if reasons and not override:
            raise RegistryError(
                f"version {version} of {self.model_name!r} {'; '.join(reasons)}; promoting it needs "
                "override=True / --override by a named reviewer with a comment (recorded in the audit)"
            )
        if reasons:
            require_comment(comment, f"an override of {version}")

    def _stale_reason(self, version: str, production_version: str | None) -> str | None:
        """'stale: ...' when the version was evaluated against another production than the current one.

        The manifest's production_version is what metrics.json's production column was. A manifest written
        by the pipeline (it has an evaluation record) with none was judged with no production to compare;
        that is stale too once a production exists. Older manifests without either are not judged here.
        """
        manifest = self.read_manifest(version)
        recorded = manifest.production_version
        if recorded is None and (manifest.evaluation is None or production_version is None):
            return None
        if recorded == production_version:
            return None
        return (
            f"stale: evaluated against production {recorded or 'none (no production model then)'}, but "
            f"production is now {production_version or 'none'}"
        )

    def _override_reasons(self, version: str, decision: DecisionRecord) -> list[str]:
        """Why promoting this version is an override ([] when the gate passed cleanly and nobody said no)."""
        reasons = []
        if decision.promote is None:
            reasons.append("has no gate decision (it was never judged)")
        elif decision.promote is False:
            reasons.append("failed the gate")
        if decision.promote is not None and decision.policy_is_default is not True:
            digest = decision.policy_sha256 or "unrecorded"
            reasons.append(
                "was judged under a gate policy that is not the reviewed default "
                f"(sha256 {digest[:12]}, {decision.policy_source})"
            )
        for record in self.audit():
            if record.get("version") == version and record["action"] in ("reject", "refuse"):
                who = record.get("rejected_by") or record.get("refused_by") or "?"
                why = record.get("reason") or record.get("comment") or ""
                reasons.append(f"was {record['action']}ed by {who} at {record.get('at')} ({why})")
        return reasons

    def _ensure_audit(self, pointer: dict, decision: dict | None = None, grace_s: float = 0.0) -> dict:
        """Write the audit record of a pointer if it is missing (a crash between the flip and the audit).

        grace_s: leave a pointer flipped less than this many seconds ago alone: another writer may be
        between its flip and its audit right now (they are milliseconds apart; AUDIT_GRACE_S is 60).
        """
        action = pointer.get("action", "promote")
        if action not in ("promote", "rollback") or not pointer.get("approved_at"):
            return pointer
        at = datetime.fromisoformat(pointer["approved_at"].replace("Z", "+00:00"))
        if (_utc_now() - at).total_seconds() < grace_s:
            return pointer
        if self.store.exists(self._audit_key(at, action)):  # the usual key: written at the flip's time
            return pointer
        if any(
            a["action"] == action and a.get("approved_at") == pointer["approved_at"] for a in self.audit()
        ):
            return pointer
        extra = {"decision": decision} if decision is not None else {}
        if action == "rollback":
            extra["rolled_back_from"] = pointer.get("previous")
        self.record_audit(action, {**pointer, **extra, "audit_recovered": True}, at=at)
        return pointer

    def reject(
        self,
        version: str,
        by: str,
        decision: Decision | Mapping[str, Any] | None,
        comment: str = "",
        source: str = "api",
    ) -> None:
        """Record a rejection bound to the version's manifest sha256; production is untouched.

        decision: the gate's Decision or its decision.json dict (recorded as that dict). Raises
        RegistryError when `by` is empty: a rejection names who made it.
        """
        decision = _decision_json(decision)
        by = require_name(by, "reject", "by / --reviewer")
        comment = visible_text_line(comment)
        self.record_audit(
            "reject",
            {"version": version, "rejected_by": by, "decision": decision, "comment": comment,
             "decision_source": source, "manifest_sha256": self._manifest_sha_or_none(version)},
        )  # fmt: skip

    def refuse(
        self, version: str, reason: str, decision: Decision | Mapping[str, Any] | None, by: str = "flow"
    ) -> None:
        """Record that a promotion of `version` was refused (e.g. stale: production moved since judged)."""
        decision = _decision_json(decision)
        self.record_audit(
            "refuse",
            {"version": version, "refused_by": by, "reason": reason, "decision": decision,
             "manifest_sha256": self._manifest_sha_or_none(version)},
        )  # fmt: skip

    def _manifest_sha_or_none(self, version: str) -> str | None:
        try:
            return hashlib.sha256(self._manifest_bytes(version)).hexdigest()
        except RegistryError:
            return None

    def rollback(
        self,
        to: str | None = None,
        by: str = "",
        expected_current: str | None = None,
        request_id: str | None = None,
        source: str = "api",
    ) -> dict:
        """Point production at `to` (default: the version before the production one); returns the pointer.

        A rollback never repeats a landed flip: with request_id, a pointer already carrying that id is
        returned as is (its audit completed if a crash lost it); with expected_current, a production that is
        no longer that version raises PromotionConflict and changes nothing. The target's files are
        verified against its manifest first (ChecksumError). `by` must name who rolls back.
        """
        by = require_name(by, "rollback", "by / --by")
        self.store.require_conditional_writes()
        found = self.store.read_versioned(self.pointer_key)
        if found is None:
            raise RegistryError(f"{self.model_name!r} has no production model to roll back")
        current = json.loads(found[0])
        if request_id and current.get("request_id") == request_id:
            return self._ensure_audit(current)  # this request's flip landed before (a retry or a rerun)
        self._ensure_audit(current, grace_s=AUDIT_GRACE_S)
        if expected_current is not None and current["version"] != expected_current:
            raise PromotionConflict(
                f"rollback of {self.model_name!r} expected production {expected_current}, but it is "
                f"{current['version']} ({current.get('action')} by {current.get('approved_by')} at "
                f"{current.get('approved_at')}); nothing changed"
            )
        target, history = self._rollback_target(current, to)
        manifest_sha = self.verify(target)
        now = _utc_now()
        pointer = self._pointer(
            "rollback", target, manifest_sha, by, now, current["version"], history, override=False,
            decision_source=source, request_id=request_id, comment=f"rollback from {current['version']}",
        )  # fmt: skip
        self._flip(pointer, found[1], "rollback")
        self.record_audit("rollback", {**pointer, "rolled_back_from": current["version"]}, at=now)
        return pointer

    def _rollback_target(self, current: dict, to: str | None) -> tuple[str, list[str]]:
        """The version a rollback restores and the rollback stack left after it."""
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
        return target, history

    def _audit_key(self, moment: datetime, action: str) -> str:
        return f"{self.root}/audit/{moment:%Y%m%dT%H%M%S.%fZ}-{action}.json"

    def record_audit(self, action: str, payload: dict, at: datetime | None = None) -> str:
        """Write one audit object at models/<name>/audit/<utc>-<action>.json (never overwrites)."""
        if not re.match(r"^[a-z][a-z0-9_-]*$", action):
            raise RegistryError(f"invalid audit action {action!r}")
        moment = at or _utc_now()
        for _ in range(100):
            key = self._audit_key(moment, action)
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
    """Inert inline markdown for any value (safe_text.markdown_text: no link, image, autolink, HTML or new
    block; '|' escaped, so it stays one table cell). Non-strings are shown as sorted JSON; a number as is
    (its digits, '.', '-', 'e' make no markup inside a cell)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return markdown_text(text)


def _md_code(value: Any) -> str:
    """An identity value (version, digest, run id) as a code span inside a GFM table cell: fenced by more
    backticks than it holds (safe_text.markdown_code), '|' escaped because GFM splits cells first."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return markdown_code(text).replace("|", "\\|")


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
        lines += [f"| {_md(f.get('name'))} | {_md(f.get('bytes'))} | {_md_code(f.get('sha256'))} |"
                  for f in files]  # fmt: skip
    return lines


def _window_section(window: dict[str, Any]) -> list[str]:
    batches = window.get("batches") or []
    weeks = sorted({str(b.get("week")) for b in batches})
    lines = [f"Trained on {len(batches)} batch(es) of the last {_md(window.get('weeks'))} week(s): "
             f"{_md(', '.join(weeks))}. Evaluated on held-out queries of the new batch only.", "",
             "| week | batch | role | rows | fingerprint sha256 | accepted_at |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for b in batches:
        cells = [b.get("week"), b.get("batch_id"), b.get("role"), b.get("rows"), b.get("fingerprint_sha256"),
                 b.get("accepted_at")]  # fmt: skip
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
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


def _decision_section(decision: DecisionRecord, params: dict[str, Any]) -> list[str]:
    """The gate's verdict by DecisionRecord.gate_status: a pass under a policy that is not the reviewed
    default says so, with the run's overrides, because promoting it needs a named override."""
    status = decision.gate_status
    verdict = {"pass": "promote", "pass-policy-unrecorded": "promote", "fail": "do not promote",
               "not-judged": "not judged",
               "pass-non-default-policy": "promote only with a named override"}[status]  # fmt: skip
    lines = [f"Gate verdict: **{verdict}**", ""]
    if status == "pass-non-default-policy":
        overrides = params.get("gate_overrides") or {}
        policy_file = params.get("gate_policy") or None
        lines += [
            "The gate policy that judged it was **not the reviewed default** (sha256 "
            f"{_md_code(decision.policy_sha256 or 'unrecorded')}): `tailguard promote` refuses it without "
            "--override, a named reviewer and a comment.",
            "",
            *([f"- policy file: {_md_code(policy_file)}"] if policy_file else []),
            *([f"- gate overrides: {_md_code(overrides)}"] if overrides else []),
            *([""] if policy_file or overrides else []),
        ]
    elif status == "pass-policy-unrecorded":
        lines += ["The gate policy that judged it was not recorded: promoting it needs a named override.", ""]
    return lines + [f"- {_md(r)}" for r in decision.reasons]


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
    lines += [f"| {k} | {_md_code(v)} |" for k, v in identity if v is not None]
    sections: list[tuple[str, list[str]]] = []
    if m.data is not None:
        sections.append(("Training data", _data_section(m.data)))
    if m.training_window:
        sections.append(("Training window", _window_section(m.training_window)))
    if m.params:
        sections.append(("Configuration", _kv_table(sorted(m.params.items()))))
    if m.headline or m.decision is not None:  # a judged version always says what its metrics were
        sections.append(("Metrics", _metrics_section(m.headline)))
    if m.decision is not None:
        sections.append(("Gate decision", _decision_section(DecisionRecord.of(m.decision), m.params)))
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
        lines.append(f"| {_md(name)} | {meta.size} | {_md_code(meta.sha256[:16] + '…')} |")
    return "\n".join(lines) + "\n"
