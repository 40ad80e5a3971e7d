"""Named queries: each service keeps its SQL in one ``queries.sql`` file.

A query starts with a line ``-- name: <query_name>``; the lines up to the next such line are
its text. ``load_queries(__package__)`` gives a mapping from name to text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from types import MappingProxyType

from psycopg import sql

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str) -> Mapping[str, str]:
    """Split a named-query file into {name: query}."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return MappingProxyType(queries)


@cache
def load_queries(package: str) -> Mapping[str, sql.SQL]:
    """The named queries of ``<package>/queries.sql``, ready for ``cursor.execute``."""
    text = resources.files(package).joinpath("queries.sql").read_text(encoding="utf-8")
    return MappingProxyType({k: sql.SQL(v) for k, v in parse_queries(text).items()})
