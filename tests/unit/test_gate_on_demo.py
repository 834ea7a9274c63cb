"""On demo data, where the truth is known, the gate catches a tail regression hidden by a head gain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tailguard.data import split_by_query
from tailguard.demo import DemoConfig, generate_batches
from tailguard.gate import decide_evaluation, load_policy
from tailguard.metrics import EvalConfig, assign_slices, evaluate


@pytest.fixture(scope="module")
def demo_split(tmp_path_factory):
    path = generate_batches(DemoConfig(rows=30_000, batches=1, seed=11), tmp_path_factory.mktemp("d"))[0]
    return split_by_query(pd.read_csv(path), 0.3, seed=0)


def _scores(truth: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A model of known quality: the true relevance plus noise, squashed to probabilities."""
    return 1 / (1 + np.exp(-(2.0 * (truth - 2.0) + rng.normal(0, noise, truth.size))))


def test_gate_rejects_tail_regression_and_accepts_uniform_improvement(demo_split):
    train, held = demo_split
    config = EvalConfig(n_bootstrap=300, seed=0)
    slices = assign_slices(held, train, config)
    tail = slices["popularity"].astype(str).isin(["tail", "cold"]).to_numpy()
    rng = np.random.default_rng(0)
    truth = held["relevance"].to_numpy(dtype=float)
    production = _scores(truth, 1.0, rng)
    # Better on head and torso, random on tail and cold items.
    regresses_tail = np.where(tail, rng.random(truth.size), _scores(truth, 0.5, rng))
    better_everywhere = _scores(truth, 0.5, rng)
    policy = load_policy()

    bad = evaluate(
        held, train, {"candidate": regresses_tail, "production": production}, config, slices=slices
    )
    assert bad.slice_info("popularity:tail").positives >= config.min_positives  # the tail is judged
    head_gain = bad.diff("popularity:head", "roc_auc").value
    assert head_gain > 0  # the regression hides behind a head gain
    bad_decision = decide_evaluation(bad, policy)
    assert not bad_decision.promote
    failed = {c.name for c in bad_decision.failed()}
    assert any("popularity:tail" in name or "popularity:cold" in name for name in failed), failed

    good = evaluate(
        held, train, {"candidate": better_everywhere, "production": production}, config, slices=slices
    )
    good_decision = decide_evaluation(good, policy)
    assert good_decision.promote, good_decision.summary()
