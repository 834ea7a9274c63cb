"""Retrain recipes (policies/recipes.yaml), the hybrid recipe through the pipeline, seed ensembles."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tailguard import pipeline  # noqa: E402
from tailguard import recipes as R  # noqa: E402
from tailguard.pipeline import RetrainParams, params_error  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NOUNS = ["drill", "lamp", "kettle", "towel", "hose", "chair", "boots", "charger"]


def batch(n_queries: int, seed: int) -> pd.DataFrame:
    """Two relevant titles (naming the query's noun) and four others per query, with graded relevance."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        noun = NOUNS[int(rng.integers(len(NOUNS)))]
        for i in range(6):
            label = int(i < 2)
            other = [n for n in NOUNS if n != noun][int(rng.integers(len(NOUNS) - 1))]
            title = f"brand{q % 5} {noun if label else other} {rng.integers(100)}"
            rows.append((f"{noun} q{q}", f"i{q}-{i}", title, label, 3.0 if label else 1.0 + (i % 3) / 3))
    return pd.DataFrame(rows, columns=["query", "item_id", "item_title", "label", "relevance"])


def write_book(tmp_path: Path, recipes: dict) -> Path:
    path = tmp_path / "recipes.yaml"
    path.write_text(yaml.safe_dump({"recipes": recipes}))
    return path


def test_shipped_recipes_are_valid_and_baseline_is_retrain_weekly():
    recipes = R.load_recipes()
    assert {"baseline", "graded", "graded_pairwise", "hybrid", "ensemble3"} <= set(recipes)
    assert recipes["hybrid"].hybrid and recipes["ensemble3"].ensemble_size == 3
    assert recipes["graded_pairwise"].train_options["pairwise_weight"] > 0
    weekly = next(d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
                  if d["name"] == "retrain-weekly")["parameters"]  # fmt: skip
    base = recipes["baseline"]
    assert (base.balance, base.epochs, base.batch_size, base.learning_rate, base.train_options) == (
        weekly["balance"], weekly["epochs"], weekly["batch_size"], weekly["learning_rate"],
        weekly["train_options"],
    )  # fmt: skip


@pytest.mark.parametrize("name", ["nope", "../../etc/passwd", "<script>x</script>\nline2", "Baseline"])
def test_an_unknown_recipe_is_one_line_naming_the_known_ones(name):
    with pytest.raises(ValidationError) as info:
        RetrainParams(data="x.csv", recipe=name)
    message = params_error(info.value)
    assert "\n" not in message and "unknown recipe" in message and "recipes.yaml" in message
    assert "baseline" in R.load_recipes()
    assert "known: " + ", ".join(sorted(R.load_recipes())) in message  # every shipped recipe, sorted


@pytest.mark.parametrize(
    ("recipe", "needle"),
    [
        ({"epoch": 3}, "epoch: Extra inputs are not permitted"),  # a typo of a field
        ({"train_options": {"lrr": 0.1}}, "train_options: lrr"),  # unknown TrainConfig key
        ({"ensemble_size": 0}, "ensemble_size"),
        ({"hybrid": True, "ensemble_size": 2}, "not supported"),
        ({"balance": "random_sideways"}, "balance"),
        ({"train_options": {"hybrid": True}}, "recipe's own fields"),
    ],
)
def test_a_bad_recipes_file_is_refused_naming_file_recipe_and_key(tmp_path, recipe, needle):
    path = write_book(tmp_path, {"mine": recipe})
    with pytest.raises(R.RecipeError) as info:
        R.load_recipes(path)
    assert str(path) in str(info.value) and needle in str(info.value) and "\n" not in str(info.value)


def test_unknown_top_level_key_and_broken_yaml_are_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("recipes: {}\ndefault: baseline\n")
    with pytest.raises(R.RecipeError, match="default: Extra inputs"):
        R.load_recipes(path)
    path.write_text("recipes: [unclosed\n")
    with pytest.raises(R.RecipeError, match="cannot read recipes"):
        R.load_recipes(path)


def test_a_recipe_fills_only_the_fields_left_at_their_defaults():
    params = RetrainParams(
        data="x.csv", recipe="graded", epochs=2, balance="none", train_options={"early_stopping_patience": 0}
    )
    assert (params.epochs, params.balance) == (2, "none")  # set by the run: kept
    assert (params.batch_size, params.learning_rate) == (128, 1e-4)  # left at defaults: the recipe's
    assert params.train_options == {"early_stopping_patience": 0, "target": "graded", "graded_loss": "bce"}
    again = RetrainParams(**params.model_dump())  # the manifest's params re-validate to the same run
    assert again == params
    plain = RetrainParams(data="x.csv")
    assert (plain.epochs, plain.batch_size, plain.train_options) == (3, 32, {})


def test_fields_the_caller_names_as_explicit_are_never_filled_even_at_their_default():
    values = {"data": "x.csv", "recipe": "baseline", "epochs": 3, "train_options": {"loss": "weighted_bce"}}
    defaults = {n: f.get_default(call_default_factory=True) for n, f in RetrainParams.model_fields.items()}
    filled = R.apply_recipe(values, defaults, explicit={"data", "recipe", "epochs", "train_options"})
    assert (filled["epochs"], filled["batch_size"]) == (3, 128)  # set (3 = default) kept; left out filled
    assert filled["train_options"] == {"early_stopping_patience": 2, "loss": "weighted_bce"}  # merged
    assert R.apply_recipe(values, defaults)["epochs"] == 8  # no explicit: equal to the default is filled
    params = RetrainParams.model_validate(values, context={"explicit": {"epochs"}})
    assert (params.epochs, params.batch_size, params.learning_rate) == (3, 128, 1e-4)
    assert RetrainParams.model_validate(values).epochs == 8  # no context: the flow form's rule


def test_recipe_fields_reach_the_train_config():
    params = RetrainParams(data="x.csv", recipe="ensemble3", seed=7)
    config = pipeline.train_config(params, pipeline.get_settings())
    fields, hybrid, k = R.split_config(config)
    assert (hybrid, k, fields["seed"], fields["lr"], fields["early_stopping_patience"]) == (
        False, 3, 7, 1e-4, 2
    )  # fmt: skip
    assert R.split_config(
        pipeline.train_config(RetrainParams(data="x", recipe="hybrid"), pipeline.get_settings())
    )[1]


def tiny_options() -> dict:
    return {"threads": 1, "progress": False, "tensorboard": False, "valid_fraction": 0.0}


def test_hybrid_recipe_writes_a_hybrid_version_folder_through_the_pipeline_stage(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("bm25s")
    from tailguard import hybrid as H
    from tailguard import model as M

    params = RetrainParams(data="x.csv", recipe="hybrid", epochs=1, max_steps=4, batch_size=16,
                           train_options=tiny_options())  # fmt: skip
    ctx = pipeline.RunContext(settings=pipeline.get_settings(), run_id="t", work_dir=tmp_path)
    train = batch(40, seed=0)
    result = pipeline.train_in_process(train, pipeline.train_config(params, ctx.settings), ctx)
    folder = Path(result.model_dir)
    assert (folder / H.HYBRID_FILE).is_file() and (folder / "model.safetensors").is_file()
    assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("*.pt"))
    eval_df = batch(6, seed=1)
    plain = M.Scorer(folder, plain=True)(eval_df)
    expected = H.load_hybrid(folder).combine(eval_df, plain)
    np.testing.assert_allclose(M.predict(folder, eval_df), expected, rtol=1e-6)


@pytest.fixture(scope="module")
def ensemble_folder(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("ens") / "model"
    config = {"base": "tiny", "epochs": 1, "max_steps": 3, "batch_size": 16, "seed": 5, "ensemble_size": 2,
              **tiny_options()}  # fmt: skip
    result = R.train_candidate(batch(30, seed=2), config, out)
    return Path(result.model_dir)


def test_ensemble_round_trip_scores_the_mean_of_its_members(ensemble_folder, tmp_path):
    from tailguard import model as M

    manifest = json.loads((ensemble_folder / R.ENSEMBLE_FILE).read_text())
    assert manifest["members"] == ["members/0", "members/1"] and manifest["seeds"] == [5, 6]
    assert not list(ensemble_folder.rglob("*.pkl"))
    eval_df = batch(5, seed=3)
    members = [M.Scorer(ensemble_folder / m)(eval_df) for m in manifest["members"]]
    assert not np.allclose(members[0], members[1])  # different seeds, different models
    copy = tmp_path / "copied"
    shutil.copytree(ensemble_folder, copy)  # what the registry stores and fetches: the folder as is
    scores = M.predict(copy, eval_df)
    assert scores.dtype == np.float32 and scores.shape == (len(eval_df),)
    np.testing.assert_allclose(scores, (members[0].astype(np.float64) + members[1]) / 2, rtol=1e-6)


@pytest.mark.parametrize(
    "edit",
    [
        {"members": ["../../etc"]},
        {"members": ["/abs/members/0"]},
        {"members": ["members/7"]},  # names a folder that is not there
        {"members": []},
        {"format": "pickle"},
    ],
)
def test_a_broken_ensemble_json_is_refused_naming_the_file(ensemble_folder, tmp_path, edit):
    copy = tmp_path / "m"
    shutil.copytree(ensemble_folder, copy)
    data = json.loads((copy / R.ENSEMBLE_FILE).read_text())
    (copy / R.ENSEMBLE_FILE).write_text(json.dumps({**data, **edit}))
    with pytest.raises(R.RecipeError, match="ensemble.json"):
        R.ensemble_members(copy)
    (copy / R.ENSEMBLE_FILE).write_text("{not json")
    with pytest.raises(R.RecipeError, match="not JSON"):
        R.ensemble_members(copy)


# The tail study's bundles as bench/tail_quality.py defined them before they became recipes:
# name -> (balance spec, balance options, train options).
STUDY_BUNDLES = {
    "none": ("none", {}, {}),
    "random_under": ("random_under", {"ratio": 1.0}, {}),
    "class_balanced": ("class_balanced", {"beta": 0.9999}, {"loss": "weighted_bce"}),
    "focal": ("none", {}, {"loss": "focal", "loss_params": {"gamma": 2.0}}),
    "logit_adjust": ("none", {}, {"loss": "logit_adjust", "loss_params": {"tau": 1.0}}),
    "query_reweight": (
        "popularity_reweight",
        {"reweight_key": "query", "alpha": 0.5},
        {"loss": "weighted_bce"},
    ),
    "augment": ("augment", {"aug_copies": 4}, {}),
    "random_under+augment": ("augment,random_under", {"ratio": 1.0, "aug_copies": 4}, {}),
    "augment_rows": ("augment", {"aug_copies": 4, "aug_rows": "tail_query_rows"}, {}),
}


def _tail_quality():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tail_quality", REPO / "bench" / "tail_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_tail_study_strategy_is_a_recipe_with_its_bundle():
    """bench/tail_quality.py trains each strategy through its recipe: same balancing and loss as before."""
    tq = _tail_quality()
    recipes = R.load_recipes()
    # the study runs any recipe by name; its own grid keeps the round-one bundles
    assert set(STUDY_BUNDLES) <= set(tq.STRATEGIES + tq.EXTRA_STRATEGIES) == set(recipes)
    args = tq._parser().parse_args(["--lr", "1e-4", "--epochs", "8", "--batch-size", "128"])
    for name, (spec, balance_options, train_options) in STUDY_BUNDLES.items():
        params = tq.run_params(name, 2, args)
        assert (params.balance, params.balance_options) == (spec, balance_options), name
        config = pipeline.train_config(params, pipeline.get_settings())
        expected = {
            "base": "minilm-l6", "epochs": 8, "batch_size": 128, "seed": 2, "max_steps": 0, "lr": 1e-4,
            "max_length": 48, "threads": 0, "device": "auto", "early_stopping_patience": 1,
            "valid_fraction": 0.1, "progress": False, "tensorboard": False, **train_options,
        }  # fmt: skip
        assert config == expected, name
