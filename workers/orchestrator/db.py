"""Every connection the orchestrator makes, made here: one place to name its database role."""

from __future__ import annotations

from typing import Any, Final

from psycopg_pool import ConnectionPool

from workers.core.config import DatabaseRole, Settings
from workers.core.db import make_pool

ROLE: Final[DatabaseRole] = "orchestrator"


def pool(settings: Settings) -> ConnectionPool[Any]:
    """The orchestrator's pool (its event batches and its timer loop share it)."""
    return make_pool(settings, ROLE, name=ROLE)
