"""Where the local stack keeps its files, all under ``dev.home`` (default ``.flowpay``)."""

from __future__ import annotations

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
