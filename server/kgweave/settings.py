"""Typed settings: one object, read from ``KGWEAVE_*`` environment variables.

Settings are read when :func:`get_settings` is called, never at import time, so tests and the
CLI can change the environment first.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """kgweave settings. Every field is documented: ``kgweave --help`` and docs/ show them."""

    model_config = SettingsConfigDict(env_prefix="KGWEAVE_", extra="ignore")

    datasets_dir: Path | None = Field(
        default=None,
        description="Folder whose sub-folders are datasets (`--dataset NAME` finds NAME/ here).",
    )
    data_dir: Path = Field(
        default=Path.home() / ".kgweave",
        description="kgweave's own data folder: dataset download cache, models, logs.",
    )
    device: str = Field(
        default="auto",
        description="Torch device for training and scoring: `auto` (CUDA when present), `cpu`, "
        "`cuda`, `cuda:1`, ...",
    )
    offline: bool = Field(
        default=False,
        description="Never try to download well-known datasets; only local copies are used.",
    )
    download_timeout_s: float = Field(
        default=20.0, description="Timeout in seconds for one dataset download request."
    )

    @property
    def graph_dir(self) -> Path:
        """Folder of the embedded FalkorDB server: data, log, pid and port."""
        return self.data_dir / "graph"

    @property
    def cache_dir(self) -> Path:
        """Where downloaded datasets are kept."""
        return self.data_dir / "datasets"


def get_settings() -> Settings:
    """Read the settings from the environment now."""
    return Settings()
