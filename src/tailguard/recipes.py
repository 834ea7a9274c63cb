"""Retrain recipes: named bundles of balancing, training, hybrid and ensemble options (policies/recipes.yaml).

A recipe fills the RetrainParams fields a run did not set (`apply_recipe`: the caller names them, else
those left at their defaults); what the run set itself wins. Dict fields (balance_options, train_options)
are merged key by key, the run's keys winning.
`hybrid`, `ensemble_size` and `distill_teachers` travel to the trainer inside the train config dict under
CANDIDATE_KEYS and pick the trainer in `train_candidate`: model.train, hybrid.train_hybrid, K seeds
(`train_ensemble`), or one student distilled from K seeds (distill.train_distilled).

An ensemble folder: members/0..K-1 (each a cross-encoder folder) + ensemble.json (JSON only, no pickle);
model.Scorer scores it as the mean of the members' probabilities.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_RECIPES_PATH = Path(__file__).resolve().parents[2] / "policies" / "recipes.yaml"
# Train-config keys that choose the candidate's shape, not TrainConfig fields: popped before TrainConfig.
CANDIDATE_KEYS = ("hybrid", "ensemble_size", "distill_teachers", "distill_mined_per_query")
ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_FORMAT = "tailguard.ensemble/1"
_MEMBER = re.compile(r"members/[0-9]{1,2}")
# The RetrainParams fields a recipe may fill (the rest say where the data is and how it is judged).
FILLABLE = ("balance", "balance_options", "base_model", "epochs", "max_steps", "batch_size", "learning_rate",
            "train_options")  # fmt: skip


class RecipeError(ValueError):
    """A recipes file that cannot be used, or an unknown recipe name; the message is one line."""


class Recipe(BaseModel):
    """One bundle; a field left None does not touch the run's value."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field("", description="What the recipe is for and the evidence behind it.")
    balance: str | None = Field(None, description="Balancing strategies (RetrainParams.balance).")
    balance_options: dict[str, Any] = Field(default_factory=dict, description="Balancing options.")
    base_model: str | None = Field(
        None, description="Base model; shipped recipes leave it to the deployment."
    )
    epochs: int | None = Field(None, ge=1, le=100)
    max_steps: int | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, ge=0)
    train_options: dict[str, Any] = Field(default_factory=dict, description="Further TrainConfig fields.")
    hybrid: bool = Field(False, description="Train a lexical-neural hybrid (tailguard.hybrid.train_hybrid).")
    ensemble_size: int = Field(
        1, ge=1, le=16, description="K cross-encoders, seeds seed..seed+K-1, averaged."
    )
    distill_teachers: int = Field(
        0, ge=0, le=8, description="K >= 2: one student trained on gold labels plus K seeds' soft labels."
    )
    distill_mined_per_query: int = Field(
        4, ge=1, le=100, description="Unjudged titles mined by BM25 per training query for the student."
    )

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        shapes = [self.hybrid, self.ensemble_size > 1, self.distill_teachers > 0]
        if sum(shapes) > 1:
            raise ValueError(
                "hybrid, ensemble_size > 1 and distill_teachers together are not supported (choose one)"
            )
        if self.distill_teachers == 1:
            raise ValueError("distill_teachers must be 0 (off) or at least 2 (an ensemble teaches)")
        clash = [k for k in CANDIDATE_KEYS if k in self.train_options]
        if clash:
            raise ValueError(f"train_options must not hold {clash}: use the recipe's own fields")
        return self

    def fields(self) -> dict[str, Any]:
        """The RetrainParams values this recipe sets (hybrid / ensemble_size folded into train_options)."""
        out = {k: getattr(self, k) for k in FILLABLE if getattr(self, k) not in (None, {})}
        extra = {"hybrid": True} if self.hybrid else {}
        extra |= {"ensemble_size": self.ensemble_size} if self.ensemble_size > 1 else {}
        if self.distill_teachers:
            extra |= {"distill_teachers": self.distill_teachers,
                      "distill_mined_per_query": self.distill_mined_per_query}  # fmt: skip
        if extra:
            out["train_options"] = {**self.train_options, **extra}
        return out


class RecipeBook(BaseModel):
    """policies/recipes.yaml: `recipes: {name: Recipe}`."""

    model_config = ConfigDict(extra="forbid")

    recipes: dict[str, Recipe]


def load_recipes(path: Path | None = None) -> dict[str, Recipe]:
    """Every recipe of the YAML file (default policies/recipes.yaml), validated; RecipeError otherwise.

    Each recipe's train_options are checked against model.TrainConfig (unknown keys refused) and its
    balance against balance.BalanceConfig, so a bad file fails on load, not in the middle of a run.
    """
    from tailguard.balance import BalanceConfig, BalanceConfigError

    path = Path(path or DEFAULT_RECIPES_PATH)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        book = RecipeBook.model_validate(raw)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise RecipeError(f"{path}: cannot read recipes: {' '.join(str(err).split())[:300]}") from None
    except ValidationError as err:
        raise RecipeError(f"{path}: {_one_line(err)}") from None
    for name, recipe in book.recipes.items():
        try:
            BalanceConfig.from_spec(recipe.balance or "none", seed=0, **recipe.balance_options)
        except BalanceConfigError as err:
            raise RecipeError(
                f"{path}: recipe {name!r}: balance: {' '.join(str(err).split())[:400]}"
            ) from None
        _check_train_options(path, name, recipe.train_options)
    return book.recipes


def _check_train_options(path: Path, name: str, options: dict[str, Any]) -> None:
    if not options:
        return
    from tailguard.model import TrainConfig  # imports torch (~2 s): only for recipes with train options

    try:
        TrainConfig(**options)
    except ValidationError as err:
        raise RecipeError(f"{path}: recipe {name!r}: train_options: {_one_line(err)}") from None


def _one_line(err: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:5]]
    return "; ".join(" ".join(p.split()) for p in parts)[:400]


def get_recipe(name: str, path: Path | None = None) -> Recipe:
    """The recipe called `name`; RecipeError naming the file and the known names when there is none."""
    recipes = load_recipes(path)
    if name not in recipes:
        where = Path(path or DEFAULT_RECIPES_PATH)
        raise RecipeError(
            f"unknown recipe {str(name)[:60]!r} in {where}; known: {', '.join(sorted(recipes))}"
        )
    return recipes[name]


def apply_recipe(
    values: dict[str, Any],
    defaults: dict[str, Any],
    path: Path | None = None,
    explicit: set[str] | frozenset[str] | None = None,
) -> dict[str, Any]:
    """`values` (a run's parameters) with `values['recipe']`'s bundle filling the fields the run did not set.

    explicit: the names of the fields the caller set (the CLI's flags and --config keys); the recipe fills
    every other field. Without it (the flow form, where every field arrives) a field counts as not set
    when it is absent or equal to `defaults[field]`, so a run cannot keep a default the recipe changes.
    Dict fields are merged either way (recipe keys first, the run's keys win). No recipe (absent or "")
    returns values unchanged. Raises RecipeError for an unknown recipe or a recipes file that cannot be used.
    """
    name = str(values.get("recipe") or "").strip()
    if not name:
        return values
    out = dict(values)
    for key, value in get_recipe(name, path).fields().items():
        given = values.get(key, defaults.get(key))
        if isinstance(value, dict):
            out[key] = {**value, **(given or {})}
        elif explicit is not None:
            if key not in explicit:
                out[key] = value
        elif key not in values or given == defaults.get(key):
            out[key] = value
    return out


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], bool, int]:
    """(TrainConfig fields, hybrid, ensemble_size) from a run's train config dict."""
    fields = {k: v for k, v in config.items() if k not in CANDIDATE_KEYS}
    return fields, bool(config.get("hybrid", False)), int(config.get("ensemble_size", 1) or 1)


def candidate_shape(config: dict[str, Any]) -> str:
    """What a run's train config trains: "plain" (one cross-encoder), "hybrid", "ensemble" (K > 1 seeds) or
    "distilled" (a student of K >= 2 seeds). Raises RecipeError when it asks for more than one of them."""
    _, hybrid, k = split_config(config)
    teachers = int(config.get("distill_teachers", 0) or 0)
    asked = (("hybrid", hybrid), ("ensemble", k > 1), ("distilled", teachers > 0))
    shapes = [name for name, on in asked if on]
    if len(shapes) > 1:
        raise RecipeError(
            "train config: hybrid, ensemble_size > 1 and distill_teachers together are not supported"
        )
    return shapes[0] if shapes else "plain"


def train_candidate(
    train_df: pd.DataFrame, config: dict[str, Any], out_dir: Path, **train_kwargs: Any
) -> Any:
    """Train the candidate the config asks for into out_dir; returns a model.TrainResult.

    Plain: model.train. hybrid: hybrid.train_hybrid (out_dir then holds hybrid.json; train_kwargs unused).
    ensemble_size K > 1: train_ensemble. distill_teachers K >= 2: distill.train_distilled (one student
    folder with distill.json). Raises RecipeError for more than one of these shapes at once.
    """
    from tailguard import model as M

    fields, _, k = split_config(config)
    tc = M.TrainConfig(**fields)
    shape = candidate_shape(config)
    if shape == "distilled":
        from tailguard.distill import train_distilled

        mined = int(config.get("distill_mined_per_query", 4) or 4)
        return train_distilled(train_df, tc, out_dir, int(config["distill_teachers"]), mined, **train_kwargs)
    if shape == "hybrid":
        from tailguard.hybrid import train_hybrid

        _, folder = train_hybrid(train_df, tc, out_dir)
        meta = json.loads((folder / M.TRAIN_META).read_text()) if (folder / M.TRAIN_META).exists() else {}
        return M.TrainResult(model_dir=folder, steps=int(meta.get("steps", 0)), history=[], samples_per_s=0.0)
    if shape == "ensemble":
        return train_ensemble(train_df, tc, out_dir, k, **train_kwargs)
    return M.train(train_df, tc, out_dir, **train_kwargs)


def train_ensemble(train_df: pd.DataFrame, config: Any, out_dir: Path, k: int, **train_kwargs: Any) -> Any:
    """K cross-encoders with seeds config.seed..config.seed+K-1 in out_dir/members/<i>, plus ensemble.json.

    Returns the first member's TrainResult with model_dir = out_dir, steps summed over members.
    Checkpoints (train_kwargs['checkpoint_dir']) get one sub-folder per member so resumes stay apart.
    """
    from tailguard import model as M

    out_dir = Path(out_dir)
    results = []
    for i in range(k):
        kwargs = dict(train_kwargs)
        if kwargs.get("checkpoint_dir"):
            kwargs["checkpoint_dir"] = Path(kwargs["checkpoint_dir"]) / f"member-{i}"
        member = config.model_copy(update={"seed": config.seed + i})
        results.append(M.train(train_df, member, out_dir / "members" / str(i), **kwargs))
    manifest = {
        "format": ENSEMBLE_FORMAT,
        "combine": "mean_probability",
        "members": [f"members/{i}" for i in range(k)],
        "seeds": [config.seed + i for i in range(k)],
    }
    (out_dir / ENSEMBLE_FILE).write_text(json.dumps(manifest, indent=1))
    first = results[0]
    return first.model_copy(update={"model_dir": out_dir, "steps": sum(r.steps for r in results)})


def ensemble_members(model_dir: Path) -> list[Path] | None:
    """The member folders a model folder's ensemble.json names, or None when it has none.

    Raises RecipeError naming the file when it is not JSON, has another format, or names a member outside
    members/<n> (no '..', no absolute path) or a missing folder.
    """
    path = Path(model_dir) / ENSEMBLE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise RecipeError(f"{path}: not JSON: {str(err)[:200]}") from None
    members = data.get("members") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != ENSEMBLE_FORMAT or not isinstance(members, list):
        raise RecipeError(f"{path}: expected format {ENSEMBLE_FORMAT!r} with a members list")
    bad = [m for m in members if not isinstance(m, str) or not _MEMBER.fullmatch(m)]
    missing = [m for m in members if m not in bad and not (Path(model_dir) / m).is_dir()]
    if not members or bad or missing:
        raise RecipeError(
            f"{path}: members must be existing members/<n> folders; bad {bad[:3]}, missing {missing[:3]}"
        )
    return [Path(model_dir) / m for m in members]
