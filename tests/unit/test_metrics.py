"""tailguard.metrics against independent implementations (scikit-learn, ranx, hand-computed RecBole)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score

from tailguard import metrics as M
from tailguard.metrics import EvalConfig, Evaluation, assign_slices
from tailguard.metrics import evaluate as evaluate_typed
from tailguard.metrics import kernels as MK
from tailguard.metrics import slices as MS

sys.path.insert(0, str(Path(__file__).parent))
from metrics_reference import flat_tail_frames  # noqa: E402


def evaluate(*args, **kwargs) -> dict:
    """metrics.json's content as a dict: these tests check its numbers key by key."""
    return evaluate_typed(*args, **kwargs).to_dict()


def _frame(n_queries: int, per_query: int, seed: int, n_items: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, per_query * 2, size=n_queries)
    q = np.repeat([f"query {i} word{rng.integers(0, 40)}" for i in range(n_queries)], sizes)
    items = (rng.zipf(1.3, size=len(q)) % n_items).astype(str)
    return pd.DataFrame(
        {
            "query": q,
            "item_id": items,
            "label": (rng.random(len(q)) < 0.35).astype(int),
            "relevance": rng.integers(0, 4, size=len(q)).astype(float),
            "category": rng.choice(["tools", "paint", "garden"], size=len(q)),
        }
    )


@pytest.fixture(scope="module")
def data():
    train, ev = _frame(300, 6, 1), _frame(120, 6, 2)
    rng = np.random.default_rng(3)
    cand = np.clip(0.35 * ev["label"] + 0.65 * rng.random(len(ev)), 0, 1).to_numpy()
    prod = np.clip(0.2 * ev["label"] + 0.8 * rng.random(len(ev)), 0, 1).to_numpy()
    return train, ev, cand, prod


def test_share_buckets_never_split_ties():
    # 4 items with count 5 (20 rows of 30) straddle the 50% cut: all of them are head together.
    counts = pd.Series({"a": 5, "b": 5, "c": 5, "d": 5, "e": 3, "f": 3, "g": 1, "h": 1, "i": 1, "j": 1})
    b = M.share_buckets(counts, 0.5, 0.3)
    assert b[5] == "head" and b[3] == "torso" and b[1] == "tail"  # before(3)=20 < 24, before(1)=26
    counts2 = pd.Series({"a": 10, "b": 4, "c": 4, "d": 1, "e": 1})
    b2 = M.share_buckets(
        counts2, 0.5, 0.3
    )  # 20 rows: before(10)=0 head, before(4)=10 torso, before(1)=18 tail
    assert (b2[10], b2[4], b2[1]) == ("head", "torso", "tail")


@pytest.mark.parametrize(
    "groups,expected,flat",
    [
        # Home Depot shape: 70 items seen once (69% of 102 rows) start at 31% -> the share rule has no tail.
        # Flat-tail rule: tail = count 1; the other 32 rows split at 0.625 x 32 = 20: before(2) = 22 -> torso.
        ({10: 1, 4: 3, 2: 5, 1: 70}, {10: "head", 4: "head", 2: "torso", 1: "tail"}, "flat-tail"),
        # two counts: 40% seen twice, 60% seen once
        ({2: 20, 1: 60}, {2: "head", 1: "tail"}, "flat-tail"),
        # Zipf-like: the share rule already has a tail and is kept
        (
            {50: 1, 20: 2, 5: 4, 2: 5, 1: 8},
            {50: "head", 20: "head", 5: "torso", 2: "tail", 1: "tail"},
            "shares",
        ),
        # one distinct count <= tail_max_count (1): every item is tail; above it popularity is undefined
        ({1: 40}, {1: "tail"}, "tail-max-count"),
        ({3: 40}, {3: "head"}, "undefined"),
    ],
)
def test_count_buckets_give_a_tail_on_flat_and_zipf_data(groups, expected, flat):
    counts = pd.Series(np.repeat(list(groups), list(groups.values())))
    labels, rule = MS._count_buckets(counts, 0.5, 0.3)
    assert labels.to_dict() == expected and rule == flat
    assert M.share_buckets(counts, 0.5, 0.3).to_dict() == expected


def test_flat_tail_batch_gets_a_judged_tail_and_cutoffs_in_metrics_json():
    """Generated flat-tail batch (85% of training items seen once): tail = items seen once, judged."""
    rng = np.random.default_rng(5)
    n = 2000
    train, ev = flat_tail_frames(rng, n, new_items=500)
    res = evaluate(ev, train, {"candidate": rng.random(n)}, EvalConfig(n_bootstrap=0))
    cut = res["slice_definitions"]["cutoffs"]["popularity"]
    assert cut["rule"] == "flat-tail"
    seen_once = int((train["item_id"].value_counts() == 1).sum())  # 3,400 + repeated items drawn once
    assert seen_once / train["item_id"].nunique() > 0.85
    assert cut["tail"] == {
        "min_train_count": 1,
        "max_train_count": 1,
        "keys": seen_once,
        "train_rows": seen_once,
        "train_share": round(seen_once / len(train), 4),
    }
    assert cut["head"]["min_train_count"] >= 2
    tail = res["slices"]["popularity:tail"]
    assert not tail["too_small"] and tail["positives"] >= 30
    slices = assign_slices(ev, train, EvalConfig())
    is_tail = (slices["popularity"].astype(str) == "tail").to_numpy()
    assert (slices["item_train_count"].to_numpy()[is_tail] == 1).all()
    assert tail["rows"] == is_tail.sum() > 0
    # the reviewer's summary page shows the cut-offs and the rule that made them
    from tailguard.summary import review_markdown

    page = review_markdown(res, {"promote": True, "checks": []}, "v1", "store")
    assert f"| popularity | tail | 1-1 | {seen_once} | {seen_once / len(train):.4f} | flat-tail |" in page


def test_assign_slices_buckets_cold_unseen_and_query_frequency():
    train = pd.DataFrame(
        {"query": ["red drill"] * 6 + ["blue paint"] * 3 + ["saw"], "item_id": list("aaaaaabbbc")}
    )
    ev = pd.DataFrame(
        {
            "query": ["red paint", "red paint", "红色 drill", "saw"],
            "item_id": ["a", "b", "c", "z"],
            "category": ["x", "y", "x", "x"],
        }
    )
    s = assign_slices(ev, train, EvalConfig())
    assert list(s["popularity"].astype(str)) == ["head", "torso", "tail", "cold"]
    assert list(s["item_train_count"]) == [6, 3, 1, 0]
    assert list(s["query_terms"].astype(str)) == ["seen-terms", "seen-terms", "unseen-term", "seen-terms"]
    # training cut-offs: head >= 6 rows, torso >= 3, tail below; eval queries have 2, 1, 1 rows
    assert list(s["query_frequency"].astype(str)) == ["tail", "tail", "tail", "tail"]
    assert list(s["category"]) == ["x", "y", "x", "x"]
    assert M.query_terms("红色 Drill-bit") == ["红", "色", "drill", "bit"]


def test_missing_columns_and_bad_scores_are_clear(data):
    train, ev, cand, _ = data
    with pytest.raises(ValueError, match="missing column"):
        evaluate(ev.drop(columns=["label"]), train, {"candidate": cand})
    with pytest.raises(ValueError, match="3 values for"):
        evaluate(ev, train, {"candidate": cand[:3]})
    bad = cand.copy()
    bad[[4, 9]] = np.nan
    with pytest.raises(ValueError, match=r"2 non-finite values, e.g. at rows \[4, 9\]"):
        evaluate(ev, train, {"candidate": bad})


def test_classification_metrics_match_sklearn(data):
    train, ev, cand, prod = data
    res = evaluate(ev, train, {"candidate": cand}, EvalConfig(n_bootstrap=0, min_positives=5))
    slices = assign_slices(ev, train, EvalConfig())
    y = ev["label"].to_numpy()
    for name, mask in [
        ("overall", np.ones(len(ev), bool)),
        ("popularity:tail", slices["popularity"] == "tail"),
        ("category:paint", slices["category"] == "paint"),
    ]:
        got = res["metrics"]["candidate"][name]
        yy, ss = y[np.asarray(mask)], cand[np.asarray(mask)]
        assert got["roc_auc"]["value"] == pytest.approx(roc_auc_score(yy, ss), abs=1e-9)
        assert got["pr_auc"]["value"] == pytest.approx(average_precision_score(yy, ss), abs=1e-9)
        assert got["log_loss"]["value"] == pytest.approx(log_loss(yy, ss), abs=1e-9)
        assert got["f1"]["value"] == pytest.approx(f1_score(yy, ss >= 0.5), abs=1e-9)
    # tied scores: scikit-learn counts ties half in AUC and as one threshold in AP
    tied = np.round(cand, 1)
    res = evaluate(ev, train, {"candidate": tied}, EvalConfig(n_bootstrap=0))
    assert res["metrics"]["candidate"]["overall"]["roc_auc"]["value"] == pytest.approx(
        roc_auc_score(y, tied), abs=1e-9
    )
    assert res["metrics"]["candidate"]["overall"]["pr_auc"]["value"] == pytest.approx(
        average_precision_score(y, tied), abs=1e-9
    )


def test_per_query_auc_and_ece_by_hand(data):
    train, ev, cand, _ = data
    res = evaluate(ev, train, {"candidate": cand}, EvalConfig(n_bootstrap=0))
    aucs = [
        roc_auc_score(g["label"], cand[g.index]) for _, g in ev.groupby("query") if g["label"].nunique() == 2
    ]
    assert res["metrics"]["candidate"]["overall"]["roc_auc_per_query"]["value"] == pytest.approx(
        np.mean(aucs), abs=1e-9
    )
    y = ev["label"].to_numpy()
    b = np.minimum((cand * 10).astype(int), 9)
    ece = sum(abs(cand[b == i].sum() - y[b == i].sum()) for i in range(10)) / len(y)
    assert res["metrics"]["candidate"]["overall"]["ece"]["value"] == pytest.approx(ece, abs=1e-12)


def test_ranking_metrics_match_ranx(data):
    ranx = pytest.importorskip("ranx")
    train, ev, cand, _ = data
    ev = ev[ev.groupby("query")["label"].transform("max") > 0].reset_index(drop=True)
    ev = ev[ev.groupby("query")["relevance"].transform("max") > 0].reset_index(drop=True)
    cand = np.random.default_rng(7).random(len(ev))
    run = ranx.Run.from_df(
        ev.assign(doc=ev.index.astype(str), s=cand), q_id_col="query", doc_id_col="doc", score_col="s"
    )
    pos = ev[ev["label"] > 0]
    qrels_bin = ranx.Qrels.from_dict({q: {str(i): 1 for i in g.index} for q, g in pos.groupby("query")})
    graded = ev[ev["relevance"] > 0]
    qrels_graded = ranx.Qrels.from_dict(
        {q: {str(i): int(r) for i, r in g["relevance"].items()} for q, g in graded.groupby("query")}
    )
    res = evaluate(ev, train, {"candidate": cand}, EvalConfig(n_bootstrap=0))["metrics"]["candidate"][
        "overall"
    ]
    assert res["mrr"]["value"] == pytest.approx(ranx.evaluate(qrels_bin, run, "mrr"), abs=1e-9)
    assert res["recall_at_k"]["value"] == pytest.approx(ranx.evaluate(qrels_bin, run, "recall@10"), abs=1e-9)
    assert res["ndcg_at_k"]["value"] == pytest.approx(ranx.evaluate(qrels_graded, run, "ndcg@10"), abs=1e-9)
    res3 = evaluate(
        ev.drop(columns=["relevance"]), train, {"candidate": cand}, EvalConfig(n_bootstrap=0, k=3)
    )
    ndcg3 = res3["metrics"]["candidate"]["overall"]["ndcg_at_k"]["value"]
    assert ndcg3 == pytest.approx(ranx.evaluate(qrels_bin, run, "ndcg@3"), abs=1e-9)


def test_popularity_bias_follows_recbole_definitions_by_hand():
    train = pd.DataFrame(
        {"query": ["t"] * 10, "item_id": list("aaaaabbbcd")}
    )  # a:5 head, b:3 torso, c,d:1 tail
    ev = pd.DataFrame(
        {
            "query": ["q1"] * 3 + ["q2"] * 3,
            "item_id": ["a", "c", "e", "a", "b", "d"],
            "label": [1, 0, 0, 0, 1, 1],
        }
    )
    cand = np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.6])  # top-2: q1 -> a, c ; q2 -> b, d
    res = evaluate(ev, train, {"candidate": cand}, EvalConfig(k=2, n_bootstrap=0, min_positives=0))
    bias = res["popularity_bias"]["candidate"]
    assert bias["arp"]["value"] == pytest.approx(np.mean([(5 + 1) / 2, (3 + 1) / 2]), abs=1e-12)
    assert bias["aplt"]["value"] == pytest.approx(np.mean([1 / 2, 1 / 2]), abs=1e-12)  # c, d are tail
    # pool {a,b,c,d,e}; listed counts sorted ascending [0,1,1,1,1]; RecBole: sum((2i-n-1) c_i) / (n * total)
    cnt, n = np.array([0, 1, 1, 1, 1]), 5
    assert bias["gini"]["value"] == pytest.approx(
        np.sum((2 * np.arange(1, 6) - n - 1) * cnt) / (n * 4), abs=1e-12
    )
    assert bias["item_coverage"]["value"] == pytest.approx(4 / 5)
    exp = res["fairness"]["candidate"]["exposure"]
    w1, w2 = 1.0, 1 / np.log2(3)
    total = 2 * (w1 + w2)
    assert exp["share"]["head"] == pytest.approx(w1 / total)
    assert exp["share"]["tail"] == pytest.approx((w2 + w2) / total)
    assert exp["share"]["cold"] == 0.0
    assert exp["tail_head_ratio"]["value"] == pytest.approx(2 * w2 / w1)


def test_undefined_values_are_explicit_and_json_clean():
    train = pd.DataFrame({"query": ["a b"] * 4, "item_id": list("xxyz")})
    ev = pd.DataFrame({"query": ["a", "a", "b"], "item_id": ["x", "x", "y"], "label": [0, 0, 0]})
    res = evaluate(
        ev,
        train,
        {"candidate": np.array([0.2, 0.4, 0.9]), "production": np.array([0.3, 0.3, 0.3])},
        EvalConfig(n_bootstrap=20),
    )
    overall = res["metrics"]["candidate"]["overall"]
    assert overall["roc_auc"] == {"value": None, "undefined": "one class in slice"}
    assert overall["mrr"]["value"] is None and "positive" in overall["mrr"]["undefined"]
    cold = res["slices"]["popularity:cold"]
    assert cold["rows"] == 0 and cold["too_small"] and cold["reason"] == "empty slice"
    assert res["metrics"]["candidate"]["popularity:cold"]["roc_auc"]["undefined"] == "empty slice"
    assert res["comparison"]["slices"]["overall"]["roc_auc"]["value"] is None
    assert res["fairness"]["candidate"]["recall_gap"]["value"] is None
    text = json.dumps(res, allow_nan=False)  # raises on any NaN/inf
    assert "NaN" not in text


def test_raw_scores_make_probability_metrics_undefined(data):
    train, ev, cand, _ = data
    res = evaluate(ev, train, {"candidate": cand * 10 - 5}, EvalConfig(n_bootstrap=0))
    overall = res["metrics"]["candidate"]["overall"]
    assert overall["log_loss"]["undefined"] == "scores are not probabilities in [0, 1]"
    assert overall["roc_auc"]["value"] == pytest.approx(roc_auc_score(ev["label"], cand), abs=1e-9)


def _reference_bootstrap(ev, cand, prod, n_boot, seed, metric):
    """Resample queries as evaluate() draws them (query codes in sorted order), recompute with sklearn."""
    q, names = pd.factorize(ev["query"].astype(str), sort=True)
    rows_of = pd.Series(np.arange(len(q))).groupby(q).indices
    draws = np.random.default_rng(seed).integers(0, len(names), size=(n_boot, len(names)))
    y = ev["label"].to_numpy()
    diffs = []
    for pick in draws:
        idx = np.concatenate([rows_of[j] for j in pick])
        diffs.append(metric(y[idx], cand[idx]) - metric(y[idx], prod[idx]))
    return np.quantile(diffs, [0.025, 0.975])


def test_paired_bootstrap_matches_explicit_resampling(data):
    train, ev, cand, prod = data
    cfg = EvalConfig(n_bootstrap=60, bootstrap_chunk=60, seed=5, bootstrap_dtype="float64")
    res = evaluate(ev, train, {"candidate": cand, "production": prod}, cfg)
    cmp = res["comparison"]["slices"]["overall"]
    lo, hi = _reference_bootstrap(ev, cand, prod, 60, 5, log_loss)
    assert (cmp["log_loss"]["ci_low"], cmp["log_loss"]["ci_high"]) == pytest.approx((lo, hi), abs=1e-9)
    lo, hi = _reference_bootstrap(ev, cand, prod, 60, 5, lambda a, b: f1_score(a, b >= 0.5))
    assert (cmp["f1"]["ci_low"], cmp["f1"]["ci_high"]) == pytest.approx((lo, hi), abs=1e-9)
    # float32 products (the default) move the interval by rounding only
    res32 = evaluate(
        ev,
        train,
        {"candidate": cand, "production": prod},
        cfg.model_copy(update={"bootstrap_dtype": "float32"}),
    )
    f1_32 = res32["comparison"]["slices"]["overall"]["f1"]
    assert (f1_32["ci_low"], f1_32["ci_high"]) == pytest.approx((lo, hi), abs=1e-5)
    # pooled ROC and PR AUC are weighted exactly per resample: the same as scikit-learn on the rows
    lo, hi = _reference_bootstrap(ev, cand, prod, 60, 5, roc_auc_score)
    assert (cmp["roc_auc"]["ci_low"], cmp["roc_auc"]["ci_high"]) == pytest.approx((lo, hi), abs=1e-9)
    assert cmp["roc_auc"]["ci_low"] <= cmp["roc_auc"]["value"] <= cmp["roc_auc"]["ci_high"]
    lo, hi = _reference_bootstrap(ev, cand, prod, 60, 5, average_precision_score)
    assert (cmp["pr_auc"]["ci_low"], cmp["pr_auc"]["ci_high"]) == pytest.approx((lo, hi), abs=1e-9)


@pytest.mark.parametrize("dtype,threads", [("float32", 1), ("float32", 2), ("float64", 1)])
def test_identical_models_have_zero_width_intervals(data, dtype, threads):
    """Exactly zero, on any BLAS kernel and thread count: paired differences are resampled, not two sums."""
    train, ev, cand, _ = data
    tied = np.round(cand, 1)  # ties in every query too
    for scores in (cand, tied):
        for frame, s in ((ev, scores), (ev.iloc[::-1].reset_index(drop=True), scores[::-1].copy())):
            cfg = EvalConfig(n_bootstrap=50, bootstrap_dtype=dtype, threads=threads, min_positives=5)
            res = evaluate(frame, train, {"candidate": s, "production": s.copy()}, cfg)
            checked = 0
            for name, entry in res["comparison"]["slices"].items():
                for metric, d in entry.items():
                    if d["value"] is not None:
                        assert d["value"] == 0, (name, metric, d)
                    if d.get("ci_low") is not None:
                        assert d["ci_low"] == 0 and d["ci_high"] == 0, (name, metric, d)
                        checked += 1
            assert checked >= 100
            assert res["comparison"]["fairness"]["recall_gap"]["value"] == 0
            assert res["comparison"]["fairness"]["recall_gap"]["ci_low"] == 0
            assert res["comparison"]["fairness"]["recall_gap"]["ci_high"] == 0
            assert res["popularity_bias"]["candidate"] == res["popularity_bias"]["production"]
            assert res["fairness"]["candidate"] == res["fairness"]["production"]
            assert res["metrics"]["candidate"] == res["metrics"]["production"]


def test_bootstrap_is_seeded(data):
    train, ev, cand, prod = data
    a = evaluate(ev, train, {"candidate": cand, "production": prod}, EvalConfig(n_bootstrap=30, seed=1))
    b = evaluate(ev, train, {"candidate": cand, "production": prod}, EvalConfig(n_bootstrap=30, seed=1))
    assert a["comparison"] == b["comparison"]


def test_thread_count_never_changes_a_number(data):
    train, ev, cand, prod = data
    scores = {"candidate": cand, "production": prod}
    runs = [
        evaluate(ev, train, scores, EvalConfig(n_bootstrap=100, seed=2, threads=t, bootstrap_chunk=48))
        for t in (1, 2, 3)
    ]
    texts = [json.dumps({k: v for k, v in r.items() if k != "config"}, sort_keys=True) for r in runs]
    assert texts[0] == texts[1] == texts[2]


def test_metrics_command_writes_documented_json(tmp_path, data):
    from typer.testing import CliRunner

    from tailguard.cli import app

    train, ev, cand, prod = data
    preds = ev.assign(score=cand, score_production=prod)
    preds.to_parquet(tmp_path / "preds.parquet")
    train.to_csv(tmp_path / "train.csv", index=False)
    out = tmp_path / "metrics.json"
    args = [
        "metrics",
        "--predictions",
        str(tmp_path / "preds.parquet"),
        "--train",
        str(tmp_path / "train.csv"),
    ]
    result = CliRunner().invoke(app, [*args, "--k", "5", "--bootstrap", "50", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["config"]["k"] == 5 and saved["models"] == ["candidate", "production"]
    assert saved["metrics"]["candidate"]["overall"]["roc_auc"]["value"] == pytest.approx(
        roc_auc_score(ev["label"], cand), abs=1e-9
    )
    assert "ci_low" in saved["comparison"]["slices"]["overall"]["roc_auc"]
    bad = preds.assign(label=preds["label"].astype(object))
    bad.loc[3, "label"] = "yes"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    result = CliRunner().invoke(
        app,
        [
            "metrics",
            "--predictions",
            str(tmp_path / "bad.csv"),
            "--train",
            str(tmp_path / "train.csv"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2
    assert "bad.csv: column 'label'" in result.output and "0 or 1" in result.output
    assert "'yes'" in result.output


# ----------------------------------------------------------------------------------------------
# paired bootstrap on Zipf-skewed query sizes: a few huge queries hold most rows, many small ones the rest


def _zipf_queries(seed: int, n_small: int = 60) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Three huge queries (~65% of rows) and many small ones; rounded scores so ties occur."""
    rng = np.random.default_rng(seed)
    sizes = np.r_[[260, 120, 70], rng.integers(2, 9, size=n_small)]
    q = np.repeat([f"query {i} word{i % 7}" for i in range(len(sizes))], sizes)
    n = len(q)
    # The huge queries have more positives than the small ones, as head queries do.
    share = np.repeat(np.r_[[0.55, 0.45, 0.4], np.full(n_small, 0.25)], sizes)
    y = (rng.random(n) < share).astype(int)
    rel = y * rng.integers(1, 4, size=n)
    ev = pd.DataFrame(
        {
            "query": q,
            "item_id": (rng.zipf(1.3, size=n) % 200).astype(str),
            "label": y,
            "relevance": rel.astype(float),
            "category": rng.choice(["tools", "paint"], size=n),
        }
    )
    cand = np.round(np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.25, n), 0, 1), 2)
    prod = np.round(1 / (1 + np.exp(-(2.5 * y - 1.2 + rng.normal(0, 1, n)))), 2)
    return ev, cand, prod


def _expanded(q: np.ndarray, mult: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row indices of the resampled data set restricted to a slice: each row repeated by its query's count."""
    rows = np.flatnonzero(mask)
    return np.repeat(rows, mult[q[rows]])


def _pooled_reference(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Pooled metrics of expanded rows, straight from scikit-learn and the METRICS.md definitions."""
    out = {"roc_auc": np.nan, "pr_auc": np.nan}
    if 0 < y.sum() < len(y):
        out["roc_auc"] = roc_auc_score(y, s)
    if y.sum() > 0:
        out["pr_auc"] = average_precision_score(y, s)
    pred = s >= 0.5
    tp, fp = float((pred & (y > 0)).sum()), float((pred & (y == 0)).sum())
    p = float(y.sum())
    bins = np.minimum((s * 10).astype(int), 9)
    out |= {
        "log_loss": log_loss(y, s, labels=[0, 1]) if len(y) else np.nan,
        "ece": np.abs(np.bincount(bins, weights=s - y, minlength=10)).sum() / len(y) if len(y) else np.nan,
        "f1": 2 * tp / (tp + fp + p) if tp + fp + p else np.nan,
        "recall": tp / p if p else np.nan,
        "precision": tp / (tp + fp) if tp + fp else np.nan,
    }
    return out


def _tie_aware_reference(y, gain, s, k) -> dict[str, float]:
    """One query's nDCG@k, MRR, recall@k as expected values over the orders of tied scores.

    nDCG from scikit-learn's ndcg_score (it averages the discount over tied positions); MRR and recall@k
    from their definitions with Python integers: a row with `a` rows scored higher and `t` tied rows
    (itself included) is at each rank a+1..a+t with probability 1/t.
    """
    from math import comb

    from sklearn.metrics import ndcg_score

    y, gain, s = np.asarray(y), np.asarray(gain, dtype=float), np.asarray(s, dtype=float)
    has_pos = y.sum() > 0
    if gain.sum() <= 0:
        ndcg = np.nan
    elif len(s) == 1:
        ndcg = 1.0
    else:
        ndcg = ndcg_score([gain], [s], k=k)
    above = np.array([(s > v).sum() for v in s])
    ties = np.array([(s == v).sum() for v in s])
    hits = sum(min(max(k - a, 0), t) / t for a, t, yy in zip(above, ties, y, strict=True) if yy > 0)
    mrr = np.nan
    if has_pos:
        a = above[y > 0].min()  # the best run holding a positive
        t = int((s == s[y > 0][above[y > 0] == a][0]).sum())
        m = int(((above == a) & (y > 0)).sum())
        mrr = sum(comb(t - j, m - 1) / comb(t, m) / (a + j) for j in range(1, t - m + 2))
    return {
        "ndcg_at_k": ndcg,
        "mrr": mrr,
        "recall_at_k": hits / y.sum() if has_pos else np.nan,
    }


def _per_query_reference(y, gain, s, k) -> dict[str, float]:
    """One query's AUC (scikit-learn) and tie-aware nDCG@k, MRR, recall@k."""
    return {
        "roc_auc_per_query": roc_auc_score(y, s) if 0 < y.sum() < len(y) else np.nan,
        **_tie_aware_reference(y, gain, s, k),
    }


def _interval_of(diffs: list[float]) -> tuple[float, float] | None:
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) < max(10, 0.5 * len(diffs)):
        return None
    lo, hi = np.quantile(d, [0.025, 0.975])
    return float(lo), float(hi)


@pytest.fixture(scope="module")
def zipf_case():
    ev, cand, prod = _zipf_queries(11)
    train = _frame(300, 6, 1)
    cfg = EvalConfig(n_bootstrap=40, seed=4, min_positives=5, bootstrap_dtype="float64")
    res = evaluate(ev, train, {"candidate": cand, "production": prod}, cfg)
    q, names = pd.factorize(ev["query"].astype(str), sort=True)
    draws = np.random.default_rng(cfg.seed).integers(0, len(names), size=(cfg.n_bootstrap, len(names)))
    mults = np.stack([np.bincount(d, minlength=len(names)) for d in draws])
    return ev, train, cand, prod, cfg, res, q, mults


def test_zipf_pooled_intervals_match_explicit_resampling(zipf_case):
    """Every pooled metric's interval on every slice equals explicit resampling + scikit-learn."""
    ev, train, cand, prod, cfg, res, q, mults = zipf_case
    assert ev["query"].value_counts().iloc[0] / len(ev) > 0.3  # one query holds >30% of the rows
    slices = assign_slices(ev, train, cfg)
    y = ev["label"].to_numpy()
    checked = 0
    for name, entry in res["comparison"]["slices"].items():
        dim, _, value = name.partition(":")
        mask = np.ones(len(ev), bool) if name == "overall" else (slices[dim].astype(str) == value).to_numpy()
        if not mask.any():
            continue
        diffs: dict[str, list[float]] = {}
        for mult in mults:
            idx = _expanded(q, mult, mask)
            c, p = _pooled_reference(y[idx], cand[idx]), _pooled_reference(y[idx], prod[idx])
            for metric in c:
                diffs.setdefault(metric, []).append(c[metric] - p[metric])
        for metric, d in diffs.items():
            ref, got = _interval_of(d), entry[metric]
            if ref is None:
                assert got.get("ci_low") is None, (name, metric)
                continue
            assert (got["ci_low"], got["ci_high"]) == pytest.approx(ref, abs=1e-9), (name, metric)
            checked += 1
    assert checked >= 40


def test_zipf_per_query_intervals_match_explicit_resampling(zipf_case):
    """Per-query means (AUC, nDCG, MRR, recall@k) on query-level slices equal explicit resampling."""
    ev, train, cand, prod, cfg, res, q, mults = zipf_case
    slices = assign_slices(ev, train, cfg)
    y, gain = ev["label"].to_numpy(), ev["relevance"].to_numpy()
    rows_of = pd.Series(np.arange(len(q))).groupby(q).indices
    per_q = {
        m: [_per_query_reference(y[rows_of[j]], gain[rows_of[j]], s[rows_of[j]], cfg.k) for j in rows_of]
        for m, s in (("candidate", cand), ("production", prod))
    }
    for name in ("overall", "query_frequency:head", "query_frequency:tail", "query_terms:seen-terms"):
        dim, _, value = name.partition(":")
        in_slice = (slices[dim].astype(str) == value).to_numpy() if value else np.ones(len(ev), bool)
        queries = np.unique(q[in_slice])
        for metric in ("roc_auc_per_query", "ndcg_at_k", "mrr", "recall_at_k"):
            diffs = []
            for mult in mults:
                means = {}
                for m in per_q:
                    v = np.array([per_q[m][j][metric] for j in queries])
                    w = mult[queries] * np.isfinite(v)
                    means[m] = np.nansum(w * v) / w.sum() if w.sum() else np.nan
                diffs.append(means["candidate"] - means["production"])
            ref, got = _interval_of(diffs), res["comparison"]["slices"][name][metric]
            if ref is None:
                assert got.get("ci_low") is None, (name, metric)
                continue
            assert (got["ci_low"], got["ci_high"]) == pytest.approx(ref, abs=1e-9), (name, metric)


def test_zipf_intervals_are_feasible_and_hold_the_point(zipf_case):
    """No bound of a [0, 1] metric's difference leaves [-1, 1]; AUC intervals contain the point here."""
    *_, res, _, _ = zipf_case
    for name, entry in res["comparison"]["slices"].items():
        for metric, d in entry.items():
            if d.get("ci_low") is None:
                continue
            assert d["ci_low"] <= d["ci_high"], (name, metric)
            if metric != "log_loss":
                assert d["ci_low"] >= -1 and d["ci_high"] <= 1, (name, metric, d)
    for metric in ("roc_auc", "pr_auc"):
        d = res["comparison"]["slices"]["overall"][metric]
        assert d["ci_low"] <= d["value"] <= d["ci_high"], (metric, d)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_pooled_sums_equal_sklearn_sample_weights(seed):
    """Compiled pass = numpy fallback = scikit-learn with integer sample weights, ties included."""
    rng = np.random.default_rng(seed)
    n, n_queries, b = 300, 25, 20
    q = rng.integers(0, n_queries, n)
    y = (rng.random(n) < 0.3).astype(int)
    s = np.round(rng.random(n) + 0.3 * y, 1)  # few distinct values: long tie runs
    o = np.argsort(-s, kind="stable")
    curve = MK._Curve(q[o], y[o], s[o])
    mult = rng.integers(0, 4, size=(b, n_queries)).astype(float)
    weights = MK._lane_weights(mult)
    fast = MK._pooled_slot_sums(curve, weights)[:, 0, :b]  # no slots: every row is in slot 0
    slow = MK._pooled_curve_sums_numpy(curve, weights)[:, :b]
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    for r in range(b):
        w = mult[r][q]
        u, ap, w_pos, w_neg = fast[:, r]
        assert u / (w_pos * w_neg) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
        assert ap / w_pos == pytest.approx(average_precision_score(y, s, sample_weight=w), abs=1e-12)


def test_one_pass_slot_sums_equal_per_slice_sums_and_sklearn():
    """One pass serving every slice = a pass over each slice's own rows = scikit-learn, ties included."""
    rng = np.random.default_rng(7)
    n, n_queries, b = 400, 30, 16
    q = rng.integers(0, n_queries, n)
    y = (rng.random(n) < 0.3).astype(int)
    s = np.round(rng.random(n) + 0.3 * y, 1)  # long tie runs that cross slices
    # two dimensions: a row-level one with 3 slices (slots 1-3) and a query-level one with 2 (slots 4-5)
    slots = np.stack([np.zeros(n, int), 1 + rng.integers(0, 3, n), 4 + q % 2], axis=1)
    o = np.argsort(-s, kind="stable")
    curve = MK._Curve(q[o], y[o], s[o], slots[o], 6)
    mult = rng.integers(0, 4, size=(b, n_queries))
    weights = MK._lane_weights(mult)
    fast = MK._pooled_slot_sums(curve, weights)[:, :, :b]
    for slot in range(6):
        rows = np.flatnonzero((slots[o] == slot).any(axis=1))
        slow = MK._pooled_curve_sums_numpy(curve, weights, rows)[:, :b]
        np.testing.assert_allclose(fast[:, slot], slow, rtol=1e-12, atol=1e-12)
        in_slice = (slots == slot).any(axis=1)
        for r in range(0, b, 5):
            w = mult[r][q[in_slice]]
            u, ap, w_pos, w_neg = fast[:, slot, r]
            yy, ss = y[in_slice], s[in_slice]
            assert u / (w_pos * w_neg) == pytest.approx(roc_auc_score(yy, ss, sample_weight=w), abs=1e-12)
            assert ap / w_pos == pytest.approx(average_precision_score(yy, ss, sample_weight=w), abs=1e-12)


def test_point_estimates_of_every_slice_match_sklearn_on_its_rows(zipf_case):
    """Pooled and per-query values of every slice (one grouped pass per dimension) equal a per-slice loop."""
    ev, train, cand, prod, cfg, res, q, _ = zipf_case
    slices = assign_slices(ev, train, cfg)
    y, gain = ev["label"].to_numpy(), ev["relevance"].to_numpy()
    checked = 0
    for name in res["slices"]:
        dim, _, value = name.partition(":")
        mask = np.ones(len(ev), bool) if name == "overall" else (slices[dim].astype(str) == value).to_numpy()
        if not mask.any():
            continue
        got = res["metrics"]["candidate"][name]
        ref = _pooled_reference(y[mask], cand[mask])
        for metric in ("roc_auc", "pr_auc", "log_loss", "ece", "f1", "recall", "precision"):
            if np.isfinite(ref[metric]):
                assert got[metric]["value"] == pytest.approx(ref[metric], abs=1e-9), (name, metric)
                checked += 1
        # per-query values: ranks from the query's full list (ties: expected over their orders), only the
        # slice's rows relevant
        per_q = {}
        for j in np.unique(q[mask]):
            rows = np.flatnonzero(q == j)
            sl = rows[mask[rows]]
            ys = y[sl]
            per_q.setdefault("roc_auc_per_query", []).append(
                roc_auc_score(ys, cand[sl]) if 0 < ys.sum() < len(ys) else np.nan
            )
            ref = _tie_aware_reference(y[rows] * mask[rows], gain[rows] * mask[rows], cand[rows], cfg.k)
            for metric, v in ref.items():
                per_q.setdefault(metric, []).append(v)
        for metric, vals in per_q.items():
            if np.isfinite(vals).any():
                assert got[metric]["value"] == pytest.approx(np.nanmean(vals), abs=1e-9), (name, metric)
                checked += 1
    assert checked >= 60


# ----------------------------------------------------------------------------------------------
# tied scores: rank-based metrics are expected values over tie orders, never row order


def _all_tied(reverse: bool) -> pd.DataFrame:
    """Issue 12 item 5: 60 queries x 10 rows, the two clicked rows first (or last), every score 0.5."""
    label = np.tile([1, 1] + [0] * 8, 60)
    ev = pd.DataFrame(
        {"query": np.repeat([f"q{i}" for i in range(60)], 10), "item_id": np.arange(600).astype(str)}
    )
    ev["label"] = label[::-1] if reverse else label
    return ev


@pytest.mark.parametrize("reverse", [False, True])
def test_all_tied_scores_give_the_tie_aware_values_in_any_row_order(reverse):
    from sklearn.metrics import ndcg_score

    ev = _all_tied(reverse)
    train = pd.DataFrame({"query": ["t"] * 3, "item_id": ["t1", "t1", "t2"]})  # every eval item is cold
    res = evaluate(ev, train, {"candidate": np.full(600, 0.5)}, EvalConfig(n_bootstrap=0))
    got = res["metrics"]["candidate"]["overall"]
    assert round(got["ndcg_at_k"]["value"], 3) == 0.557
    assert got["ndcg_at_k"]["value"] == pytest.approx(
        ndcg_score([[1, 1] + [0] * 8], [[0.5] * 10], k=10), abs=1e-12
    )
    # E[1/rank of first of 2 positives among 10 tied] = sum_j C(10-j, 1)/C(10, 2)/j = (10 H_9 - 9)/45
    h9 = sum(1 / j for j in range(1, 10))
    assert round(got["mrr"]["value"], 3) == 0.429
    assert got["mrr"]["value"] == pytest.approx((10 * h9 - 9) / 45, abs=1e-12)
    assert got["recall_at_k"]["value"] == 1.0  # k = 10 = list length
    k3 = evaluate(ev, train, {"candidate": np.full(600, 0.5)}, EvalConfig(n_bootstrap=0, k=3))
    assert k3["metrics"]["candidate"]["overall"]["recall_at_k"]["value"] == pytest.approx(0.3, abs=1e-12)
    # every item is listed with probability 3/10: coverage 1 - 0.7 = 0.3, exposure all cold
    bias = k3["popularity_bias"]["candidate"]
    assert bias["item_coverage"]["value"] == pytest.approx(0.3, abs=1e-12)
    assert bias["gini"]["value"] == pytest.approx(0.0, abs=1e-12)  # expected counts all equal
    assert k3["fairness"]["candidate"]["exposure"]["share"]["cold"] == 1.0


def _brute_force(ev: pd.DataFrame, s: np.ndarray, train_count: dict[str, int], long_tail: set[str], k: int):
    """Every metric averaged over every joint tie order of every query (itertools), from the definitions."""
    import itertools

    queries = list(dict.fromkeys(ev["query"]))
    orders_per_q = []
    for qq in queries:
        rows = np.flatnonzero(ev["query"].to_numpy() == qq)
        runs = [list(rows[s[rows] == v]) for v in sorted(set(s[rows]), reverse=True)]
        orders_per_q.append(
            [
                sum(combo, [])
                for combo in itertools.product(*[list(map(list, itertools.permutations(r))) for r in runs])
            ]
        )
    y, items = ev["label"].to_numpy(), ev["item_id"].to_numpy()
    pool = sorted(set(items))
    disc = 1 / np.log2(np.arange(2, 40))
    acc: dict[str, list[float]] = {}
    for joint in itertools.product(*orders_per_q):
        ndcg, mrr, rec, arp, aplt, listed, expo = [], [], [], [], [], [], {"tail": 0.0, "all": 0.0}
        for order in joint:
            yo = y[order]
            ideal = np.sort(yo)[::-1]
            ndcg.append(
                (yo[:k] * disc[: min(k, len(yo))]).sum() / (ideal[:k] * disc[: min(k, len(yo))]).sum()
            )
            mrr.append(1 / (np.argmax(yo > 0) + 1))
            rec.append(yo[:k].sum() / yo.sum())
            top = [items[i] for i in order[:k]]
            listed += top
            arp.append(np.mean([train_count.get(it, 0) for it in top]))
            aplt.append(np.mean([it in long_tail for it in top]))
            for r, it in enumerate(top):
                expo["all"] += disc[r]
                expo["tail"] += disc[r] * (it in long_tail and train_count.get(it, 0) > 0)
        cnt = np.sort([listed.count(it) for it in pool]).astype(float)
        n = len(pool)
        gini = np.sum((2 * np.arange(1, n + 1) - n - 1) * cnt) / (n * cnt.sum())
        for key, v in (
            ("ndcg", np.mean(ndcg)),
            ("mrr", np.mean(mrr)),
            ("recall", np.mean(rec)),
            ("arp", np.mean(arp)),
            ("aplt", np.mean(aplt)),
            ("coverage", len(set(listed)) / n),
            ("gini", gini),
            ("tail_exposure", expo["tail"] / expo["all"]),
        ):
            acc.setdefault(key, []).append(v)
    return {key: float(np.mean(v)) for key, v in acc.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tie_aware_metrics_equal_brute_force_enumeration(seed):
    """nDCG, MRR, recall@k, ARP, APLT, coverage and exposure = the mean over every tie order; Gini <= it."""
    rng = np.random.default_rng(seed)
    train = pd.DataFrame({"query": ["t"] * 12, "item_id": list("aaaaaabbbcde")})  # a head, b torso, c-e tail
    # q1: 6 rows, a run of 4 straddling k=3 holding item "c" twice; q2: 5 rows in runs of 3 and 2
    ev = pd.DataFrame(
        {
            "query": ["q1"] * 6 + ["q2"] * 5,
            "item_id": ["a", "c", "c", "b", "x", "d", "a", "b", "e", "c", "x"],
            "label": [0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1],
        }
    )
    s = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.1, 0.7, 0.7, 0.7, 0.2, 0.2])
    perm = rng.permutation(len(ev))
    ev, s = ev.iloc[perm].reset_index(drop=True), s[perm]
    cfg = EvalConfig(k=3, n_bootstrap=0, min_positives=0)
    res = evaluate(ev, train, {"candidate": s}, cfg)
    counts = train["item_id"].value_counts().to_dict()
    slices = assign_slices(ev, train, cfg)
    tail_items = set(ev["item_id"][slices["popularity"].astype(str).isin(["tail", "cold"])])
    ref = _brute_force(ev, s, counts, tail_items, cfg.k)
    got = res["metrics"]["candidate"]["overall"]
    assert got["ndcg_at_k"]["value"] == pytest.approx(ref["ndcg"], abs=1e-12)
    assert got["mrr"]["value"] == pytest.approx(ref["mrr"], abs=1e-12)
    assert got["recall_at_k"]["value"] == pytest.approx(ref["recall"], abs=1e-12)
    bias = res["popularity_bias"]["candidate"]
    assert bias["arp"]["value"] == pytest.approx(ref["arp"], abs=1e-12)
    assert bias["aplt"]["value"] == pytest.approx(ref["aplt"], abs=1e-12)
    assert bias["item_coverage"]["value"] == pytest.approx(ref["coverage"], abs=1e-12)
    assert bias["gini"]["value"] <= ref["gini"] + 1e-12  # Gini of expected counts: Jensen lower bound
    assert res["fairness"]["candidate"]["exposure"]["share"]["tail"] == pytest.approx(
        ref["tail_exposure"], abs=1e-12
    )


def test_shuffled_rows_give_identical_metrics_json(data):
    """Same rows in another order (eval and train) -> byte-identical metrics.json, bootstrap included."""
    train, ev, cand, prod = data
    scores = {"candidate": np.round(cand, 1), "production": np.round(prod, 2)}  # ties everywhere
    cfg = EvalConfig(n_bootstrap=64, min_positives=5)
    base = json.dumps(evaluate(ev, train, scores, cfg), sort_keys=True, allow_nan=False)
    for seed in (0, 1):
        perm = np.random.default_rng(seed).permutation(len(ev))
        shuffled_ev = ev.iloc[perm].reset_index(drop=True)
        shuffled_train = train.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        res = evaluate(shuffled_ev, shuffled_train, {m: v[perm] for m, v in scores.items()}, cfg)
        assert json.dumps(res, sort_keys=True, allow_nan=False) == base


def test_training_counts_stand_in_for_the_training_rows(data):
    """metrics.json from TrainCounts (what the Ray engine sums on the cluster) is byte-identical to the one
    from the training rows; counts of parts merge to the counts of the whole, missing keys named "None"."""
    train, ev, cand, prod = data
    train = train.copy()
    train.loc[train.index[:7], "item_id"] = None  # a missing item and the text "None" are one key, as before
    train.loc[train.index[7:9], "item_id"] = "None"
    scores = {"candidate": cand, "production": prod}
    cfg = EvalConfig(n_bootstrap=32, min_positives=5)
    counts = M.TrainCounts.of(train)
    assert counts.rows == len(train) and counts.items["None"] == 9
    assert counts.items.sum() == counts.queries.sum() == len(train)
    halves = M.TrainCounts.merged([M.TrainCounts.of(train.iloc[:301]), M.TrainCounts.of(train.iloc[301:])])
    pd.testing.assert_series_equal(halves.items, counts.items)
    pd.testing.assert_series_equal(halves.queries, counts.queries)
    assert halves.rows == counts.rows
    from_rows = evaluate_typed(ev, train, scores, cfg).to_json_bytes()
    assert evaluate_typed(ev, counts, scores, cfg).to_json_bytes() == from_rows
    assert evaluate_typed(ev, halves, scores, cfg).to_json_bytes() == from_rows
    pd.testing.assert_frame_equal(assign_slices(ev, counts, cfg), assign_slices(ev, train, cfg))
    assert M.TrainCounts.merged([]).rows == 0
    # A compact frame (balance --compact) counts each row `repeats` times, as its written-out form does.
    from tailguard.balance import BalanceConfig, expand, rebalance

    frame = train.assign(row_id=np.arange(len(train)), item_title=train["item_id"])
    compact, _ = rebalance(frame, BalanceConfig.from_spec("random_over", seed=0), compact=True)
    assert compact["repeats"].sum() > len(compact)
    whole = M.TrainCounts.of(expand(compact))
    for form in (compact, compact.assign(repeats=compact["repeats"].astype(str))):  # CSV keeps it as text
        got = M.TrainCounts.of(form)
        assert got.rows == whole.rows == compact["repeats"].sum()
        pd.testing.assert_series_equal(got.items, whole.items)
        pd.testing.assert_series_equal(got.queries, whole.queries)
    with pytest.raises(ValueError, match=r"'repeats' .* 2 row\(s\) are not, e.g. rows \[0, 3\]"):
        M.TrainCounts.of(compact.assign(repeats=["0", 1, 1, "two"] + [1] * (len(compact) - 4)))
    with pytest.raises(ValueError, match="train frame: empty"):
        assign_slices(ev, M.TrainCounts.merged([]), cfg)
    with pytest.raises(ValueError, match=r"train frame: missing column\(s\) \['item_id'\]"):
        M.TrainCounts.of(train[["query"]])


# --- review after issue 12: missing category, empty relevance, one common training count ----------------


def _category_frames(values: list[str | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = 120
    eval_df = pd.DataFrame(
        {"query": [f"q{i // 4}" for i in range(n)], "item_id": [f"i{i % 9}" for i in range(n)],
         "label": [int(i % 3 == 0) for i in range(n)], "category": [values[i % 3] for i in range(n)]}
    )  # fmt: skip
    train = pd.DataFrame({"query": ["t"] * 50, "item_id": [f"i{i % 9}" for i in range(50)]})
    return eval_df, train


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["None", None, "b"], {"None", "(missing)", "b"}),  # the issue: "None" text vs an empty cell
        (["(missing)", None, ""], {'"(missing)"', "(missing)"}),  # a real "(missing)"; "" is missing too
        (["(other)", '"x"', None], {'"(other)"', '"\\"x\\""', "(missing)"}),
    ],
)
def test_missing_category_has_its_own_slice(values, expected):
    eval_df, train = _category_frames(values)
    scores = {"candidate": (np.arange(len(eval_df)) * 7 % 10) / 10}
    result = evaluate(eval_df, train, scores, EvalConfig(n_bootstrap=0))
    cats = {k.split(":", 1)[1]: v["rows"] for k, v in result["slices"].items() if k.startswith("category:")}
    assert set(cats) == expected and sum(cats.values()) == len(eval_df)
    if values[2] == "":  # "" and None are both missing: one slice of 80 rows
        assert cats["(missing)"] == 80


def test_missing_category_same_for_none_nan_and_empty_string():
    frames = [_category_frames(["a", m, "b"])[0] for m in (None, np.nan, "")]
    train = _category_frames(["a", None, "b"])[1]
    scores = {"candidate": (np.arange(120) * 7 % 10) / 10}
    results = [evaluate(f, train, scores, EvalConfig(n_bootstrap=0)) for f in frames]
    assert results[0]["slices"] == results[1]["slices"] == results[2]["slices"]
    assert results[0]["metrics"] == results[2]["metrics"]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_missing_relevance_is_an_error_not_gain_zero(bad):
    eval_df, train = _category_frames(["a", "b", "c"])
    eval_df["relevance"] = eval_df["label"].astype(float)
    eval_df.loc[eval_df["label"] == 1, "relevance"] = bad
    with pytest.raises(ValueError, match="relevance"):
        evaluate(eval_df, train, {"candidate": np.full(len(eval_df), 0.5)}, EvalConfig(n_bootstrap=0))


def _flat(counts: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    items = [f"it{i}" for i, c in enumerate(counts) for _ in range(c)]
    train = pd.DataFrame({"query": [f"q{i % 80}" for i in range(len(items))], "item_id": items})
    rng = np.random.default_rng(0)
    n = 1000
    eval_df = pd.DataFrame({"query": [f"e{i // 10}" for i in range(n)],
                            "item_id": [f"it{i % len(counts)}" for i in range(n)],
                            "label": (rng.random(n) < 0.3).astype(int)})  # fmt: skip
    return eval_df, train


@pytest.mark.parametrize("counts", [[1] * 400, [1, 1]], ids=["issue-400-once", "two-once"])
def test_every_item_seen_once_is_tail(counts):
    eval_df, train = _flat(counts)
    scores = {"candidate": np.linspace(0, 1, len(eval_df))}
    result = evaluate(eval_df, train, scores, EvalConfig(n_bootstrap=0))
    cut = result["slice_definitions"]["cutoffs"]["popularity"]
    assert cut["rule"] == "tail-max-count" and set(cut) == {"tail", "rule"}
    assert result["slices"]["popularity:tail"]["rows"] == len(eval_df)
    assert not result["slices"]["popularity:tail"]["too_small"]


@pytest.mark.parametrize(("counts", "n"), [([2] * 400, 2), ([3] * 5, 3)])
def test_one_common_count_above_tail_max_makes_popularity_undefined(counts, n):
    eval_df, train = _flat(counts)
    scores = {"candidate": np.linspace(0, 1, len(eval_df))}
    result = evaluate(eval_df, train, scores, EvalConfig(n_bootstrap=0))
    why = f"popularity cannot be judged: every training item has count {n}"
    assert result["slice_definitions"]["cutoffs"]["popularity"]["undefined"] == why
    for b in ("head", "torso", "tail"):
        assert result["slices"][f"popularity:{b}"]["too_small"]
        assert result["slices"][f"popularity:{b}"]["reason"] == why
    wider = evaluate(eval_df, train, {"candidate": np.linspace(0, 1, len(eval_df))},
                     EvalConfig(n_bootstrap=0, tail_max_count=n))  # fmt: skip
    assert wider["slice_definitions"]["cutoffs"]["popularity"]["rule"] == "tail-max-count"


def _typed_evaluation(n_bootstrap: int = 50):
    rng = np.random.default_rng(11)
    n = 600
    q = rng.integers(0, 40, n)
    df = pd.DataFrame({
        "query": [f"q{i}" for i in q],
        "item_id": [str(i) for i in rng.zipf(1.4, n) % 120],
        "label": (rng.random(n) < 0.3).astype(int),
        "category": rng.choice(["a", "b", None], n),
    })  # fmt: skip
    train, ev = df.iloc[:300], df.iloc[300:].reset_index(drop=True)
    y = ev["label"].to_numpy()
    scores = {
        "candidate": np.round(0.4 * y + 0.6 * rng.random(len(ev)), 2),
        "production": rng.random(len(ev)),
    }
    config = EvalConfig(n_bootstrap=n_bootstrap, min_positives=5)
    return evaluate_typed(ev, train, scores, config)


def test_evaluation_json_is_the_old_writers_bytes_and_round_trips():
    """to_json_bytes = json.dumps(metrics.json's dict, indent=2) (the writer before Evaluation existed)."""
    typed = _typed_evaluation()
    assert isinstance(typed, Evaluation)
    data = typed.to_json_bytes()
    assert data == json.dumps(json.loads(data), indent=2, default=str).encode()
    assert list(json.loads(data)) == [
        "schema_version", "config", "models", "data", "slice_definitions", "slices", "metrics",
        "popularity_bias", "fairness", "comparison",
    ]  # fmt: skip
    back = Evaluation.from_json(data)
    assert back.to_json_bytes() == data and back == typed
    assert Evaluation.coerce(json.loads(data)).to_json_bytes() == data


def test_evaluation_accessors_read_the_same_numbers_as_the_json():
    typed = _typed_evaluation()
    raw = typed.to_dict()
    assert typed.models == ["candidate", "production"] and typed.has_model("production")
    assert (
        typed.value("candidate", "overall", "roc_auc")
        == raw["metrics"]["candidate"]["overall"]["roc_auc"]["value"]
    )
    diff = typed.diff("overall", "roc_auc")
    assert (diff.value, diff.ci_low, diff.ci_high) == tuple(
        raw["comparison"]["slices"]["overall"]["roc_auc"][k] for k in ("value", "ci_low", "ci_high")
    )
    info = typed.slice_info("popularity:tail")
    assert info.rows == raw["slices"]["popularity:tail"]["rows"] and info.dimension == "popularity"
    assert typed.cutoffs("popularity")["rule"] == raw["slice_definitions"]["cutoffs"]["popularity"]["rule"]
    assert typed.value("candidate", "no-such-slice", "roc_auc") is None and typed.slice_info("nope") is None
    assert typed.resamples == 50 and typed.ci_level == 0.95
    single = _typed_evaluation(n_bootstrap=0)
    assert single.diff("overall", "roc_auc").ci_low is None


def test_per_query_auc_equals_sklearn_per_query():
    rng = np.random.default_rng(5)
    n = 400
    frame = pd.DataFrame(
        {"query": rng.choice(["a", "b", "c", "d", "e"], n), "label": (rng.random(n) < 0.4).astype(int)}
    )
    frame.loc[frame["query"] == "e", "label"] = 0  # one class: NaN
    scores = np.round(rng.random(n), 1)  # ties count half
    mask = rng.random(n) < 0.7
    got = M.per_query_auc(frame, scores, mask)
    sub = frame[mask]
    assert list(got.index) == list(pd.unique(sub["query"]))
    for query, value in got.items():
        rows = (sub["query"] == query).to_numpy()
        y = sub["label"].to_numpy()[rows]
        if y.min() == y.max():
            assert np.isnan(value)
        else:
            assert value == pytest.approx(roc_auc_score(y, scores[mask][rows]), abs=1e-12)
    assert M.per_query_auc(frame, scores).index.size == 5
    with pytest.raises(ValueError, match="scores"):
        M.per_query_auc(frame, scores[:-1])


def test_bootstrap_mean_interval_is_the_percentile_interval_of_resampled_means():
    values = np.random.default_rng(2).normal(0.1, 1.0, 300)
    lo, hi = M.bootstrap_mean_interval(values, 2000, np.random.default_rng(0))
    draws = np.random.default_rng(0).integers(0, values.size, size=(2000, values.size))
    means = values[draws].mean(axis=1)
    assert (lo, hi) == (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))
    assert lo < values.mean() < hi
    # about 1.96 standard errors either side of the mean
    assert hi - lo == pytest.approx(2 * 1.96 * values.std() / np.sqrt(values.size), rel=0.1)
    lo90, hi90 = M.bootstrap_mean_interval(values, 2000, np.random.default_rng(0), level=0.9)
    assert lo < lo90 < hi90 < hi
    with pytest.raises(ValueError):
        M.bootstrap_mean_interval(np.zeros(0), 10, np.random.default_rng(0))
