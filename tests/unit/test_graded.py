"""Graded-label training (soft targets, MSE, within-query RankNet) and the graded pair accuracy metric."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from tailguard import losses as L  # noqa: E402
from tailguard import metrics as MX  # noqa: E402
from tailguard import model as M  # noqa: E402

# Title grades: 'gold' is relevant (label 1); the others are near-positives of falling relevance, all label 0,
# as on Home Depot, where 57% of the label-0 rows have mean rating 2.33 or 2.67.
GRADES = {"gold": 3.0, "silver": 2.67, "bronze": 2.33, "copper": 1.67, "tin": 1.0}
NOUNS = ["drill", "lamp", "kettle", "towel", "hose", "chair"]


def graded_batch(n_queries: int, seed: int) -> pd.DataFrame:
    """Every query lists one title per grade word (plus noise words); label = grade word is 'gold'."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        noun = NOUNS[q % len(NOUNS)]
        for i, (word, rel) in enumerate(GRADES.items()):
            title = f"{noun} {word} {rng.integers(1000)}"
            rows.append((f"{noun} {q}", f"i{q}-{i}", title, rel, int(rel == 3.0)))
    return pd.DataFrame(rows, columns=["query", "item_id", "item_title", "relevance", "label"])


def near_positive_pair_accuracy(df: pd.DataFrame, scores: np.ndarray) -> float:
    """Brute force: among label-0 rows of each query, share of different-relevance pairs ordered right."""
    right, total = 0.0, 0
    for _, g in df.assign(s=scores)[df["label"] == 0].groupby("query"):
        for a, b in itertools.combinations(g.itertuples(), 2):
            if a.relevance == b.relevance:
                continue
            hi, lo = (a, b) if a.relevance > b.relevance else (b, a)
            right += 1.0 if hi.s > lo.s else 0.5 if hi.s == lo.s else 0.0
            total += 1
    return right / total


def quick(**overrides) -> M.TrainConfig:
    base = {
        "epochs": 6,
        "batch_size": 20,
        "threads": 1,
        "progress": False,
        "tensorboard": False,
        "lr": 3e-3,
        "valid_fraction": 0.0,
        "seed": 0,
    }
    return M.TrainConfig(**{**base, **overrides})


@pytest.mark.parametrize(
    "options", [{"target": "graded"}, {"target": "graded", "graded_loss": "mse"}, {"pairwise_weight": 1.0}]
)
def test_graded_training_orders_near_positives_better_than_binary(tmp_path, options):
    train, fresh = graded_batch(60, seed=0), graded_batch(20, seed=1)
    M.train(train, quick(), tmp_path / "binary")
    M.train(train, quick(**options), tmp_path / "graded")
    binary = near_positive_pair_accuracy(fresh, M.predict(tmp_path / "binary", fresh))
    graded = near_positive_pair_accuracy(fresh, M.predict(tmp_path / "graded", fresh))
    # binary targets are all 0 on the near-positives: their order is whatever the model happens to learn
    assert graded >= 0.9, (options, graded, binary)
    assert graded - binary >= 0.15, (options, graded, binary)


def test_ranknet_gradient_pushes_the_better_row_up():
    logits = torch.tensor([0.3, 0.5, -1.0, 2.0], requires_grad=True)
    relevance = torch.tensor([3.0, 2.0, 1.0, 1.0])
    group = torch.tensor([0, 0, 1, 1])  # pairs: (0 > 1) in query 0 only; query 1's rows tie in relevance
    loss = L.ranknet_pairwise(logits, relevance, group)
    loss.backward()
    # one pair, z_0 - z_1 = -0.2: loss softplus(0.2), d/dz_0 = -sigmoid(0.2), d/dz_1 = +sigmoid(0.2)
    assert loss.item() == pytest.approx(float(np.log1p(np.exp(0.2))), rel=1e-6)
    g = logits.grad.numpy()
    assert g[0] < 0 < g[1]
    assert g[0] == pytest.approx(-1 / (1 + np.exp(-0.2)), rel=1e-6)
    assert g[2] == g[3] == 0.0  # tied relevance: no pair


def test_ranknet_ignores_pairs_across_queries_and_is_zero_without_pairs():
    logits = torch.tensor([5.0, -5.0], requires_grad=True)
    loss = L.ranknet_pairwise(logits, torch.tensor([1.0, 3.0]), torch.tensor([0, 1]))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().sum().item() == 0.0


def test_graded_targets_rescale_by_min_and_max():
    t = L.graded_targets([1.0, 2.33, 3.0, 2.0], 1.0, 3.0)
    np.testing.assert_allclose(t.numpy(), [0.0, 0.665, 1.0, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="two different relevance values"):
        L.graded_targets([2.0, 2.0], 2.0, 2.0)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (None, "needs a `relevance` column"),
        ("n/a", "non-numeric"),
        (float("inf"), "non-numeric"),
        ("same", "two different relevance values"),
    ],
)
def test_graded_training_refuses_unusable_relevance(tmp_path, bad, message):
    df = graded_batch(4, seed=0)
    if bad is None:
        df = df.drop(columns="relevance")
    elif bad == "same":
        df["relevance"] = 2.0
    else:
        df["relevance"] = df["relevance"].astype(object)
        df.loc[3, "relevance"] = bad
    with pytest.raises(M.ModelError, match=message):
        M.train(df, quick(target="graded", max_steps=1), tmp_path / "m")


def test_graded_options_that_cannot_combine_are_refused():
    with pytest.raises(ValueError, match="needs loss bce or weighted_bce"):
        M.TrainConfig(target="graded", loss="focal")
    with pytest.raises(ValueError, match="choose one"):
        M.TrainConfig(pairwise_weight=0.5, length_bucketing=True)


def test_query_grouped_order_keeps_queries_contiguous_and_is_a_permutation():
    codes = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3, 3])
    order = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    out = M._group_by_query(order, codes, quick(), epoch=0)
    assert sorted(out.tolist()) == list(range(9))
    seen = [int(codes[i]) for i in out]
    runs = [k for k, _ in itertools.groupby(seen)]
    assert len(runs) == len(set(seen)) == 4  # each query one contiguous run
    assert torch.equal(out, M._group_by_query(order, codes, quick(), epoch=0))  # replayable


# --- graded pair accuracy -------------------------------------------------------------------------------


def brute_pair_accuracy(group, s, gain, n_groups) -> np.ndarray:
    out = np.full(n_groups, np.nan)
    for k in range(n_groups):
        right, total = 0.0, 0
        for i, j in itertools.combinations(np.flatnonzero(group == k), 2):
            if gain[i] == gain[j]:
                continue
            hi, lo = (i, j) if gain[i] > gain[j] else (j, i)
            right += 1.0 if s[hi] > s[lo] else 0.5 if s[hi] == s[lo] else 0.0
            total += 1
        if total:
            out[k] = right / total
    return out


def test_graded_pair_accuracy_hand_cases():
    # query 0: grades 3 > 2 > 1 scored 0.9, 0.5, 0.5 -> pairs (3,2) right, (3,1) right, (2,1) tie = 2.5 / 3
    # query 1: one grade only -> undefined; query 2: reversed order -> 0
    group = np.array([0, 0, 0, 1, 1, 2, 2])
    s = np.array([0.9, 0.5, 0.5, 0.1, 0.7, 0.2, 0.8])
    gain = np.array([3.0, 2.0, 1.0, 2.0, 2.0, 2.67, 2.33])
    got = MX.graded_pair_accuracy(group, s, gain, 3)
    np.testing.assert_allclose(got, [2.5 / 3, np.nan, 0.0])
    # every score tied: each pair counts half, whatever the grades
    assert MX.graded_pair_accuracy(np.zeros(4, int), np.ones(4), np.array([1.0, 2, 3, 3]), 1)[0] == 0.5


@pytest.mark.parametrize("seed", range(6))
def test_graded_pair_accuracy_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n, n_groups = int(rng.integers(1, 60)), int(rng.integers(1, 7))
    group = rng.integers(0, n_groups, n)
    s = rng.integers(0, 4, n).astype(float)  # few score values: many ties
    gain = rng.choice([1.0, 1.33, 2.33, 2.67, 3.0], n)
    np.testing.assert_allclose(
        MX.graded_pair_accuracy(group, s, gain, n_groups), brute_pair_accuracy(group, s, gain, n_groups)
    )


def test_graded_pair_accuracy_on_binary_gain_is_per_query_auc():
    rng = np.random.default_rng(3)
    group, s, y = rng.integers(0, 5, 200), rng.random(200).round(1), rng.integers(0, 2, 200).astype(float)
    np.testing.assert_allclose(MX.graded_pair_accuracy(group, s, y, 5), MX.grouped_auc(group, s, y, 5))


def _eval_frames(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(80):
        for i in range(int(rng.integers(2, 7))):
            rel = float(rng.choice([1.0, 1.67, 2.33, 2.67, 3.0]))
            rows.append((f"q{q}", f"item{q}-{i}", f"title {i}", rel, int(rel == 3.0)))
    df = pd.DataFrame(rows, columns=["query", "item_id", "item_title", "relevance", "label"])
    noise = rng.normal(0, 0.6, len(df))
    # candidate sees the grades, production only the binary label: the graded metric must tell them apart
    cand = 1 / (1 + np.exp(-(df["relevance"].to_numpy() - 2 + noise)))
    prod = 1 / (1 + np.exp(-(2 * df["label"].to_numpy() - 1 + noise)))
    return df, df.sample(frac=1.0, random_state=seed), {"candidate": cand, "production": prod}


def test_evaluate_reports_graded_pair_accuracy_per_slice_with_a_paired_interval():
    eval_df, train_df, scores = _eval_frames(0)
    ev = MX.evaluate(eval_df, train_df, scores, MX.EvalConfig(n_bootstrap=200, min_positives=1))
    q = pd.factorize(eval_df["query"])[0]
    gain = eval_df["relevance"].to_numpy()
    for model in ("candidate", "production"):
        per_query = brute_pair_accuracy(q, scores[model], gain, q.max() + 1)
        entry = ev.entry(model, "overall", "graded_pair_accuracy")
        assert entry.value == pytest.approx(np.nanmean(per_query))
        assert entry.queries == int(np.isfinite(per_query).sum())
    diff = ev.diff("overall", "graded_pair_accuracy")
    assert diff.ci_low < diff.value < diff.ci_high
    assert diff.ci_low > 0  # the candidate orders the near-positives; production cannot
    # every slice carries it, and the gate reads it by name (a floor on it is checked, not skipped)
    assert all("graded_pair_accuracy" in v for v in ev.model_metrics("candidate").values())
    assert MX.HIGHER_IS_BETTER["graded_pair_accuracy"] is True
    from tailguard import gate

    policy = gate.GatePolicy(floors={"graded_pair_accuracy": 0.99})
    decision = gate.decide_evaluation(ev, policy)
    check = next(c for c in decision.checks if c.name == "floor:overall:graded_pair_accuracy")
    assert check.verdict == "fail" and check.observed == pytest.approx(
        ev.value("candidate", "overall", "graded_pair_accuracy")
    )
