"""One typed settings object: defaults, then a YAML file, then HOMEFEED_* environment variables.

Components never read these globals: the CLI loads Settings once and passes explicit arguments down.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from components.data.world.config import WorldConfig
from pipelines.params import PipelineParams

CONFIG_ENV = "HOMEFEED_CONFIG"
DEFAULT_CONFIG_FILE = Path("homefeed.yaml")


class ServingSettings(BaseModel):
    """Where `homefeed serve` listens; the demo and tests pick free ports instead."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    retrieval_port: int = Field(8500, ge=1, le=65535)
    ranking_port: int = Field(8501, ge=1, le=65535)
    homefeed_port: int = Field(8502, ge=1, le=65535)
    candidates: int = Field(200, ge=1, le=1000, description="retrieval candidates the homefeed entry ranks")
    feed_size: int = Field(10, ge=1, description="pins the demo shows per user")


class Settings(BaseSettings):
    model_config = ConfigDict(env_prefix="HOMEFEED_", env_nested_delimiter="__", extra="forbid")

    workspace: Path = Path("workspace")  # every artifact of a local run lands under here
    world: WorldConfig = WorldConfig()
    pipeline: PipelineParams = PipelineParams()
    serving: ServingSettings = ServingSettings()

    @property
    def runs_dir(self) -> Path:
        return self.workspace / "runs"

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs (see load_settings); the environment overrides it.
        return env_settings, init_settings


def load_settings(config: Path | None = None) -> Settings:
    """Settings from `config`, else $HOMEFEED_CONFIG, else ./homefeed.yaml when it exists, else defaults."""
    path = config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if path is None and DEFAULT_CONFIG_FILE.exists():
        path = DEFAULT_CONFIG_FILE
    data: dict = {}
    if path is not None:
        if not Path(path).exists():
            raise FileNotFoundError(f"settings file {path} does not exist")
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"settings file {path} must hold a mapping at the top level")
        data = loaded
    return Settings(**data)
