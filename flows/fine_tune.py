"""The fine-tune flow: its own deployment on the `gpu` work pool, started by retrain with run_deployment.

The training frame and the trained model travel through the store, never through memory, so the run can
happen on another machine. Checkpoints go to the store too: a retried run resumes where the last one died.
Everything it writes (model, checkpoints) lives under `runs/<run>/fine-tune/`: `output_prefix` and
`checkpoint_prefix` are deployment parameters anyone with API access can set, and pointed at
`models/<name>/versions/<v>/` they used to overwrite (and, through checkpoint pruning, delete) files of an
immutable version. Run it locally:
`python -m tailguard_flows.fine_tune --data-key runs/<id>/train.parquet
--output-prefix runs/<id>/fine-tune/model`.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow
from tailguard_tasks import training

# runs/<run>/fine-tune[/<part>...]: parts are plain names (no '', '.', '..'), so no key leaves the prefix.
_PART = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
FINE_TUNE_PREFIX = re.compile(rf"runs/{_PART}/fine-tune(?:/{_PART})*")


def fine_tune_prefix(run_id: str) -> str:
    """Where the fine-tune run for retrain run `run_id` writes its model: runs/<run_id>/fine-tune/model."""
    return check_prefix("run id", f"runs/{run_id}/fine-tune/model")


def check_prefix(name: str, prefix: str) -> str:
    """Return `prefix` when it lies under runs/<run>/fine-tune/; ValueError naming the parameter otherwise."""
    if not FINE_TUNE_PREFIX.fullmatch(prefix):
        raise ValueError(
            f"{name} {prefix!r} is not under runs/<run>/fine-tune/: the fine-tune flow writes only there, "
            "never into models/ (a version is written once, by the registry)"
        )
    return prefix


@flow(name="fine-tune", log_prints=True)
def fine_tune(
    data_key: str,
    config: dict[str, Any],
    output_prefix: str,
    store_uri: str = "",
    checkpoint_prefix: str = "",
    ray_workers: int = 0,
) -> str:
    """Train on the store's `data_key` with TrainConfig fields `config`; returns the model's store prefix.

    ray_workers > 0 (or TAILGUARD_RAY_TRAIN_WORKERS when 0): the unchanged model.train under Ray Train on
    that many workers of the cluster at TAILGUARD_RAY_ADDRESS (this worker runs inside the cluster), with
    checkpoints in the store so a group restarted after a worker died resumes; else in this process.
    TAILGUARD_RAY_JOB_ADDRESS on the worker (an operator's setting, not a run parameter: the job runs with
    the cluster's credentials) submits that training as a Ray job to the cluster's dashboard and waits, so
    this worker need not run on a Ray node. Raises ValueError when that address is set but no Ray Train
    workers were asked for (the run would otherwise train here without saying so).
    """
    from tailguard.settings import get_settings

    settings = get_settings()
    store_uri = store_uri or settings.store_uri
    output_prefix = check_prefix("output_prefix", output_prefix)
    checkpoint_prefix = check_prefix("checkpoint_prefix", checkpoint_prefix or f"{output_prefix}-checkpoints")
    workers = ray_workers or settings.ray_train_workers
    if settings.ray_job_address and workers <= 0:
        raise ValueError(
            "TAILGUARD_RAY_JOB_ADDRESS is set but no Ray Train workers were asked for: set ray_workers (or "
            "TAILGUARD_RAY_TRAIN_WORKERS), or unset the address to train in this process"
        )
    if workers > 0:
        facts = training.fine_tune_on_ray(
            store_uri, data_key, config, output_prefix, checkpoint_prefix, workers
        )
        job = f" (Ray job {facts['job_id']})" if "job_id" in facts else ""
        print(
            f"Ray Train{job}: {facts['workers']} workers, GPU {facts['use_gpu']}, "
            f"{len(facts['model_keys'])} files"
        )
        return output_prefix
    with tempfile.TemporaryDirectory(prefix="tailguard-fine-tune-") as tmp:
        work = Path(tmp)
        train_df = training.fetch_training_frame(store_uri, data_key, work)
        training.restore_checkpoint(store_uri, checkpoint_prefix, work / "checkpoints")
        result = training.fine_tune(
            train_df, config, work / "model", work / "checkpoints", store_uri, checkpoint_prefix
        )
        training.publish_training_summary(result, work / "model")
        return training.upload_model(store_uri, work / "model", output_prefix)


def main() -> None:
    """Command line:
    `python -m tailguard_flows.fine_tune --data-key KEY --output-prefix PREFIX [--config JSON]`."""
    from tailguard.runtime import configure_embedded

    configure_embedded()  # a local run: make PREFECT_HOME now
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-key", required=True, help="Store key of the training frame (parquet or csv).")
    parser.add_argument(
        "--output-prefix",
        required=True,
        help="Store prefix of the model folder, under runs/<run>/fine-tune/.",
    )
    parser.add_argument("--config", default="{}", help="TrainConfig fields as JSON.")
    parser.add_argument(
        "--store", default="", help="Store URI; empty uses TAILGUARD_STORE / the local default."
    )
    args = parser.parse_args()
    print(fine_tune(args.data_key, json.loads(args.config), args.output_prefix, store_uri=args.store))


if __name__ == "__main__":
    main()
