"""Typed settings, read from the environment (prefix TAILGUARD_) each time they are asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where `tailguard demo` keeps its state unless given --home (relative to the CWD, like `home`).
DEMO_HOME = Path(".tailguard/demo")


class Settings(BaseSettings):
    """Where tailguard keeps its state and which store and model it works on."""

    model_config = SettingsConfigDict(env_prefix="TAILGUARD_", extra="ignore", populate_by_name=True)

    home: Path = Field(
        Path(".tailguard"),
        description="State folder: local store, Prefect home, caches. Relative paths resolve from the CWD.",
    )
    store: str = Field(
        "",
        description="Artifact store: empty for <home>/store, a local folder, or s3://bucket/prefix.",
    )
    model_name: str = Field("relevance", description="Name of the model in the registry.")
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch intra-op threads; 0 keeps torch's default. On 2 shared cores 1 thread was "
        "fastest (2,570 vs 1,035 samples/s with the other core busy).",
    )
    offline: bool = Field(
        True,
        validation_alias=AliasChoices("TAILGUARD_OFFLINE", "TAILGUARD_HF_OFFLINE", "HF_HUB_OFFLINE"),
        description="Keep the Hugging Face hub off: models load from local folders only "
        "(local_files_only=True) and a hub name is refused at once, since an offline hub lookup stalled "
        "~46 s before failing. Read from TAILGUARD_OFFLINE, else HF_HUB_OFFLINE; 0 / false turns it off.",
    )
    training_pool: str = Field(
        "",
        description="When set (e.g. 'gpu'), retrain starts the fine-tune deployment on that pool "
        "with run_deployment; empty trains in-process.",
    )
    promotion_lock_timeout_s: float = Field(
        600.0,
        ge=0,
        description="Seconds a promotion or rollback waits for the model's Prefect lock (promote-<model>) "
        "before giving up; 0 waits forever.",
    )
    fine_tune_deployment: str = Field(
        "fine-tune/fine-tune", description="Deployment run for training when training_pool is set."
    )
    max_input_bytes: int = Field(
        1 << 30,
        gt=0,
        description="Largest decompressed size of one input file (CSV text after gunzip; Parquet decoded "
        "column bytes). Reading a 120 MiB CSV peaked at 536 MiB over the interpreter (4.5x), so the "
        "1 GiB default needs ~5 GiB per reader; larger files are refused (rule size_limit).",
    )
    max_batch_bytes: int = Field(
        4 << 30,
        gt=0,
        description="Largest decompressed size of a whole batch, summed over its files (the same bytes as "
        "max_input_bytes counts), checked before any file is loaded: 4 GiB by default, ~18 GiB of reader "
        "memory at 4.5x. Many files each under max_input_bytes are refused past it (rule size_limit).",
    )
    max_rows: int = Field(
        10_000_000,
        gt=0,
        description="Most rows one input file, and one batch, may hold (checked from Parquet metadata "
        "before loading, counted while streaming CSV); ~0.5 GiB per 1M rows of catalogue text.",
    )
    engine: Literal["pandas", "ray"] = Field(
        "pandas",
        description="Engine of the data stages (load, validate, rebalance): pandas in one process, or Ray "
        "Data on a cluster (tailguard[ray]) for batches past one machine.",
    )
    ray_address: str = Field(
        "",
        description="Ray cluster to join (e.g. 127.0.0.1:6379 or 'auto' inside the cluster); empty starts "
        "a local Ray on loopback on demand.",
    )
    ray_job_address: str = Field(
        "",
        description="Fine-tune deployment with ray_train_workers > 0: submit the training as a Ray job to "
        "this dashboard address (http(s)://ray-head:8265, no credentials in it), so its driver runs inside "
        "the cluster with the cluster's own environment; empty: this process joins ray_address as the "
        "driver (it must then run on a Ray node).",
    )
    ray_job_python: str = Field(
        "python",
        description="The Python of the Ray job's entrypoint on the cluster's nodes (tailguard installed).",
    )
    ray_train_workers: int = Field(
        0,
        ge=0,
        description="Fine-tune deployment: train under Ray Train on this many workers of the cluster at "
        "ray_address (one GPU each when the cluster has them); 0 trains in the flow's process.",
    )
    quarantine_copy_bytes: int = Field(
        64 << 20,
        ge=0,
        description="Bytes of each refused file copied into quarantine/; larger files keep only this "
        "prefix (their size and sha256 stay in validation.json).",
    )

    @field_validator("offline", mode="before")
    @classmethod
    def _flag(cls, value: object) -> object:
        """Read the flag as huggingface_hub reads HF_HUB_OFFLINE (1/ON/YES/TRUE); empty means the default."""
        if not isinstance(value, str):
            return value
        word = value.strip().upper()
        if word in ("", "1", "ON", "YES", "TRUE"):
            return True
        if word in ("0", "OFF", "NO", "FALSE"):
            return False
        raise ValueError(f"offline flag {value!r}: use 1 (offline, the default) or 0 (hub allowed)")

    @property
    def store_uri(self) -> str:
        """The store URI with the embedded default filled in."""
        return self.store or str((self.home / "store").resolve())

    def existing_store(self) -> tuple[str, str]:
        """(store URI, note) for commands that read what earlier runs wrote.

        The configured store (TAILGUARD_STORE or TAILGUARD_HOME) is used as is. With neither set and no
        <home>/store folder, the store `tailguard demo` leaves at .tailguard/demo/store (relative to the
        CWD, like home) is used when it exists, and the note says so; otherwise the note is empty.
        """
        if self.store or "home" in self.model_fields_set or (self.home / "store").exists():
            return self.store_uri, ""
        demo = (DEMO_HOME / "store").resolve()
        if demo.is_dir():
            return str(demo), (
                f"note: no store configured and none at {(self.home / 'store').resolve()}; using the demo's "
                f"store {demo} (set TAILGUARD_HOME or TAILGUARD_STORE to choose another)"
            )
        return self.store_uri, ""

    @property
    def cache_dir(self) -> Path:
        """Folder for downloaded base models and scratch files."""
        return (self.home / "cache").resolve()


def get_settings() -> Settings:
    """Read settings now (never cached at import, so tests and flows can change the environment)."""
    return Settings()
