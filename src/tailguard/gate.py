"""The promotion gate: a typed policy (YAML) and a pure decision with every check and its reason."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tailguard.metrics import HIGHER_IS_BETTER, Evaluation
from tailguard.metrics import finite_value as _num

DEFAULT_POLICY_PATH = Path(__file__).resolve().parents[2] / "policies" / "gate.yaml"
Verdict = Literal["pass", "fail", "skipped"]
Bound = Literal["lower", "upper"]


class GatePolicy(BaseModel):
    """What a candidate must show to be promoted; policies/gate.yaml mirrors these defaults."""

    model_config = ConfigDict(extra="forbid")

    floors: dict[str, float] = Field(
        # Per-query AUC too: on Home Depot a MiniLM after 40 steps had pooled AUC 0.558 (query priors)
        # but per-query AUC 0.496, i.e. no ranking within a query; a pooled floor alone promoted it.
        default_factory=lambda: {"roc_auc": 0.55, "roc_auc_per_query": 0.55},
        description="Absolute floors on the candidate's overall metrics (apply even with no production). "
        "For lower-is-better metrics (log_loss, ece) the value is a ceiling.",
    )
    max_regression: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.02, "ndcg_at_k": 0.02, "recall_at_k": 0.03},
        description="Largest allowed candidate − production loss per judged slice, in metric units.",
    )
    # 'upper' by default (measured on the demo generator, 9k eval rows, 300 resamples): a candidate that
    # was better everywhere by construction failed 7 of ~90 non-inferiority ('lower') checks, because
    # with that many slice x metric intervals some lower ends dip below -0.02 by chance.
    regression_bound: Bound = Field(
        "upper",
        description="Which end of the 95% interval judges a regression: 'lower' = non-inferiority (the whole "
        "interval must stay above −margin); 'upper' = fail only when the regression is established.",
    )
    regression_dimensions: list[str] = Field(
        # Categories are reported but not gated by default: 8+ small slices add false rejections.
        default_factory=lambda: ["overall", "popularity", "query_frequency", "query_terms"],
        description="Slice dimensions whose slices the regression check judges.",
    )
    protected_slices: list[str] = Field(
        default_factory=lambda: ["popularity:tail", "popularity:cold"],
        description="Slices that must not regress at all on the protected metrics.",
    )
    protected_metrics: list[str] = Field(
        default_factory=lambda: ["roc_auc", "recall_at_k", "mrr"],
        description="Metrics the protected slices must not lose on (margin 0).",
    )
    protected_bound: Bound = Field(
        "upper",
        description="'upper': fail when the whole interval is below 0 (an established regression); "
        "'lower' would demand a proven improvement.",
    )
    max_fairness_gap_growth: float | None = Field(
        0.05,
        description="Largest allowed growth of the recall gap between popularity buckets (candidate − "
        "production); null disables.",
    )
    fairness_bound: Bound = Field(
        "lower",
        description="End of the gap-growth interval compared with the tolerance: 'lower' fails only an "
        "established growth (recall gaps are noisy: ±0.1 on 2,000 rows); 'upper' also fails an unproven one.",
    )
    min_tail_head_exposure_ratio: float | None = Field(
        None, description="Optional floor on the candidate's tail/head exposure ratio in top-k lists."
    )
    max_share_drifted_columns: float | None = Field(
        0.5, description="Largest share of drifted columns in the batch; null disables the drift check."
    )
    blocking_drift_columns: list[str] = Field(
        default_factory=list, description="Columns whose drift alone fails the gate."
    )


def policy_digest(policy: GatePolicy) -> str:
    """sha256 (hex) of the policy's canonical JSON (sorted keys, every field resolved, defaults included).

    Two policies with the same digest gate identically, whatever file or overrides they came from.
    """
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class PolicyRecord(BaseModel):
    """Which policy judged a candidate: what the decision, the pointer and the audit record.

    The deployment's reviewed default is policies/gate.yaml as shipped with the code (reviewed in git
    like the code itself); any policy whose resolved content differs from it is an override.
    """

    source: str = Field(description="'default', or the file and/or per-run overrides it came from.")
    sha256: str = Field(description="policy_digest of the resolved policy.")
    is_default: bool = Field(description="True when the resolved policy equals the reviewed default.")
    values: dict[str, Any] = Field(default_factory=dict, description="The resolved policy fields.")


def resolve_policy(
    path: str | Path | None = None, overrides: dict | None = None, origin: str = ""
) -> tuple[GatePolicy, PolicyRecord]:
    """load_policy plus its record: digest, source, and whether it equals the reviewed default.

    origin: where path/overrides came from, prefixed to the source (e.g. "deployment-parameter").
    Raises what load_policy raises (FileNotFoundError, ValueError naming the file and field).
    """
    policy = load_policy(path, overrides)
    digest = policy_digest(policy)
    is_default = digest == policy_digest(load_policy(None))
    parts = ([f"gate_policy={path}"] if path else []) + (
        [f"gate_overrides of {', '.join(map(str, sorted(overrides)))}"] if overrides else []
    )
    source = " + ".join(parts)
    return policy, PolicyRecord(
        source="default" if not parts else (f"{origin}: {source}" if origin else source),
        sha256=digest,
        is_default=is_default,
        values=policy.model_dump(mode="json"),
    )


def load_policy(path: str | Path | None = None, overrides: dict | None = None) -> GatePolicy:
    """Read a policy from YAML (None: policies/gate.yaml, or the built-in defaults if it is absent)."""
    data: dict[str, Any] = {}
    p = Path(path) if path is not None else DEFAULT_POLICY_PATH
    if path is not None and not p.exists():
        raise FileNotFoundError(f"{p}: gate policy file not found")
    if p.exists():
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            detail = " ".join(str(err).split())[:300]
            raise ValueError(f"{p}: not a readable YAML gate policy: {detail}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: a gate policy must be a YAML mapping, got {type(loaded).__name__}")
        data.update(loaded)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    try:
        return GatePolicy(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
        )
        # Name what was wrong: the reviewed file, or the run's overrides on top of it.
        where = f"{p} with gate_overrides {sorted(map(str, overrides))}" if overrides else str(p)
        raise ValueError(f"{where}: invalid gate policy: {problems}") from None


class Check(BaseModel):
    """One gate check: what was observed, against what, and the verdict."""

    name: str
    observed: float | None = None
    threshold: float | None = None
    verdict: Verdict
    reason: str


class Decision(BaseModel):
    """The gate's decision and every check behind it.

    promote: every check passed under `policy`. A policy other than the reviewed default
    (policy.is_default False) never promotes unattended: see `promote_unattended`.
    """

    promote: bool
    checks: list[Check]
    reasons: list[str]
    policy: PolicyRecord | None = None
    policy_sha256: str | None = None
    policy_is_default: bool | None = None

    def with_policy(self, record: PolicyRecord) -> Decision:
        """This decision stamped with the policy that judged it (digest and default flag at top level)."""
        return self.model_copy(
            update={"policy": record, "policy_sha256": record.sha256, "policy_is_default": record.is_default}
        )

    @property
    def promote_unattended(self) -> bool:
        """approval=auto promotes only a gate pass under the reviewed default policy."""
        return self.promote and self.policy_is_default is True

    def to_dict(self) -> dict:
        """JSON-able form (stored with the version and in the audit log)."""
        return self.model_dump()

    def failed(self) -> list[Check]:
        """The failing checks."""
        return [c for c in self.checks if c.verdict == "fail"]

    def summary(self) -> str:
        """Multi-line human text."""
        counts = {v: sum(c.verdict == v for c in self.checks) for v in ("pass", "fail", "skipped")}
        head = "PROMOTE" if self.promote else "DO NOT PROMOTE"
        lines = [f"{head}: {counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped"]
        if self.policy is not None and not self.policy.is_default:
            lines.append(
                f"  POLICY is not the reviewed default ({self.policy.source}): promoting needs an override"
            )
        lines += [f"  FAIL {c.name}: {c.reason}" for c in self.checks if c.verdict == "fail"]
        lines += [f"  skip {c.name}: {c.reason}" for c in self.checks if c.verdict == "skipped"]
        return "\n".join(lines)


def _part(obj: Any, key: str) -> Any:
    """obj[key] of a metrics.json dict or the attribute of a metrics model; None when absent."""
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _why(entry: Any) -> str:
    return _part(entry, "undefined") or "undefined"


def _fmt(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.4f}"


def _floor_checks(candidate: dict, policy: GatePolicy) -> list[Check]:
    out = []
    overall = candidate.get("overall", {})
    for metric, limit in policy.floors.items():
        name = f"floor:overall:{metric}"
        higher = HIGHER_IS_BETTER.get(metric, True)
        value = _num(overall.get(metric))
        if value is None:
            # An undefined floor metric must never pass silently.
            out.append(
                Check(
                    name=name,
                    threshold=limit,
                    verdict="fail",
                    reason=f"candidate {metric} is undefined ({_why(overall.get(metric))}); floors need one",
                )
            )
            continue
        ok = value >= limit if higher else value <= limit
        rel = ">=" if higher else "<="
        out.append(
            Check(
                name=name,
                observed=value,
                threshold=limit,
                verdict="pass" if ok else "fail",
                reason=f"candidate {metric} {_fmt(value)} {'meets' if ok else 'misses'} {rel} {limit}",
            )
        )
    return out


def _judged(slice_name: str, slices: dict | None, dims: list[str]) -> tuple[bool, str | None]:
    dim = slice_name.split(":", 1)[0]
    if dim not in dims:
        return False, None
    info = (slices or {}).get(slice_name)
    if info and _part(info, "too_small"):
        return False, f"slice too small to judge: {_part(info, 'reason')}"
    return True, None


def _diff_check(
    name: str,
    metric: str,
    cand: Any,
    prod: Any,
    cmp_entry: Any,
    margin: float,
    bound: Bound,
    label: str,
) -> Check:
    """Fail when the chosen interval end of the (direction-adjusted) difference is below −margin."""
    higher = HIGHER_IS_BETTER.get(metric, True)
    sign = 1.0 if higher else -1.0
    c, p = _num(cand), _num(prod)
    ci_low, ci_high = _part(cmp_entry, "ci_low"), _part(cmp_entry, "ci_high")
    if ci_low is not None and ci_high is not None:
        lo, hi = sign * ci_low, sign * ci_high
        lo, hi = min(lo, hi), max(lo, hi)
        observed = lo if bound == "lower" else hi
        basis = f"{bound} end of the interval [{_fmt(lo)}, {_fmt(hi)}]"
    elif c is not None and p is not None:
        observed = sign * (c - p)
        basis = "point estimate (no interval given)"
    else:
        why = _why(cand) if c is None else _why(prod)
        return Check(
            name=name,
            verdict="skipped",
            threshold=-margin,
            reason=f"{metric} undefined for {'candidate' if c is None else 'production'} ({why})",
        )
    ok = observed >= -margin
    word = "improvement" if higher else "improvement (lower is better)"
    return Check(
        name=name,
        observed=observed,
        threshold=-margin,
        verdict="pass" if ok else "fail",
        reason=f"{label}: {word} {_fmt(observed)} on the {basis}; allowed loss {margin}",
    )


def _exposure_check(fairness: Any, policy: GatePolicy) -> list[Check]:
    """The floor on the candidate's tail/head exposure ratio, when the policy sets one."""
    limit = policy.min_tail_head_exposure_ratio
    if limit is None or not fairness:
        return []
    cand = _part(fairness, "candidate")
    ratio = _num(_part(_part(cand, "exposure"), "tail_head_ratio"))
    return [
        Check(
            name="floor:tail_head_exposure_ratio",
            observed=ratio,
            threshold=limit,
            verdict="skipped" if ratio is None else ("pass" if ratio >= limit else "fail"),
            reason="tail/head exposure ratio undefined"
            if ratio is None
            else f"candidate tail/head exposure {_fmt(ratio)} vs floor {limit}",
        )
    ]


def _slice_checks(
    slice_name: str, c_m: dict, p_m: dict, cmp_m: dict, judged: bool, protected: bool, policy: GatePolicy
) -> list[Check]:
    """Regression checks of a judged slice (allowed loss per metric) and protected checks (no loss)."""
    rules = []
    if judged:
        rules += [
            ("regression", metric, margin, policy.regression_bound, slice_name)
            for metric, margin in policy.max_regression.items()
        ]
    if protected:
        rules += [
            ("protected", metric, 0.0, policy.protected_bound, f"{slice_name} must not regress")
            for metric in policy.protected_metrics
        ]
    return [
        _diff_check(f"{kind}:{slice_name}:{metric}", metric, _part(c_m, metric), _part(p_m, metric),
                    _part(cmp_m, metric), margin, bound, label)
        for kind, metric, margin, bound, label in rules
    ]  # fmt: skip


def _comparison_checks(
    candidate: dict, production: dict, cmp_slices: dict, slices: dict | None, policy: GatePolicy
) -> list[Check]:
    """Per slice present in either model: regression and protected checks, or why the slice is skipped."""
    checks = []
    names = list(dict.fromkeys([*candidate.keys(), *production.keys()]))
    for slice_name in names:
        judged, why = _judged(slice_name, slices, policy.regression_dimensions)
        protected = slice_name in policy.protected_slices
        if why:  # too small: a protected check is skipped too, with the same reason
            checks.append(Check(name=f"regression:{slice_name}:*", verdict="skipped", reason=why))
        elif judged or protected:
            c_m, p_m = candidate.get(slice_name, {}), production.get(slice_name, {})
            checks += _slice_checks(
                slice_name, c_m, p_m, cmp_slices.get(slice_name, {}), judged, protected, policy
            )
    checks += [
        Check(name=f"protected:{name}:*", verdict="skipped", reason="slice absent from evaluation")
        for name in policy.protected_slices
        if name not in names
    ]
    return checks


def decide(
    candidate: dict,
    production: dict | None,
    policy: GatePolicy,
    comparison: Any = None,
    drift: dict | None = None,
    *,
    slices: dict | None = None,
    fairness: Any = None,
) -> Decision:
    """Decide promotion from per-slice metrics and the policy; pure (no I/O, no clock).

    Inputs: candidate and production are {slice: {metric: entry}} where an entry is a metrics.json entry
    ({"value": float | None, "undefined": why}) or a metrics.MetricEntry; production None means no
    production model yet (only the absolute floors apply). comparison: metrics.json's comparison block
    ({"slices": {slice: {metric: interval}}, "fairness": {...}}) or a metrics.Comparison, intervals being
    candidate − production with ci_low/ci_high (paired bootstrap, see metrics.evaluate); slices: {slice:
    {"too_small": bool, "reason": str}} or metrics.SliceInfo values; fairness: {model: {recall_gap,
    exposure}}; drift: {"share_drifted_columns": float in [0, 1], "drifted_columns": [names]}.
    Metric values are in the metric's own units (AUC in [0, 1], log loss in nats); margins in the policy
    are in the same units, and a metric where lower is better (metrics.HIGHER_IS_BETTER) is sign-flipped
    so that every check reads "improvement >= -allowed loss" on the interval end the policy names.

    Returns a Decision: promote (True only when no check failed), every Check (pass / fail / skipped with
    observed value, threshold and reason) and the failing reasons. An undefined floor metric fails; with a
    production model and every comparison skipped the candidate fails closed (regression:nothing_judged).
    Raises nothing for missing metrics (they become skipped or failed checks); pydantic.ValidationError
    only for malformed check values.
    """
    checks = _floor_checks(candidate, policy) + _exposure_check(fairness, policy)
    if production is None:
        checks.append(
            Check(
                name="regression:*",
                verdict="skipped",
                reason="no production model yet: only absolute floors apply",
            )
        )
    else:
        cmp_all = _part(comparison, "slices")
        cmp_slices = cmp_all if cmp_all is not None else (comparison or {})
        checks += _comparison_checks(candidate, production, cmp_slices, slices, policy)
        checks += _fairness_checks(fairness, comparison, policy)
        checks += _nothing_judged_check(checks)
    checks += _drift_checks(drift, policy)
    failed = [c for c in checks if c.verdict == "fail"]
    reasons = [f"{c.name}: {c.reason}" for c in failed] or ["every applicable check passed"]
    return Decision(promote=not failed, checks=checks, reasons=reasons)


def _nothing_judged_check(checks: list[Check]) -> list[Check]:
    """Fail closed when production exists but no regression or protected check could be judged.

    Every such check skipped ("too small to judge", undefined metrics) means nothing shows the candidate is
    not worse than production: a small batch once auto-promoted a candidate with AUC 0.724 vs 0.770.
    """
    compared = [c for c in checks if c.name.startswith(("regression:", "protected:"))]
    if any(c.verdict != "skipped" for c in compared):
        return []
    return [
        Check(
            name="regression:nothing_judged",
            observed=0.0,
            threshold=1.0,
            verdict="fail",
            reason=f"all {len(compared)} comparisons with production were skipped (too small to judge or "
            "undefined): nothing shows the candidate is not worse, so it is not promoted automatically; "
            "a reviewer may approve it with an override",
        )
    ]


def _fairness_checks(fairness: Any, comparison: Any, policy: GatePolicy) -> list[Check]:
    tol = policy.max_fairness_gap_growth
    if tol is None:
        return []
    name = "fairness:recall_gap_growth"
    entry = _part(_part(comparison, "fairness"), "recall_gap")
    ci_low, ci_high = _part(entry, "ci_low"), _part(entry, "ci_high")
    if entry and ci_low is not None:
        observed = ci_low if policy.fairness_bound == "lower" else ci_high
        basis = f"{policy.fairness_bound} end of [{_fmt(ci_low)}, {_fmt(ci_high)}]"
    elif fairness and "candidate" in fairness and "production" in fairness:
        c = _num(_part(fairness["candidate"], "recall_gap"))
        p = _num(_part(fairness["production"], "recall_gap"))
        if c is None or p is None:
            return [
                Check(
                    name=name,
                    verdict="skipped",
                    threshold=tol,
                    reason=f"recall gap undefined ({_why(_part(fairness['candidate'], 'recall_gap'))})",
                )
            ]
        observed, basis = c - p, "point estimate (no interval given)"
    else:
        why = _why(entry) if entry else "no fairness block given"
        return [
            Check(name=name, verdict="skipped", threshold=tol, reason=f"recall gap growth undefined ({why})")
        ]
    ok = observed <= tol
    return [
        Check(
            name=name,
            observed=observed,
            threshold=tol,
            verdict="pass" if ok else "fail",
            reason=f"recall gap between popularity buckets grew by {_fmt(observed)} on the {basis}; "
            f"allowed {tol}",
        )
    ]


def _drift_checks(drift: dict | None, policy: GatePolicy) -> list[Check]:
    if policy.max_share_drifted_columns is None and not policy.blocking_drift_columns:
        return []
    if drift is None:
        return [Check(name="drift:share_drifted_columns", verdict="skipped", reason="no drift summary given")]
    out = []
    share = _num(drift.get("share_drifted_columns"))
    limit = policy.max_share_drifted_columns
    if limit is not None:
        if share is None:
            out.append(
                Check(
                    name="drift:share_drifted_columns",
                    verdict="skipped",
                    threshold=limit,
                    reason="share of drifted columns undefined",
                )
            )
        else:
            ok = share <= limit
            cols = ", ".join(map(str, drift.get("drifted_columns", []))) or "none"
            out.append(
                Check(
                    name="drift:share_drifted_columns",
                    observed=share,
                    threshold=limit,
                    verdict="pass" if ok else "fail",
                    reason=f"{_fmt(share)} of columns drifted (limit {limit}); drifted: {cols}",
                )
            )
    drifted = set(map(str, drift.get("drifted_columns", [])))
    for col in policy.blocking_drift_columns:
        hit = col in drifted
        out.append(
            Check(
                name=f"drift:{col}",
                observed=float(hit),
                threshold=0.0,
                verdict="fail" if hit else "pass",
                reason=f"column {col} {'drifted' if hit else 'did not drift'} (blocking column)",
            )
        )
    return out


def decide_evaluation(
    evaluation: Evaluation | dict, policy: GatePolicy, drift: dict | None = None
) -> Decision:
    """decide() fed from an Evaluation (or metrics.json's dict); ValueError without candidate metrics."""
    ev = Evaluation.coerce(evaluation)
    if not ev.has_model("candidate"):
        raise ValueError("evaluation: no 'candidate' metrics in metrics.json")
    return decide(
        ev.model_metrics("candidate"),
        ev.model_metrics("production") if ev.has_model("production") else None,
        policy,
        comparison=ev.comparison,
        drift=drift,
        slices=ev.slices,
        fairness=ev.fairness,
    )
