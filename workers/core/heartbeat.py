"""Liveness for roles without an HTTP port: the loop touches a file, a health check reads it."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


class Heartbeat:
    """Touches ``<tmp>/flowpay-<role>.alive`` at most once per ``every_s`` seconds."""

    def __init__(self, role: str, every_s: float = 1.0) -> None:
        self.path = heartbeat_path(role)
        self.every_s = every_s
        self._last = 0.0

    def beat(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self.path.touch()
            self._last = now


def heartbeat_path(role: str) -> Path:
    return Path(tempfile.gettempdir()) / f"flowpay-{role}.alive"


def heartbeat_age(role: str) -> float | None:
    """Seconds since the role's last beat, or None if it never beat here."""
    try:
        return time.time() - heartbeat_path(role).stat().st_mtime
    except FileNotFoundError:
        return None
