"""Tasks of the fine-tune deployment: fetch the frame, train with checkpoints in the store, upload."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from tailguard_tasks.retry import io_stage, stage

if TYPE_CHECKING:  # torch loads with tailguard.model (~2 s): only for annotations
    from tailguard.model import TrainResult


@io_stage
def fetch_training_frame(store_uri: str, data_key: str, work_dir: Path):
    """Download the staged training frame (parquet or csv) from the store and read it."""
    from tailguard.contract import read_frame
    from tailguard.store import open_store

    local = Path(work_dir) / Path(data_key).name
    open_store(store_uri).get_file(data_key, local)
    # The contract's one reader: exact strings in text columns, typed label/price/ts, strict field counts.
    return read_frame(local, required=("query", "item_id", "item_title", "label"))


@io_stage
def restore_checkpoint(store_uri: str, checkpoint_prefix: str, checkpoint_dir: Path) -> str | None:
    """Bring back the newest checkpoint of an earlier, interrupted attempt (None: start fresh)."""
    from tailguard.model import pull_checkpoint
    from tailguard.store import open_store

    found = pull_checkpoint(open_store(store_uri), checkpoint_prefix, checkpoint_dir)
    return found.name if found else None


@stage
def fine_tune(
    train_df, config: dict, out_dir: Path, checkpoint_dir: Path, store_uri: str, checkpoint_prefix: str
):
    """Train; log each epoch to Prefect and push every checkpoint to the store."""
    from tailguard.model import push_checkpoint
    from tailguard.recipes import train_candidate
    from tailguard.store import open_store

    logger, store = get_run_logger(), open_store(store_uri)
    # The same trainer choice as in-process runs: plain, hybrid or seed ensemble (the recipe's keys).
    result = train_candidate(
        train_df,
        config,
        out_dir,
        checkpoint_dir=checkpoint_dir,
        on_epoch=lambda row: logger.info("epoch %s", {k: v for k, v in row.items()}),
        on_checkpoint=lambda folder: push_checkpoint(store, checkpoint_prefix, folder),
    )
    return result


@stage
def fine_tune_on_ray(
    store_uri: str,
    data_key: str,
    config: dict,
    output_prefix: str,
    checkpoint_prefix: str,
    workers: int,
) -> dict:
    """Train under Ray Train on `workers` cluster workers (as a Ray job when TAILGUARD_RAY_JOB_ADDRESS is
    set); model and checkpoints go to the store."""
    from tailguard.engine import train_on_ray

    return train_on_ray(store_uri, data_key, config, output_prefix, checkpoint_prefix, workers)


@io_stage
def upload_model(store_uri: str, model_dir: Path, output_prefix: str) -> str:
    """Put the model folder in the store; the retrain flow reads it from there."""
    from tailguard.store import open_store

    open_store(store_uri).upload_dir(Path(model_dir), output_prefix)
    return output_prefix


@stage
def publish_training_summary(result: TrainResult, model_dir: Path) -> None:
    """Per-epoch table and the loss/validation plot as a markdown artifact."""
    rows = "\n".join(
        f"| {h['epoch']} | {h['step']} | {h['train_loss']:.4f} | {h['valid_auc']} | "
        f"{h['samples_per_s']:.0f} |"
        for h in result.history
    )
    plot = Path(model_dir) / "training_curves.png"
    image = (
        f"\n\n![curves](data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()})"
        if plot.exists()
        else ""
    )
    create_markdown_artifact(
        f"| epoch | step | train loss | valid AUC | samples/s |\n|---|---|---|---|---|\n{rows}{image}",
        key="fine-tune-summary",
        description="Training curves",
    )
