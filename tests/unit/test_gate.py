"""The promotion gate, case by case."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tailguard import gate
from tailguard.gate import GatePolicy, decide, decide_evaluation, load_policy
from tailguard.metrics import EvalConfig, evaluate

sys.path.insert(0, str(Path(__file__).parent))
from metrics_reference import flat_tail_frames  # noqa: E402


def _by_name(decision):
    return {c.name: c for c in decision.checks}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    items = [f"item{i}" for i in range(300)]
    popularity = np.r_[np.full(30, 0.02), np.full(270, 0.4 / 270)]
    train_items = rng.choice(items, p=popularity, size=4000)
    train = pd.DataFrame({"query": [f"q{i % 500} drill" for i in range(4000)], "item_id": train_items})
    n = 3000
    ev = pd.DataFrame(
        {
            "query": [f"q{i // 10} drill" for i in range(n)],
            "item_id": rng.choice(items, p=popularity, size=n),
            "label": (rng.random(n) < 0.4).astype(int),
        }
    )
    return train, ev, rng


def test_policy_yaml_mirrors_builtin_defaults():
    assert gate.DEFAULT_POLICY_PATH.exists()
    assert GatePolicy(**yaml.safe_load(gate.DEFAULT_POLICY_PATH.read_text())) == GatePolicy()
    assert load_policy() == GatePolicy()


def test_policy_overrides_and_bad_files(tmp_path):
    p = load_policy(overrides={"floors": {"ndcg_at_k": 0.3}, "regression_bound": "upper"})
    assert p.floors == {"roc_auc": 0.55, "roc_auc_per_query": 0.55, "ndcg_at_k": 0.3}
    assert p.regression_bound == "upper"
    bad = tmp_path / "gate.yaml"
    bad.write_text("regression_bound: sideways\n")
    with pytest.raises(ValueError, match=r"gate.yaml: invalid gate policy.*regression_bound"):
        load_policy(bad)
    bad.write_text("floor: {roc_auc: 0.6}\n")  # misspelt key must not be ignored silently
    with pytest.raises(ValueError, match="floor"):
        load_policy(bad)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_policy(tmp_path / "nope.yaml")


def test_no_production_yet_only_floors_apply(batch):
    train, ev, rng = batch
    cand = np.clip(0.3 * ev["label"] + 0.7 * rng.random(len(ev)), 0, 1).to_numpy()
    d = decide_evaluation(evaluate(ev, train, {"candidate": cand}, EvalConfig(n_bootstrap=0)), GatePolicy())
    checks = _by_name(d)
    assert d.promote
    assert checks["floor:overall:roc_auc"].verdict == "pass"
    assert (
        checks["regression:*"].verdict == "skipped"
        and "only absolute floors" in checks["regression:*"].reason
    )
    assert not any(n.startswith(("protected:", "fairness:")) for n in checks)
    # the same candidate under a floor it misses is refused, with the number in the reason
    d2 = decide_evaluation(
        evaluate(ev, train, {"candidate": cand}, EvalConfig(n_bootstrap=0)),
        GatePolicy(floors={"roc_auc": 0.99}),
    )
    assert not d2.promote and "misses >= 0.99" in _by_name(d2)["floor:overall:roc_auc"].reason


def test_identical_models_pass_every_comparison(batch):
    train, ev, rng = batch
    cand = np.clip(0.3 * ev["label"] + 0.7 * rng.random(len(ev)), 0, 1).to_numpy()
    res = evaluate(ev, train, {"candidate": cand, "production": cand.copy()}, EvalConfig(n_bootstrap=100))
    d = decide_evaluation(res, GatePolicy())
    assert d.promote, d.summary()
    regressions = [
        c for c in d.checks if c.name.startswith(("regression:", "protected:")) and c.verdict == "pass"
    ]
    assert regressions and all(c.observed == 0 for c in regressions), [c for c in regressions if c.observed]
    assert _by_name(d)["fairness:recall_gap_growth"].observed == 0


def test_tail_regression_hidden_by_overall_gain_is_caught(batch):
    train, ev, rng = batch
    res0 = evaluate(ev, train, {"candidate": np.full(len(ev), 0.5)}, EvalConfig(n_bootstrap=0))
    assert not res0.slice_info("popularity:tail").too_small
    from tailguard.metrics import assign_slices

    tail = (assign_slices(ev, train, EvalConfig())["popularity"].astype(str) == "tail").to_numpy()
    y = ev["label"].to_numpy()
    noise = rng.random(len(ev))
    prod = 0.2 * y + 0.8 * noise
    cand = np.where(tail, 0.05 * y + 0.95 * noise, 0.4 * y + 0.6 * noise)  # better on head, worse on the tail
    assert 0.1 < tail.mean() < 0.35
    res = evaluate(ev, train, {"candidate": cand, "production": prod}, EvalConfig(n_bootstrap=200))
    overall = res.diff("overall", "roc_auc")
    assert overall.ci_low > 0  # the average clearly improves ...
    d = decide_evaluation(res, GatePolicy())
    checks = _by_name(d)
    assert not d.promote  # ... and the gate still refuses
    assert checks["regression:overall:roc_auc"].verdict == "pass"
    assert checks["protected:popularity:tail:roc_auc"].verdict == "fail"
    assert checks["regression:popularity:tail:roc_auc"].verdict == "fail"
    assert any("popularity:tail" in r for r in d.reasons)
    assert "FAIL protected:popularity:tail:roc_auc" in d.summary()


def _m(**values):
    # Per-query AUC mirrors pooled AUC unless a test sets it (both have default floors).
    if "roc_auc" in values:
        values.setdefault("roc_auc_per_query", values["roc_auc"])
    return {
        k: ({"value": v} if v is not None else {"value": None, "undefined": "one class in slice"})
        for k, v in values.items()
    }


def test_undefined_floor_metric_fails_never_passes_silently():
    d = decide({"overall": _m(roc_auc=None)}, None, GatePolicy())
    c = _by_name(d)["floor:overall:roc_auc"]
    assert not d.promote and c.verdict == "fail" and "one class in slice" in c.reason


def test_undefined_slice_metric_and_too_small_slices_are_skipped_with_reason():
    cand = {
        "overall": _m(roc_auc=0.8, ndcg_at_k=0.5, recall_at_k=0.5),
        "popularity:tail": _m(roc_auc=None, ndcg_at_k=0.4, recall_at_k=0.5, mrr=0.4),
        "popularity:cold": _m(roc_auc=0.1, ndcg_at_k=0.1, recall_at_k=0.1, mrr=0.1),
    }
    prod = {
        "overall": _m(roc_auc=0.7, ndcg_at_k=0.5, recall_at_k=0.5),
        "popularity:tail": _m(roc_auc=0.7, ndcg_at_k=0.4, recall_at_k=0.5, mrr=0.4),
        "popularity:cold": _m(roc_auc=0.9, ndcg_at_k=0.9, recall_at_k=0.9, mrr=0.9),
    }
    slices = {
        "overall": {"too_small": False},
        "popularity:tail": {"too_small": False},
        "popularity:cold": {"too_small": True, "reason": "0 positives < min_positives 30", "rows": 0},
    }
    d = decide(cand, prod, GatePolicy(max_share_drifted_columns=None), slices=slices)
    checks = _by_name(d)
    assert checks["regression:popularity:tail:roc_auc"].verdict == "skipped"
    assert "undefined for candidate" in checks["regression:popularity:tail:roc_auc"].reason
    # the cold slice would fail badly, but it is too small to judge: skipped with that reason
    assert checks["regression:popularity:cold:*"].verdict == "skipped"
    assert "too small" in checks["regression:popularity:cold:*"].reason
    assert not any(n.startswith("protected:popularity:cold:") for n in checks)
    # no interval given: judged on the point estimate and says so
    assert "point estimate" in checks["regression:overall:roc_auc"].reason
    assert d.promote, d.summary()


def test_interval_bound_not_point_estimate_decides():
    cand = {"overall": _m(roc_auc=0.80)}
    prod = {"overall": _m(roc_auc=0.80)}
    wide = {"slices": {"overall": {"roc_auc": {"value": 0.0, "ci_low": -0.05, "ci_high": 0.05}}}}
    policy = GatePolicy(
        max_regression={"roc_auc": 0.02},
        protected_slices=[],
        max_share_drifted_columns=None,
        max_fairness_gap_growth=None,
        regression_bound="lower",
    )
    assert not decide(cand, prod, policy, comparison=wide).promote  # non-inferiority not shown
    upper = policy.model_copy(update={"regression_bound": "upper"})
    assert decide(cand, prod, upper, comparison=wide).promote  # no established regression
    established = {"slices": {"overall": {"roc_auc": {"value": -0.04, "ci_low": -0.05, "ci_high": -0.03}}}}
    assert not decide(cand, prod, upper, comparison=established).promote  # a loss beyond the margin
    # lower-is-better metrics flip sign: a log-loss rise is a loss
    rise = {"slices": {"overall": {"log_loss": {"value": 0.1, "ci_low": 0.08, "ci_high": 0.12}}}}
    ll = policy.model_copy(update={"max_regression": {"log_loss": 0.05}})
    c = _by_name(decide({"overall": _m(log_loss=0.6)}, {"overall": _m(log_loss=0.5)}, ll, comparison=rise))
    assert c["regression:overall:log_loss"].verdict == "fail"
    assert c["regression:overall:log_loss"].observed == pytest.approx(-0.12)


def test_tie_exactly_at_threshold_passes():
    d = decide({"overall": _m(roc_auc=0.55)}, None, GatePolicy(max_share_drifted_columns=None))
    assert d.promote
    cmp = {"slices": {"overall": {"roc_auc": {"value": -0.01, "ci_low": -0.02, "ci_high": 0.0}}}}
    d = decide(
        {"overall": _m(roc_auc=0.8)},
        {"overall": _m(roc_auc=0.81)},
        GatePolicy(
            max_share_drifted_columns=None,
            protected_slices=[],
            max_fairness_gap_growth=None,
            max_regression={"roc_auc": 0.02},
        ),
        comparison=cmp,
    )
    assert _by_name(d)["regression:overall:roc_auc"].verdict == "pass"


def test_drift_and_fairness_inputs():
    base = {"overall": _m(roc_auc=0.8)}
    drift = {"share_drifted_columns": 0.75, "drifted_columns": ["query", "price", "category"]}
    d = decide(base, None, GatePolicy(), drift=drift)
    c = _by_name(d)["drift:share_drifted_columns"]
    assert not d.promote and c.verdict == "fail" and "query, price, category" in c.reason
    d = decide(
        base, None, GatePolicy(max_share_drifted_columns=None, blocking_drift_columns=["price"]), drift=drift
    )
    assert _by_name(d)["drift:price"].verdict == "fail"
    assert _by_name(decide(base, None, GatePolicy()))["drift:share_drifted_columns"].verdict == "skipped"
    fair = {"fairness": {"recall_gap": {"value": 0.1, "ci_low": 0.07, "ci_high": 0.13}}, "slices": {}}
    d = decide(base, base, GatePolicy(max_share_drifted_columns=None), comparison=fair)
    assert _by_name(d)["fairness:recall_gap_growth"].verdict == "fail"
    assert d.to_dict()["promote"] is False and isinstance(d.to_dict()["checks"][0], dict)


def test_pooled_auc_from_query_priors_alone_does_not_pass_the_floor():
    # Measured on Home Depot: pooled 0.558 (query priors) with per-query 0.496 (no ranking within queries).
    d = decide({"overall": _m(roc_auc=0.558, roc_auc_per_query=0.496)}, None, GatePolicy())
    assert not d.promote
    assert [c.name for c in d.failed()] == ["floor:overall:roc_auc_per_query"]


def test_regression_on_items_seen_once_fails_the_protected_tail_on_flat_tailed_data():
    """85% of training items seen once (Home Depot's shape): the tail is those items, protected."""
    rng = np.random.default_rng(3)
    n = 4000
    train, ev = flat_tail_frames(rng, n)
    from tailguard.metrics import assign_slices

    seen_once = (assign_slices(ev, train, EvalConfig())["item_train_count"] == 1).to_numpy()
    y = ev["label"].to_numpy()
    prod = 0.4 * y + 0.6 * rng.random(n)
    cand = np.where(seen_once, rng.random(n), prod)  # random only on items seen once
    res = evaluate(ev, train, {"candidate": cand, "production": prod}, EvalConfig(n_bootstrap=200))
    assert res.cutoffs("popularity")["rule"] == "flat-tail"
    d = decide_evaluation(res, GatePolicy())
    checks = _by_name(d)
    assert not d.promote
    assert checks["protected:popularity:tail:roc_auc"].verdict == "fail"
    assert res.diff("popularity:head", "roc_auc").value == 0  # head untouched


# --- issue 13 item 3: nothing judged against production fails closed ---------------------------------


def _small_batch_case(cand_auc: float, prod_auc: float, why: str):
    """Every slice, overall included, flagged too small: only floors and drift could be judged."""
    names = ["overall", "popularity:head", "popularity:tail", "popularity:cold", "query_frequency:rare"]
    cand = {n: _m(roc_auc=cand_auc, ndcg_at_k=0.5, recall_at_k=0.5, mrr=0.4) for n in names}
    prod = {n: _m(roc_auc=prod_auc, ndcg_at_k=0.5, recall_at_k=0.5, mrr=0.4) for n in names}
    slices = {n: {"too_small": True, "reason": why} for n in names}
    return cand, prod, slices


@pytest.mark.parametrize(
    ("cand_auc", "prod_auc", "why"),
    [
        (0.724, 0.770, "12 positives < min_positives 30"),  # the example: worse overall
        (0.90, 0.60, "3 positives < min_positives 30"),  # better, but nothing shows it: still manual
        (0.56, 0.99, "0 positives < min_positives 30"),  # far worse, just over the floor
    ],
)
def test_nothing_judged_against_production_refuses_automatic_promotion(cand_auc, prod_auc, why):
    cand, prod, slices = _small_batch_case(cand_auc, prod_auc, why)
    d = decide(cand, prod, GatePolicy(max_share_drifted_columns=None), slices=slices)
    checks = _by_name(d)
    assert checks["floor:overall:roc_auc"].verdict == "pass"  # the floors alone would have promoted it
    assert checks["regression:nothing_judged"].verdict == "fail"
    assert not d.promote
    assert any("nothing shows the candidate is not worse" in r for r in d.reasons)
    assert "FAIL regression:nothing_judged" in d.summary()


def test_undefined_metrics_everywhere_also_count_as_nothing_judged():
    cand = {"overall": _m(roc_auc=0.8, ndcg_at_k=None, recall_at_k=None)}
    prod = {"overall": _m(roc_auc=None, ndcg_at_k=None, recall_at_k=None)}
    d = decide(cand, prod, GatePolicy(max_share_drifted_columns=None, protected_slices=[]))
    assert not d.promote and _by_name(d)["regression:nothing_judged"].verdict == "fail"


def test_no_production_is_not_nothing_judged_and_one_judged_slice_is_enough():
    cand, prod, slices = _small_batch_case(0.8, 0.7, "few positives")
    first = decide(cand, None, GatePolicy(max_share_drifted_columns=None), slices=slices)
    assert first.promote and "regression:nothing_judged" not in _by_name(first)  # demo run 1: floors only
    slices["overall"] = {"too_small": False}
    judged = decide(cand, prod, GatePolicy(max_share_drifted_columns=None), slices=slices)
    assert judged.promote and "regression:nothing_judged" not in _by_name(judged)


# --- issue 13 item 2: any policy other than the reviewed default is recorded as such ----------------


@pytest.mark.parametrize(
    ("overrides", "policy_text", "is_default"),
    [
        (None, None, True),
        ({"floors": {"roc_auc": 0.0, "roc_auc_per_query": 0.0}, "regression_dimensions": []}, None, False),
        ({"max_share_drifted_columns": None}, None, False),  # switching one check off is an override too
        ({"floors": {"roc_auc": 0.55}}, None, True),  # an "override" equal to the default changes nothing
        (None, "floors: {roc_auc: 0.0}\n", False),  # a policy file
        (None, gate.DEFAULT_POLICY_PATH.read_text(), True),  # a copy of the reviewed file
    ],
)
def test_resolved_policy_digest_and_default_flag(tmp_path, overrides, policy_text, is_default):
    path = None
    if policy_text is not None:
        path = tmp_path / "custom.yaml"
        path.write_text(policy_text)
    policy, record = gate.resolve_policy(path, overrides, origin="deployment-parameter")
    assert record.is_default is is_default
    assert record.sha256 == gate.policy_digest(policy) and len(record.sha256) == 64
    assert (record.sha256 == gate.policy_digest(GatePolicy())) is is_default
    assert record.values == policy.model_dump(mode="json")
    assert (record.source == "default") is (path is None and not overrides)
    if overrides:
        assert record.source.startswith("deployment-parameter: gate_overrides of")


def test_gate_switched_off_by_overrides_passes_but_is_not_promoted_unattended():
    # The example: floors at 0 and no regression dimensions let AUC 0.39 "pass".
    cand = {"overall": _m(roc_auc=0.39, ndcg_at_k=0.2, recall_at_k=0.2)}
    prod = {"overall": _m(roc_auc=0.77, ndcg_at_k=0.5, recall_at_k=0.5)}
    off = {
        "floors": {"roc_auc": 0.0, "roc_auc_per_query": 0.0},
        "regression_dimensions": [],
        "protected_slices": [],
        "max_fairness_gap_growth": None,
        "max_share_drifted_columns": None,
    }
    policy, record = gate.resolve_policy(None, off)
    # Against production, switching every comparison off leaves nothing judged: that fails on its own.
    against = decide(cand, prod, policy).with_policy(record)
    assert not against.promote and _by_name(against)["regression:nothing_judged"].verdict == "fail"
    # With no production yet only the zeroed floors apply: they "pass"; the record says why it is not clean.
    d = decide(cand, None, policy).with_policy(record)
    assert d.promote is True and d.promote_unattended is False
    assert d.policy_is_default is False and d.policy_sha256 == record.sha256
    assert d.to_dict()["policy"]["source"].startswith("gate_overrides of")
    assert "POLICY is not the reviewed default" in d.summary()
    default_policy, default_record = gate.resolve_policy()
    clean = decide(cand, prod, default_policy).with_policy(default_record)
    assert not clean.promote  # under the reviewed default the same candidate fails


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"gate_overrides": {"floors": 3}}, "with gate_overrides ['floors']: invalid gate policy: floors"),
        ({"gate_policy": "no/such/policy.yaml"}, "gate policy file not found"),
        ({"gate_overrides": {"floors": {"roc_auc": "high"}}}, "floors.roc_auc"),
    ],
)
def test_a_bad_gate_policy_or_override_is_refused_before_the_run_reads_anything(kwargs, needle):
    """Found out by the decision after training before: now RetrainParams refuses it, naming the fields."""
    from pydantic import ValidationError

    from tailguard.pipeline import RetrainParams, params_error

    with pytest.raises(ValidationError) as info:
        RetrainParams(data="x.csv", **kwargs)
    message = params_error(info.value)
    assert message.startswith("gate_policy / gate_overrides: ") and needle in message and "\n" not in message


def test_a_broken_policy_yaml_is_one_line(tmp_path):
    bad = tmp_path / "gate.yaml"
    bad.write_text("floors: [unclosed\n")
    with pytest.raises(ValueError, match="not a readable YAML gate policy"):
        load_policy(bad)
