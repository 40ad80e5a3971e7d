"""What every command needs: the settings, loaded once from --config and the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from workers.core.config import Settings, config_path, load_settings


@dataclass
class State:
    config_file: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_file)
        return self._settings

    @property
    def resolved_config_file(self) -> Path | None:
        return config_path(self.config_file)


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def settings(ctx: typer.Context) -> Settings:
    return state(ctx).settings
