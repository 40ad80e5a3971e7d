"""The tests' type for a PostgreSQL connection (rows as tuples)."""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.Connection[tuple[Any, ...]]
