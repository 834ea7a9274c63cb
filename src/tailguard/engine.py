"""Engine choice for the data stages: pandas (one process, the default) or Ray (tailguard[ray], a cluster).

`TAILGUARD_ENGINE=pandas|ray` (or an explicit argument, e.g. the CLI's `--engine`) picks the engine and
`TAILGUARD_RAY_ADDRESS` the cluster. Both engines give the same results on the same batch; ray is imported
only by tailguard.ray_engine, and only when the ray engine is chosen. The flow calls `validate_batch` and
`rebalance_batch` (one library call each, as tasks do).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

if TYPE_CHECKING:
    from tailguard.metrics import Evaluation

Engine = Literal["pandas", "ray"]
ENGINES: tuple[str, ...] = ("pandas", "ray")


class EngineError(ValueError):
    """An unknown engine name, or the ray engine without tailguard[ray] installed."""


def choose(engine: str | None = None) -> Engine:
    """The engine to use: `engine` when given, else settings.engine (TAILGUARD_ENGINE), else pandas.

    Raises EngineError for a name other than pandas/ray, or for ray when the `ray` package is missing.
    """
    from tailguard.settings import get_settings

    name = (engine or get_settings().engine or "pandas").strip().lower()
    if name not in ENGINES:
        raise EngineError(f"engine {name!r} is not one of {', '.join(ENGINES)}")
    if name == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise EngineError("the ray engine needs Ray: pip install 'tailguard[ray]'")
    return name  # type: ignore[return-value]


def ray_session(address: str | None = None) -> dict:
    """Join TAILGUARD_RAY_ADDRESS (or `address`), or start a local Ray on loopback; returns cluster facts."""
    from tailguard import ray_engine
    from tailguard.settings import get_settings

    return ray_engine.connect(address if address is not None else get_settings().ray_address or None)


def load_batch(uri: str | Path, columns: Any = None, engine: str | None = None) -> Any:
    """data.load_batch on the chosen engine: a pandas frame, or a ray_engine.RayBatch (same rows, columns).

    Raises ContractError for a batch that breaks the data contract, on either engine.
    """
    if choose(engine) == "pandas":
        from tailguard.data import load_batch as load

        return load(uri, columns)
    from tailguard import ray_engine

    ray_session()
    return ray_engine.load(uri, columns)


def validate_batch(
    data: Any,
    source: str,
    previous_stats: dict | None = None,
    policy: Any = None,
    suite_dir_path: str | Path | None = None,
) -> Any:
    """validation.validate_frame on a pandas frame or a RayBatch: the same ValidationResult either way."""
    if isinstance(data, pd.DataFrame):
        from tailguard.validation import validate_frame

        return validate_frame(data, source, previous_stats, policy, suite_dir_path)
    from tailguard import ray_engine

    return ray_engine.validate(data, source, previous_stats, policy, suite_dir_path)


def rebalance_batch(data: Any, config: Any) -> tuple[Any, dict]:
    """balance.rebalance(..., compact=True) on a pandas frame, or its Ray form on a RayBatch.

    The compact frame (distinct rows + `repeats`) has the same rows and per-class counts on both engines;
    on Ray the report carries counts only (rows, positives before and after), not bucket statistics.
    """
    if isinstance(data, pd.DataFrame):
        from tailguard.balance import rebalance

        return rebalance(data, config, compact=True)
    from tailguard import ray_engine

    return ray_engine.rebalance(data, config)


def score_frame(model_dir: Path, frame: pd.DataFrame, engine: str | None = None) -> Any:
    """model.predict on the chosen engine: float32 probabilities aligned with frame's rows.

    On ray the rows are scored by cluster actors (one GPU each where present, ray_engine.score_frame); a
    hybrid model (its BM25 reads a query's rows as one candidate set) is scored in this process.
    Raises ModelError as model.predict does.
    """
    from tailguard.model import predict

    if choose(engine) == "pandas" or frame.empty or (Path(model_dir) / "hybrid.json").exists():
        return predict(model_dir, frame)  # an empty frame: predict's ModelError, the same on both engines
    from tailguard import ray_engine

    ray_session()
    return ray_engine.score_frame(frame, {"score": model_dir})["score"]


def to_pandas(data: Any) -> pd.DataFrame:
    """A pandas frame of a stage's output (a RayBatch is collected to the driver: small outputs only)."""
    return data if isinstance(data, pd.DataFrame) else data.to_pandas()


def evaluate_batch(
    eval_data: Any, train_data: Any, score_columns: dict[str, str], config: Any = None
) -> Evaluation:
    """metrics.json of score columns ({"candidate": col, "production": col}) on a frame or a RayBatch.

    Both engines end in metrics.evaluate on the same rows, so the result is the same. Raises ValueError for
    a missing or non-numeric score column (naming it and a few rows) and as metrics.evaluate does.
    """
    if isinstance(eval_data, pd.DataFrame):
        from tailguard.metrics import evaluate

        missing = [c for c in score_columns.values() if c not in eval_data.columns]
        if missing:
            raise ValueError(f"eval frame: no score column(s) {missing}; has {list(eval_data.columns)[:12]}")
        scores = {m: pd.to_numeric(eval_data[c]).to_numpy(dtype=float) for m, c in score_columns.items()}
        if not isinstance(train_data, pd.DataFrame):  # a RayBatch: only its counts leave the cluster
            from tailguard import ray_engine

            train_data = ray_engine.train_counts(train_data)
        return evaluate(eval_data, train_data, scores, config)
    from tailguard import ray_engine

    return ray_engine.evaluate(eval_data, train_data, score_columns, config)


def train_on_ray(
    store_uri: str,
    data_key: str,
    config: dict,
    output_prefix: str,
    checkpoint_prefix: str,
    workers: int,
) -> dict:
    """model.train under Ray Train on `workers` workers of the cluster (TAILGUARD_RAY_ADDRESS), reading the
    staged frame at `data_key` and writing the model under output_prefix, checkpoints under
    checkpoint_prefix, all in the store at store_uri. Returns ray_engine.train's facts.

    With TAILGUARD_RAY_JOB_ADDRESS set it is submitted as a Ray job to that dashboard and waited for
    (ray_engine.submit_train; an operator's setting, never a run parameter: the job runs with the cluster's
    credentials); unset: this process is the driver, so it must run inside the cluster (a
    Prefect worker on a Ray node): Ray's remote client is unreliable for training. Raises EngineError for
    a config whose recipe trains more than one model
    (hybrid, ensemble, distillation: single-process trainers) and ray_engine.RayEngineError when training
    fails more than once.
    """
    from tailguard import ray_engine
    from tailguard.recipes import candidate_shape
    from tailguard.store import key_uri, open_store

    shape = candidate_shape(config)
    if shape != "plain":
        raise EngineError(
            f"Ray Train fine-tunes one cross-encoder; the config asks for a {shape} candidate (several "
            "models): train it with ray_train_workers 0"
        )
    from tailguard.settings import get_settings

    settings = get_settings()
    data = key_uri(open_store(store_uri), data_key)
    if settings.ray_job_address:
        return ray_engine.submit_train(
            settings.ray_job_address, data, config, store_uri, output_prefix, checkpoint_prefix, workers,
            python=settings.ray_job_python,
        )  # fmt: skip
    ray_session()
    return ray_engine.train(data, config, store_uri, output_prefix, checkpoint_prefix, workers=workers)
