"""Typed settings, read from the environment (prefix TAILGUARD_) each time they are asked for."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where tailguard keeps its state and which store and model it works on."""

    model_config = SettingsConfigDict(env_prefix="TAILGUARD_", extra="ignore")

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
        "fastest (STACK_NOTES: 2,570 vs 1,035 samples/s with one core busy).",
    )
    hf_offline: bool = Field(True, description="Keep Hugging Face hub access off (HF_HUB_OFFLINE=1).")
    training_pool: str = Field(
        "",
        description="When set (e.g. 'gpu'), retrain starts the fine-tune deployment on that pool "
        "with run_deployment; empty trains in-process.",
    )
    fine_tune_deployment: str = Field(
        "fine-tune/fine-tune", description="Deployment run for training when training_pool is set."
    )

    @property
    def store_uri(self) -> str:
        """The store URI with the embedded default filled in."""
        return self.store or str((self.home / "store").resolve())

    @property
    def cache_dir(self) -> Path:
        """Folder for downloaded base models and scratch files."""
        return (self.home / "cache").resolve()


def get_settings() -> Settings:
    """Read settings now (never cached at import, so tests and flows can change the environment)."""
    return Settings()
