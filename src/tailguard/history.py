"""History across versions: two versions side by side, and the trend of the headline metrics.

Two versions' numbers are only comparable when both models were scored on the same eval rows. The flow
does that once per run: the candidate and the production model of the moment are scored on the
candidate's eval split, and the manifest records which production version that was
(`Manifest.production_version`). So V1 and V2 are compared on the same rows, with the paired bootstrap
intervals of metrics.json, exactly when one was the other's production at evaluation time. Otherwise each
version's own numbers are shown, labelled NOT_COMPARABLE: every run holds out its own queries of its own
newest batch, and AUCs of different rows differ by more than the models do (the tail slice of a demo run
has ~30 positives, so its AUC moves by ~0.05 from the sample alone).

Pure library (no Prefect): reads manifests, the audit log and, for a paired comparison, one metrics.json
(checked against its manifest sha256).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from tailguard.metrics import Evaluation, Interval
from tailguard.registry import DecisionRecord, Manifest, Registry, RegistryError
from tailguard.summary import HEADLINE

NOT_COMPARABLE = "own eval split, not comparable"
# The slices and metrics a paired comparison lists (metrics.json holds more; categories are left out).
COMPARED_DIMENSIONS = ("overall", "popularity", "query_frequency", "query_terms")
COMPARED_METRICS = ("roc_auc", "roc_auc_per_query", "ndcg_at_k")
# Short column names of the HEADLINE metrics, in HEADLINE's order.
HEADLINE_LABELS = ("AUC", "AUC/q", "tail AUC/q", "cold AUC")

Status = Literal["production", "promoted", "rejected", "refused", "pending"]


class VersionInfo(BaseModel):
    """One version as the history shows it."""

    version: str
    created_at: str | None = None
    status: Status = Field(
        "pending",
        description="production (now); promoted (was production once); rejected / refused (audit); "
        "pending (never reviewed).",
    )
    gate: bool | None = Field(
        None,
        description="True only for a pass under the reviewed default policy (DecisionRecord.gate_passed); "
        "None: never judged.",
    )
    gate_label: str = Field(
        "-", description="The gate's verdict in words (DecisionRecord.gate_label), e.g. 'pass', 'FAIL'."
    )
    production_version: str | None = Field(
        None, description="The production version it was scored against on the same eval rows."
    )
    headline: dict[str, dict[str, float | None]] = Field(
        default_factory=dict, description="{'slice/metric': {'candidate', 'production'}} from the manifest."
    )


class ComparisonRow(BaseModel):
    """One (slice, metric) of two versions; diff = v2 − v1 with its paired 95% interval over queries."""

    slice: str
    metric: str
    v1: float | None
    v2: float | None
    diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    rows: int | None = Field(None, description="Eval rows in the slice (same rows only).")
    positives: int | None = None
    judged: bool = Field(True, description="False when the slice has too few positives to judge.")
    note: str = ""


class Comparison(BaseModel):
    """compare_versions' answer: same_rows says whether the two columns were computed on the same rows."""

    model_name: str
    v1: VersionInfo
    v2: VersionInfo
    same_rows: bool
    basis: str = Field(description="One sentence: where the numbers come from and whether they compare.")
    source_version: str | None = Field(
        None, description="The version whose metrics.json holds both columns (same rows only)."
    )
    rows: list[ComparisonRow]


def _resolve(registry: Registry, version: str) -> str:
    """A version id, with 'production' standing for the version production points at."""
    if version == "production":
        pointer = registry.production()
        if not pointer:
            raise RegistryError(f"{registry.model_name!r} has no production version yet")
        return pointer["version"]
    registry.version_prefix(version)  # RegistryError on an invalid id, before any store read
    return version


def _statuses(registry: Registry) -> dict[str, Status]:
    """Each reviewed version's status from the pointer and the audit log (later records win ties)."""
    out: dict[str, Status] = {}
    for record in registry.audit():
        version, action = record.get("version"), record.get("action")
        if not isinstance(version, str):
            continue
        if action in ("promote", "rollback"):
            out[version] = "promoted"
        elif action in ("reject", "refuse") and out.get(version) != "promoted":
            out[version] = "rejected" if action == "reject" else "refused"
    pointer = registry.production()
    if pointer:
        out[pointer["version"]] = "production"
    return out


def _read_manifest(registry: Registry, version: str) -> Manifest:
    """The typed manifest; a manifest of the wrong shape is a RegistryError naming the field and value."""
    try:
        return registry.read_manifest(version)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RegistryError(
            f"version {version}: manifest.json field {where!r}: {first['msg']} "
            f"(got {first.get('input')!r:.80})"
        ) from None


def _info(manifest: Manifest, version: str, statuses: dict[str, Status]) -> VersionInfo:
    decision = DecisionRecord.of(manifest.decision)
    return VersionInfo(
        version=version,
        created_at=manifest.created_at,
        status=statuses.get(version, "pending"),
        gate=None if decision.promote is None else decision.gate_passed,
        gate_label=decision.gate_label,
        production_version=manifest.production_version,
        headline=manifest.headline,
    )


def compare_versions(registry: Registry, v1: str, v2: str) -> Comparison:
    """V1 and V2 side by side; paired on the same eval rows when one was scored against the other.

    v1, v2: version ids ('production' names the current one). When v2's manifest says it was scored against
    production v1 (or v1's against v2), both columns and the v2 − v1 intervals come from that version's
    metrics.json (verified against its sha256). Otherwise each version's own headline numbers are shown with
    note NOT_COMPARABLE and no difference. Raises RegistryError (unknown/incomplete/invalid version, the
    same version twice, no production), ChecksumError (metrics.json changed or missing).
    """
    v1, v2 = _resolve(registry, v1), _resolve(registry, v2)
    if v1 == v2:
        raise RegistryError(f"compare needs two different versions; got {v1} twice")
    m1, m2 = _read_manifest(registry, v1), _read_manifest(registry, v2)
    statuses = _statuses(registry)
    info1, info2 = _info(m1, v1, statuses), _info(m2, v2, statuses)
    common = {"model_name": registry.model_name, "v1": info1, "v2": info2}
    for source, other, flipped in ((info2, v1, False), (info1, v2, True)):
        if source.production_version == other:
            evaluation = _metrics_json(registry, source.version)
            if evaluation.has_model("production"):
                return Comparison(
                    **common, same_rows=True, source_version=source.version,
                    rows=_paired_rows(evaluation, flipped),
                    basis=f"same eval rows: {source.version} was scored against production {other} on "
                    f"its eval split; differences are {v2} − {v1} with paired 95% intervals over queries",
                )  # fmt: skip
    return Comparison(**common, same_rows=False, rows=_own_rows(info1, info2), basis=_why_apart(info1, info2))


def _why_apart(info1: VersionInfo, info2: VersionInfo) -> str:
    said = []
    for info in (info2, info1):
        was = info.production_version
        said.append(
            f"{info.version} was scored against {was}" if was
            else f"{info.version} records no production version it was scored against"
        )  # fmt: skip
    return (
        f"not scored on the same rows ({'; '.join(said)}): each column is that version's own numbers on its "
        f"own eval split ({NOT_COMPARABLE})"
    )


def _metrics_json(registry: Registry, version: str) -> Evaluation:
    with tempfile.TemporaryDirectory(prefix="tailguard-history-") as scratch:
        folder = registry.fetch_files(version, ["metrics.json"], Path(scratch))
        return Evaluation.from_json(folder / "metrics.json")


def _paired_rows(evaluation: Evaluation, flipped: bool) -> list[ComparisonRow]:
    """Rows from one metrics.json: candidate vs production, as v1/v2 (flipped: the candidate is v1)."""
    rows = []
    for name, info in evaluation.slices.items():
        if (info.dimension or name) not in COMPARED_DIMENSIONS:
            continue
        for metric in COMPARED_METRICS:
            cand = evaluation.value("candidate", name, metric)
            prod = evaluation.value("production", name, metric)
            diff = evaluation.diff(name, metric) or Interval()
            d, lo, hi = diff.value, diff.ci_low, diff.ci_high
            if flipped:  # metrics.json's difference is candidate − production = v1 − v2
                d, lo, hi = (None if x is None else -x for x in (d, hi, lo))
            rows.append(ComparisonRow(
                slice=name, metric=metric, v1=cand if flipped else prod, v2=prod if flipped else cand,
                diff=d, ci_low=lo, ci_high=hi, rows=info.rows, positives=info.positives,
                judged=not info.too_small, note=info.reason or "",
            ))  # fmt: skip
    return rows


def _own_rows(info1: VersionInfo, info2: VersionInfo) -> list[ComparisonRow]:
    rows = []
    for slice_name, metric in HEADLINE:
        key = f"{slice_name}/{metric}"
        own = [(i.headline.get(key) or {}).get("candidate") for i in (info1, info2)]
        rows.append(ComparisonRow(slice=slice_name, metric=metric, v1=own[0], v2=own[1], note=NOT_COMPARABLE))
    return rows


def trend(registry: Registry, last: int = 8) -> list[VersionInfo]:
    """The last `last` complete versions, oldest first, with status and headline metrics (from manifests).

    Each version's numbers are on its own eval split (see the module docstring). Raises ValueError when
    last < 1, RegistryError / StoreError when the store cannot be read.
    """
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise ValueError(f"trend: last must be a whole number of versions ≥ 1, got {last!r}")
    listed = registry.list_versions()[-last:]
    statuses = _statuses(registry)
    return [_info(_read_manifest(registry, row["version"]), row["version"], statuses) for row in listed]


def _fmt(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def comparison_text(c: Comparison) -> str:
    """Console table of a Comparison, its basis stated first."""
    lines = [f"{c.model_name}: {c.v1.version} (v1) vs {c.v2.version} (v2)", c.basis, ""]
    for info, tag in ((c.v1, "v1"), (c.v2, "v2")):
        lines.append(
            f"  {tag} {info.version}  {info.status}  gate {info.gate_label}  created {info.created_at or '-'}"
        )
    header = f"{'slice':<26}{'metric':<19}{'v1':>8}{'v2':>8}{'v2-v1':>8}  95% CI / note"
    lines += ["", header, "-" * len(header)]
    for r in c.rows:
        ci = "" if r.ci_low is None else f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        note = r.note if not c.same_rows else ("" if r.judged else f"(not judged: {r.note})")
        lines.append(
            f"{r.slice:<26}{r.metric:<19}{_fmt(r.v1):>8}{_fmt(r.v2):>8}{_fmt(r.diff, True):>8}  "
            f"{' '.join(x for x in (ci, note) if x)}"
        )
    return "\n".join(lines)


def trend_text(rows: list[VersionInfo]) -> str:
    """Console table of trend(): one line per version, oldest first."""
    header = f"{'version':24} {'created (UTC)':16} {'status':10} {'gate':4} " + " ".join(
        f"{h:>10}" for h in HEADLINE_LABELS
    )
    lines = [header]
    for info in rows:
        created = (info.created_at or "-")[:16].replace("T", " ")
        values = [(info.headline.get(f"{s}/{m}") or {}).get("candidate") for s, m in HEADLINE]
        lines.append(
            f"{info.version:24} {created:16} {info.status:10} {info.gate_label:4} "
            + " ".join(f"{_fmt(v):>10}" for v in values)
        )
    lines.append(f"(candidate values, each on its own eval split: {NOT_COMPARABLE} across versions)")
    return "\n".join(lines)
