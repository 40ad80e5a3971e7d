"""SQLite basics: the named queries and how a connection is opened."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Final

from workers.core.sql import parse_queries


def _load_queries() -> Mapping[str, str]:
    # Plain strings: workers.core.sql.load_queries wraps them for psycopg, not for sqlite3.
    text = resources.files("workers.gateway_sim").joinpath("queries.sql").read_text("utf-8")
    return parse_queries(text)


Q: Final = _load_queries()


def connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode, ``synchronous=NORMAL``, rows readable by column name."""
    # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE), never
    # implicitly by the sqlite3 module. check_same_thread=False only so that a connection can be
    # closed after its thread has ended; each connection is used by one thread alone.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.executescript(Q["connection_setup"])
    return conn
