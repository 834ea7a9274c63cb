"""Rebalancing of the training split: resamplers, weights, validation, report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from imblearn.over_sampling import RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler

from tailguard import balance
from tailguard.balance import BalanceConfig, BalanceConfigError, rebalance


def make_frame(n: int = 3000, seed: int = 0, positive_rate: float = 0.1) -> pd.DataFrame:
    """A canonical frame with Zipf-popular items and queries and ~10% positives."""
    rng = np.random.default_rng(seed)
    items = rng.zipf(1.6, n) % 400
    queries = rng.zipf(1.4, n) % 300
    words = np.array(["red", "blue", "sofa", "lamp", "cable", "boots", "steel", "wood", "mini", "large"])
    titles = [" ".join(words[(i * 7 + k) % 10] for k in range(4)) for i in items]
    return pd.DataFrame(
        {
            "query": [f"{words[q % 10]} {words[(q // 10) % 10]} q{q}" for q in queries],
            "item_id": [f"I{i:04d}" for i in items],
            "item_title": titles,
            "label": (rng.random(n) < positive_rate).astype(np.int8),
            "row_id": np.arange(n, dtype=np.int64),
            "augmented": False,
        }
    )


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame()


# --- consistency with imbalanced-learn -------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [1.0, 2.0, 4.0, 0.5 * 5])
def test_random_under_counts_match_imbalanced_learn(frame, ratio):
    out, _ = rebalance(frame, BalanceConfig.from_spec("random_under", ratio=ratio))
    ref_x, ref_y = RandomUnderSampler(sampling_strategy=1 / ratio, random_state=0).fit_resample(
        frame.drop(columns="label"), frame["label"]
    )
    assert out["label"].value_counts().to_dict() == pd.Series(ref_y).value_counts().to_dict()
    assert out["label"].sum() == frame["label"].sum()  # under-sampling never drops positives
    assert out["row_id"].is_unique


@pytest.mark.parametrize("over_ratio", [1.0, 0.5, 0.25])
def test_random_over_counts_match_imbalanced_learn(frame, over_ratio):
    out, _ = rebalance(frame, BalanceConfig.from_spec("random_over", over_ratio=over_ratio))
    ref_x, ref_y = RandomOverSampler(sampling_strategy=over_ratio, random_state=0).fit_resample(
        frame.drop(columns="label"), frame["label"]
    )
    assert out["label"].value_counts().to_dict() == pd.Series(ref_y).value_counts().to_dict()
    # every original row kept; the extra rows are copies of training positives
    assert set(frame["row_id"]) <= set(out["row_id"])
    extra = out["row_id"].value_counts()
    duplicated = extra[extra > 1].index
    assert frame.set_index("row_id").loc[duplicated, "label"].eq(1).all()


def test_random_over_is_a_no_op_when_already_balanced(frame):
    out, report = rebalance(frame, BalanceConfig.from_spec("random_over", over_ratio=0.01))
    assert len(out) == len(frame)
    assert any("random_over" in n for n in report["notes"])


# --- determinism, isolation ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["random_under", "random_over", "popularity_cap", "stratified", "augment"])
def test_deterministic_by_seed(frame, spec):
    config = BalanceConfig.from_spec(spec, seed=7, cap_k=5, aug_rows="positives", aug_mine_synonyms=False)
    first, report_a = rebalance(frame, config)
    second, report_b = rebalance(frame, config)
    pd.testing.assert_frame_equal(first, second)
    assert report_a == report_b
    other, _ = rebalance(frame, config.model_copy(update={"seed": 8}))
    assert not other.equals(first)


def test_evaluation_split_is_never_touched(frame):
    from tailguard.data import split_by_query

    train, eval_df = split_by_query(frame, eval_fraction=0.3, seed=0)
    eval_before, train_before = eval_df.copy(), train.copy()
    config = BalanceConfig.from_spec(
        "popularity_cap,augment,random_under,random_over,popularity_reweight", aug_rows="positives"
    )
    out, report = rebalance(train, config)
    pd.testing.assert_frame_equal(eval_df, eval_before)
    pd.testing.assert_frame_equal(train, train_before)  # the input is not modified either
    eval_ids = set(eval_df["row_id"])
    assert eval_ids.isdisjoint(out["row_id"]) and eval_ids.isdisjoint(out["source_row_id"])
    assert set(out["source_row_id"]) <= set(train["row_id"])
    assert (out.loc[out["augmented"], "row_id"] < 0).all()
    assert report["augmented_rows"] == int(out["augmented"].sum()) > 0


# --- weights ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["item", "query"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_popularity_weights_mean_one_and_proportional(frame, key, alpha):
    out, report = rebalance(
        frame, BalanceConfig.from_spec("popularity_reweight", reweight_key=key, alpha=alpha)
    )
    column = "item_id" if key == "item" else "query"
    popularity = frame[column].map(frame[column].value_counts()).to_numpy()
    w = out["weight"].to_numpy()
    assert w.mean() == pytest.approx(1.0)
    product = w * popularity.astype(float) ** alpha
    assert np.allclose(product, product[0])
    assert report["after"]["effective_sample_size"] == pytest.approx(w.sum() ** 2 / (w**2).sum(), abs=0.01)


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999])
def test_class_balanced_weights_follow_cui_formula(frame, beta):
    out, _ = rebalance(frame, BalanceConfig.from_spec("class_balanced", beta=beta))
    n1, n0 = int(frame["label"].sum()), int((frame["label"] == 0).sum())
    w = out["weight"].to_numpy()
    w1, w0 = w[out["label"] == 1][0], w[out["label"] == 0][0]
    assert w1 / w0 == pytest.approx((1 - beta**n0) / (1 - beta**n1))
    assert w.mean() == pytest.approx(1.0)
    assert w1 > w0


def test_weights_compose_and_follow_resampling(frame):
    out, _ = rebalance(
        frame, BalanceConfig.from_spec("random_under,popularity_reweight,class_balanced", alpha=1)
    )
    w = out["weight"].to_numpy()
    assert w.mean() == pytest.approx(1.0) and len(w) == len(out)
    pop = out["item_id"].map(frame["item_id"].value_counts()).to_numpy().astype(float)
    for label in (0, 1):
        sel = out["label"].to_numpy() == label
        product = w[sel] * pop[sel]
        assert np.allclose(product, product[0])


def test_no_weight_column_without_weighting(frame):
    out, report = rebalance(frame, BalanceConfig.from_spec("random_under"))
    assert "weight" not in out.columns
    assert report["after"]["effective_sample_size"] == len(out)


# --- popularity_cap, stratified ---------------------------------------------------------------------


def test_popularity_cap_bounds_rows_per_item_and_query(frame):
    out, _ = rebalance(frame, BalanceConfig.from_spec("popularity_cap", cap_k=10, cap_query_k=20))
    assert out["item_id"].value_counts().max() <= 10
    assert out["query"].value_counts().max() <= 20
    # items already under the cap keep every row the query cap left them
    small = frame["item_id"].value_counts()
    small = small[small <= 3].index
    assert len(out[out["item_id"].isin(small)]) > 0.5 * len(frame[frame["item_id"].isin(small)])


def test_popularity_cap_keeps_positives_first(frame):
    out, _ = rebalance(frame, BalanceConfig.from_spec("popularity_cap", cap_k=5, cap_query_k=10**6))
    before = frame.groupby("item_id")["label"].sum().clip(upper=5)
    after = out.groupby("item_id")["label"].sum().reindex(before.index, fill_value=0)
    assert (after == before).all()


def test_stratified_meets_target_shares(frame):
    shares = {"head": 0.5, "torso": 0.25, "tail": 0.25}
    out, report = rebalance(
        frame, BalanceConfig.from_spec("stratified", bucket_shares=shares, positive_share=0.4)
    )
    rows = {b: v["rows"] for b, v in report["after"]["item_buckets"].items()}
    total = sum(rows.values())
    for bucket, share in shares.items():
        assert rows[bucket] / total == pytest.approx(share, abs=0.01)
        assert report["after"]["item_buckets"][bucket]["positive_rate"] == pytest.approx(0.4, abs=0.02)
    assert out["row_id"].is_unique  # sampled without replacement


# --- buckets -------------------------------------------------------------------------------------------


def test_popularity_bucket_never_splits_ties_and_keeps_singletons_in_tail():
    keys = ["a"] * 50 + ["b"] * 10 + ["c"] * 10 + ["d"] * 10 + [f"s{i}" for i in range(20)]
    bucket, popularity = balance._popularity_bucket(pd.Series(keys))
    by_key = pd.DataFrame({"key": keys, "bucket": bucket, "pop": popularity}).drop_duplicates("key")
    assert by_key.groupby("pop")["bucket"].nunique().max() == 1  # ties share a bucket
    assert by_key.set_index("key").loc["a", "bucket"] == 0
    assert by_key.set_index("key").loc["b", "bucket"] == 1  # 50+30 = 80% closes the torso
    assert (by_key[by_key["pop"] == 1]["bucket"] == 2).all()


# --- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "options", "fragments"),
    [
        ("random_under", {"ratio": 0}, ["ratio", "greater than 0"]),
        ("random_under", {"ratio": -1}, ["ratio", "greater than 0"]),
        ("random_over", {"over_ratio": 0}, ["over_ratio", "greater than 0"]),
        ("popularity_reweight", {"alpha": -0.5}, ["alpha", "greater than or equal to 0"]),
        ("class_balanced", {"beta": 1.0}, ["beta", "less than 1"]),
        ("random_undr", {}, ["unknown strategy 'random_undr'", "random_under", "class_balanced"]),
        ("stratified", {"positive_share": 0.0}, ["positive_share", "greater than 0"]),
        ("random_under", {"ratoi": 1}, ["ratoi", "Extra inputs"]),
        ("none,random_under", {}, ["'none' cannot be combined"]),
    ],
)
def test_bad_configuration_fails_naming_option_and_range(spec, options, fragments):
    with pytest.raises(BalanceConfigError) as err:
        BalanceConfig.from_spec(spec, **options)
    for fragment in fragments:
        assert fragment in str(err.value)


@pytest.mark.parametrize("spec", ["random_under", "random_over", "stratified"])
def test_strategy_that_would_leave_no_positives_fails_before_work(frame, spec):
    no_positives = frame.assign(label=np.int8(0))
    with pytest.raises(BalanceConfigError, match="would leave no positives"):
        rebalance(no_positives, BalanceConfig.from_spec(spec))


def test_missing_column_and_bad_labels_are_named(frame):
    with pytest.raises(BalanceConfigError, match="row_id"):
        rebalance(frame.drop(columns="row_id"), BalanceConfig())
    with pytest.raises(BalanceConfigError, match=r"'label' must be 0/1.*\[2\]"):
        rebalance(frame.assign(label=frame["label"].replace({1: 2})), BalanceConfig.from_spec("random_under"))


@pytest.mark.parametrize("spec", ["none", "random_under", "random_over"])
def test_a_compact_frame_is_not_rebalanced_as_if_each_row_counted_once(frame, spec):
    """A `balance --compact` frame fed back in: before, its repeats were ignored (3,000 distinct rows counting
    5,432 came out as 3,000) or overwritten; now it is refused, compact output or not."""
    compact, _ = rebalance(frame, BalanceConfig.from_spec("random_over", seed=0), compact=True)
    assert compact["repeats"].sum() > len(compact)
    for as_compact in (True, False):
        with pytest.raises(BalanceConfigError, match="compact frame .* rebalance the batch it was made from"):
            rebalance(compact, BalanceConfig.from_spec(spec), compact=as_compact)


def test_stratified_with_an_empty_cell_explains(frame):
    no_tail_positives = frame.copy()
    bucket, _ = balance._popularity_bucket(frame["item_id"])
    no_tail_positives.loc[bucket == 2, "label"] = 0
    with pytest.raises(BalanceConfigError, match="tail/label=1"):
        rebalance(no_tail_positives, BalanceConfig.from_spec("stratified"))


# --- report ---------------------------------------------------------------------------------------------


def test_report_is_json_and_tables_render(frame):
    out, report = rebalance(
        frame, BalanceConfig.from_spec("augment,random_under,class_balanced", aug_rows="positives")
    )
    assert json.loads(json.dumps(report)) == report
    before, after = report["before"], report["after"]
    assert before["rows"] == len(frame) and after["rows"] == len(out)
    assert after["label_share"]["1"] == pytest.approx(out["label"].mean())
    assert sum(b["rows"] for b in after["query_buckets"].values()) == len(out)
    assert sum(b["positives"] for b in before["item_buckets"].values()) == frame["label"].sum()
    assert report["strategies"] == ["augment", "random_under", "class_balanced"]
    assert report["options"]["ratio"] == 1.0
    table = balance.report_table(report)
    assert "item tail positive rate" in table and str(len(out)) in table
    rows = balance.report_rows(report)
    assert {"metric", "before", "after"} == set(rows[0])
    assert next(r for r in rows if r["metric"] == "augmented rows")["after"] == report["augmented_rows"]


def test_none_passes_through_with_markers(frame):
    out, report = rebalance(frame.drop(columns="augmented"), BalanceConfig())
    assert len(out) == len(frame) and not out["augmented"].any()
    assert (out["source_row_id"] == out["row_id"]).all()
    assert report["before"]["label_share"] == report["after"]["label_share"]


def _with_other_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame plus a categorical, a tz-aware datetime and a nullable-int column."""
    return frame.assign(
        category=pd.Categorical(frame["item_id"].str[-1]),
        ts=pd.date_range("2026-01-01", periods=len(frame), freq="min", tz="UTC"),
        price=pd.array(np.arange(len(frame)) % 7, dtype="Int64"),
    )


def test_take_rows_keeps_dtypes_and_values(frame):
    extra = _with_other_dtypes(frame)
    positions = np.array([5, 3, 3, 0, len(frame) - 1])
    out = balance.take_rows(extra, positions)
    expected = extra.take(positions).reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expected)


def test_take_rows_keep_all_appends_copies_after_every_row(frame):
    extra = _with_other_dtypes(frame)
    positions = np.array([5, 3, 3, 0, len(frame) - 1])
    out = balance.take_rows(extra, positions, keep_all=True)
    expected = extra.take(np.r_[np.arange(len(frame)), positions]).reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expected)


def test_random_over_layout_matches_imbalanced_learn_and_owns_its_memory(frame):
    """Every input row once, in order, then the duplicated positives; no buffer shared with the input."""
    out, _ = rebalance(frame.drop(columns="augmented"), BalanceConfig.from_spec("random_over"))
    ref_x, _ = RandomOverSampler(sampling_strategy=1.0, random_state=0).fit_resample(
        frame.drop(columns="label"), frame["label"]
    )
    n = len(frame)
    assert len(out) == len(ref_x)
    pd.testing.assert_frame_equal(out.iloc[:n][list(frame.columns[:-1])], frame.drop(columns="augmented"))
    assert (ref_x["row_id"].to_numpy()[:n] == np.arange(n)).all()  # imbalanced-learn appends the same way
    assert (out["label"].iloc[n:] == 1).all() and not out["augmented"].any()
    assert (out["source_row_id"] == out["row_id"]).all()
    for column in out.columns:
        mine = out[column].to_numpy()
        assert not any(np.shares_memory(mine, frame[c].to_numpy()) for c in frame.columns), column
    assert not np.shares_memory(out["row_id"].to_numpy(), out["source_row_id"].to_numpy())


def test_take_rows_rejects_positions_out_of_range(frame):
    with pytest.raises(IndexError, match="positions must lie in"):
        balance.take_rows(frame, np.array([0, len(frame)]), keep_all=True)
    wrapped = balance.take_rows(frame, np.array([-1]), keep_all=True)
    assert wrapped["row_id"].iloc[-1] == frame["row_id"].iloc[-1]


# --- compact output (what the retrain pipeline trains on) ----------------------------------------------


def _multiset(df: pd.DataFrame) -> pd.Series:
    """How many times each (row_id, augmented) row occurs, counting a compact frame's repeats."""
    repeats = df["repeats"] if "repeats" in df.columns else pd.Series(1, index=df.index)
    key = df["row_id"].astype(str) + "/" + df["augmented"].astype(str)
    return repeats.astype(np.int64).groupby(key.to_numpy()).sum().sort_index().rename("count")


COMPACT_SPECS = [
    ("random_over", {}),
    ("random_over", {"over_ratio": 0.3}),
    ("random_under", {"ratio": 2.0}),
    ("random_under,random_over", {"ratio": 4.0, "over_ratio": 0.5}),
    ("popularity_cap,random_over", {"cap_k": 5}),
    ("random_over,popularity_reweight", {"reweight_key": "query"}),
    ("random_over,class_balanced", {"beta": 0.999}),
    ("augment,random_over", {"aug_copies": 2}),
    ("augment,random_under", {"aug_rows": "tail_query_rows", "aug_copies": 1}),
    ("none", {}),
]


@pytest.mark.parametrize(("spec", "options"), COMPACT_SPECS)
def test_compact_counts_every_row_as_often_as_the_written_out_frame(frame, spec, options):
    """Same seed: the compact rows x repeats are exactly the materialised rows, and the same report."""
    config = BalanceConfig.from_spec(spec, seed=3, **options)
    full, full_report = rebalance(frame, config)
    compact, compact_report = rebalance(frame, config, compact=True)
    assert (
        compact["repeats"].min() >= 1
        and compact["row_id"].astype(str).add(compact["augmented"].astype(str)).is_unique
    )
    pd.testing.assert_series_equal(_multiset(compact), _multiset(full))
    assert int(compact["repeats"].sum()) == len(full)
    assert compact_report["compact"] and not full_report["compact"]
    for part in ("before", "after"):
        flat = pd.json_normalize(compact_report[part]).iloc[0].to_dict()
        assert flat == pytest.approx(pd.json_normalize(full_report[part]).iloc[0].to_dict(), rel=1e-12)
    assert compact_report["augmented_rows"] == full_report["augmented_rows"]
    if "weight" in full.columns:  # the same weight per row, normalised to mean 1 over the counted rows
        by_row = full.groupby(["row_id", "augmented"])["weight"].first()
        mine = compact.set_index(["row_id", "augmented"])["weight"]
        np.testing.assert_allclose(mine.loc[by_row.index].to_numpy(), by_row.to_numpy(), rtol=1e-9)
        assert np.average(compact["weight"], weights=compact["repeats"]) == pytest.approx(1.0)
    expanded = balance.expand(compact)
    assert "repeats" not in expanded.columns and len(expanded) == len(full)
    pd.testing.assert_series_equal(_multiset(expanded), _multiset(full))


def test_compact_random_over_shares_the_input_read_only_and_never_changes_it(frame):
    before = frame.copy()
    out, _ = rebalance(frame, BalanceConfig.from_spec("random_over"), compact=True)
    assert len(out) == len(frame) and (out["row_id"].to_numpy() == frame["row_id"].to_numpy()).all()
    assert np.shares_memory(out["query"].to_numpy(), frame["query"].to_numpy())  # no copy of the text
    with pytest.raises(ValueError, match="read-only"):
        out.loc[0, "query"] = "changed"
    out["weight"] = 2.0  # new and replaced columns are the caller's own
    out["label"] = 0
    pd.testing.assert_frame_equal(frame, before)
    editable = out.copy()
    editable.loc[0, "query"] = "changed"
    pd.testing.assert_frame_equal(frame, before)


def test_cli_compact_file_is_what_train_reads(frame, tmp_path):
    """`tailguard balance --compact` writes distinct rows + repeats; `tailguard train` counts them."""
    from typer.testing import CliRunner

    from tailguard.cli import app

    frame.drop(columns=["augmented", "row_id"]).to_parquet(tmp_path / "train.parquet")
    runner = CliRunner()
    args = ["balance", "--data", str(tmp_path / "train.parquet"), "--strategy", "random_over", "--seed", "1"]
    result = runner.invoke(app, [*args, "--compact", "--out", str(tmp_path / "compact.parquet")])
    assert result.exit_code == 0, result.output
    written = runner.invoke(app, [*args, "--out", str(tmp_path / "full.parquet")])
    assert written.exit_code == 0, written.output
    compact, full = pd.read_parquet(tmp_path / "compact.parquet"), pd.read_parquet(tmp_path / "full.parquet")
    assert len(compact) == len(frame) and int(compact["repeats"].sum()) == len(full) > len(frame)
    assert f"wrote {len(frame)} rows counting {len(full)}" in result.output
    pd.testing.assert_series_equal(_multiset(compact), _multiset(full))
    trained = runner.invoke(
        app,
        ["train", "--data", str(tmp_path / "compact.parquet"), "--out", str(tmp_path / "m"),
         "--max-steps", "2", "--option", "valid_fraction=0", "--option", "progress=false"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert f"on {len(full)} rows per epoch ({len(frame)} distinct)" in trained.output


def test_cli_retrain_refuses_bad_options_before_starting(tmp_path):
    """`tailguard retrain --balance-option ratio=0` exits 2 naming the option; no state folder is created."""
    from tailguard_flows.cli import app
    from typer.testing import CliRunner

    data = tmp_path / "batch.csv"
    make_frame(200).drop(columns=["augmented", "row_id"]).to_csv(data, index=False)
    home = tmp_path / "home"
    result = CliRunner().invoke(
        app,
        ["retrain", "--data", str(data), "--balance", "random_under", "--balance-option", "ratio=0"],
        env={"TAILGUARD_HOME": str(home)},
    )
    assert result.exit_code == 2
    assert "ratio=0" in result.output and "0 < ratio <= 1000" in result.output
    assert not home.exists()


def test_tail_query_rows_augments_negatives_too_and_keeps_the_positive_rate(frame):
    """aug_rows=tail_query_rows: copies of every tail-query row, each labelled as its source."""
    config = BalanceConfig.from_spec(
        "augment", aug_rows="tail_query_rows", aug_copies=2, aug_mine_synonyms=False
    )
    out, report = rebalance(frame, config)
    copies = out[out["augmented"]]
    sources = frame.set_index("row_id").loc[copies["source_row_id"]]
    np.testing.assert_array_equal(copies["label"].to_numpy(), sources["label"].to_numpy())
    assert copies["label"].eq(0).any() and copies["label"].eq(1).any()
    tail = balance._popularity_bucket(frame["query"])[0] == 2
    assert set(copies["source_row_id"]) <= set(frame.loc[tail, "row_id"])
    assert copies["label"].mean() == pytest.approx(frame.loc[tail, "label"].mean(), abs=0.02)
    under, _ = rebalance(frame, config.model_copy(update={"strategies": ["augment", "random_under"]}))
    assert (under["label"] == 0).sum() == (under["label"] == 1).sum()  # copies count in the 1:1 ratio


@pytest.mark.parametrize("strategy", sorted(balance.STRATEGIES))
def test_every_registered_strategy_runs_the_same_on_the_compact_path(frame, strategy):
    """Each strategy in the registry (balance.STRATEGIES) gives the same counted rows compact or written out
    (same seed), and visibly acts: the compact path may not skip a strategy and hand back the input."""
    config = BalanceConfig.from_spec(strategy, seed=5)
    full, full_report = rebalance(frame, config)
    compact, compact_report = rebalance(frame, config, compact=True)
    pd.testing.assert_series_equal(_multiset(balance.expand(compact)), _multiset(full))
    pd.testing.assert_series_equal(_multiset(compact), _multiset(full))
    assert compact_report["strategies"] == full_report["strategies"] == [strategy]
    assert ("weight" in compact.columns) == ("weight" in full.columns)
    if "weight" in full.columns:
        by_row = full.groupby(["row_id", "augmented"])["weight"].first()
        mine = compact.set_index(["row_id", "augmented"])["weight"]
        np.testing.assert_allclose(mine.loc[by_row.index].to_numpy(), by_row.to_numpy(), rtol=1e-9)
    untouched = _multiset(frame).equals(_multiset(full)) and "weight" not in full.columns
    assert untouched == (strategy == "none"), f"{strategy} left the input as it was"


@pytest.mark.parametrize("where", ["/proc/nope/balanced.parquet", "{tmp}/afile/balanced.parquet", "{tmp}"])
def test_cli_balance_refuses_an_unwritable_output_before_the_work(tmp_path, where):
    """An --out that cannot be written is one line, exit 2, before the batch is read."""
    from typer.testing import CliRunner

    from tailguard.cli import app

    (tmp_path / "afile").write_text("a file, not a folder")
    out = where.format(tmp=tmp_path)
    result = CliRunner().invoke(
        app, ["balance", "--data", str(tmp_path / "missing.csv"), "--strategy", "random_under", "--out", out]
    )
    assert result.exit_code == 2, result.output
    assert "cannot write there" in result.output and "Traceback" not in result.output
    assert "missing.csv" not in result.output  # refused before reading the (missing) batch
