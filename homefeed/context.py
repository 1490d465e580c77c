"""What every command shares: the console and the lazily loaded settings."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError
from rich.console import Console

from homefeed.config import Settings, load_settings

console = Console()


class Ctx:
    def __init__(self, config: Path | None):
        self._config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self._config)
            except (ValidationError, ValueError, FileNotFoundError) as exc:
                raise click.UsageError(f"invalid settings: {exc}") from exc
        return self._settings
