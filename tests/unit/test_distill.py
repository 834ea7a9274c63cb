"""Distillation: BM25-mined pairs from the batch's titles, soft labels from a seed ensemble, one student."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tailguard import distill as D  # noqa: E402


def _batch(n_queries: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    nouns = ["drill", "lamp", "kettle", "towel", "hose", "chair"]
    rows = []
    for q in range(n_queries):
        noun = nouns[q % len(nouns)]
        for i in range(4):
            label = int(i < 2)
            other = nouns[(q + 1 + i) % len(nouns)]
            title = f"brand{q % 3} {noun if label else other} {rng.integers(100)}"
            rows.append((f"{noun} q{q}", f"i{q}-{i}", title, label))
    return pd.DataFrame(rows, columns=["query", "item_id", "item_title", "label"])


def test_mined_pairs_are_unjudged_lexical_matches_and_independent_of_row_order():
    train = _batch(12, seed=0)
    mined = D.mine_pairs(train, per_query=3)
    assert len(mined) > 0 and (mined.groupby("query").size() <= 3).all()
    judged = set(zip(train["query"], train["item_id"], strict=True))
    assert not judged & set(zip(mined["query"], mined["item_id"], strict=True))
    # every mined title shares a word with its query (BM25 > 0), and scores fall within a query
    for row in mined.itertuples():
        assert set(row.query.split()) & set(row.item_title.split())
    assert (mined.groupby("query")["bm25"].apply(lambda s: s.is_monotonic_decreasing)).all()
    shuffled = D.mine_pairs(train.sample(frac=1.0, random_state=3), per_query=3)
    pd.testing.assert_frame_equal(mined, shuffled)


def test_hostile_and_wordless_titles_do_not_break_mining():
    train = pd.DataFrame(
        {
            "query": ["<script>alert(1)</script> lamp", "lamp", "lamp"],
            "item_id": ["a", "b", "c"],
            "item_title": ["</script><img src=x onerror=alert(1)>", "...", "red lamp"],
            "label": [1, 0, 1],
        }
    )
    mined = D.mine_pairs(train, per_query=2)
    assert set(mined["item_id"]) <= {"b", "c"} and len(mined) >= 1


def test_student_frame_keeps_gold_targets_and_marks_mined_rows():
    train = _batch(4, seed=1)
    mined = D.mine_pairs(train, per_query=2)
    soft = np.linspace(0.1, 0.9, len(mined))
    frame = D.student_frame(train, mined, soft, config=None)
    gold, extra = frame[~frame["augmented"]], frame[frame["augmented"]]
    np.testing.assert_array_equal(gold["relevance"].to_numpy(), train["label"].to_numpy(dtype=float))
    np.testing.assert_allclose(extra["relevance"].to_numpy(), soft)
    assert (extra["label"].to_numpy() == (soft >= 0.5)).all()


def test_fewer_than_two_teachers_is_refused(tmp_path):
    pytest.importorskip("torch")
    from tailguard.model import TrainConfig

    with pytest.raises(D.DistillError, match="at least 2 teachers"):
        D.train_distilled(_batch(4, seed=0), TrainConfig(base="tiny"), tmp_path / "m", teachers=1)


def test_student_is_one_cross_encoder_with_provenance_and_no_teachers_left(tmp_path):
    pytest.importorskip("torch")
    from tailguard import model as M

    config = M.TrainConfig(base="tiny", epochs=1, max_steps=3, batch_size=16, seed=2, threads=1,
                           progress=False, tensorboard=False, valid_fraction=0.0)  # fmt: skip
    train = _batch(20, seed=4)
    result = D.train_distilled(train, config, tmp_path / "student", teachers=2, mined_per_query=2)
    folder = tmp_path / "student"
    assert result.model_dir == folder and (folder / "model.safetensors").is_file()
    assert not (folder / "ensemble.json").exists() and not (tmp_path / "student.teachers").exists()
    record = json.loads((folder / D.DISTILL_FILE).read_text())
    assert record["teachers"] == 2 and record["teacher_seeds"] == [2, 3]
    assert record["mined_rows"] == len(D.mine_pairs(train, 2)) > 0
    assert 0.0 < record["teacher_mean_probability"] < 1.0
    # 2 teachers x 3 steps + the student's 3 steps
    assert result.steps == 9
    scores = M.predict(folder, train)
    assert scores.shape == (len(train),) and np.isfinite(scores).all()


def test_distilled_recipe_reaches_the_trainer_and_clashing_shapes_are_refused(tmp_path):
    from tailguard import pipeline
    from tailguard import recipes as R
    from tailguard.pipeline import RetrainParams

    config = pipeline.train_config(RetrainParams(data="x.csv", recipe="distilled3"), pipeline.get_settings())
    assert (config["distill_teachers"], config["distill_mined_per_query"]) == (3, 4)
    assert "distill_teachers" not in R.split_config(config)[0]  # not a TrainConfig field
    book = tmp_path / "recipes.yaml"
    book.write_text("recipes:\n  x: {distill_teachers: 2, ensemble_size: 2}\n  y: {distill_teachers: 1}\n")
    with pytest.raises(R.RecipeError, match="not supported"):
        R.load_recipes(book)
    book.write_text("recipes:\n  y: {distill_teachers: 1}\n")
    with pytest.raises(R.RecipeError, match="at least 2"):
        R.load_recipes(book)
    with pytest.raises(R.RecipeError, match="not supported"):
        R.train_candidate(_batch(2, 0), {"hybrid": True, "distill_teachers": 2}, tmp_path / "m")
