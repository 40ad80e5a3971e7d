"""Where the local stack keeps its files, all under ``dev.home`` (default ``.flowpay``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from workers.core.config import Settings


@dataclass(frozen=True)
class StackPaths:
    home: Path

    @classmethod
    def of(cls, settings: Settings) -> StackPaths:
        return cls(settings.dev.home.resolve())

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def pg_data(self) -> Path:
        return self.home / "pg" / "data"

    @property
    def pg_socket_dir(self) -> Path:
        return self.home / "pg" / "run"

    @property
    def pg_log(self) -> Path:
        return self.logs / "postgres.log"

    @property
    def kafka_dir(self) -> Path:
        return self.home / "kafka"

    @property
    def kafka_data(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def kafka_log(self) -> Path:
        return self.logs / "kafka.log"

    @property
    def kafka_pid(self) -> Path:
        return self.kafka_dir / "kafka.pid"

    @property
    def supervisor_pid(self) -> Path:
        return self.home / "supervisor.pid"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    @property
    def roles_state(self) -> Path:
        return self.home / "roles.json"

    def role_log(self, role: str) -> Path:
        return self.logs / f"{role}.log"


def write_private(path: Path, data: bytes) -> None:
    """Replace a file with one only its owner can read.

    Created so (never readable by others, even briefly) beside it, then renamed over it: a
    process reading it meanwhile sees the old file or the new one, never none or half.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    temporary.replace(path)
