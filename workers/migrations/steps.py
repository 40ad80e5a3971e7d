"""What a migration module runs: the SQL file beside it, in the transaction of the whole run."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import op

from workers.migrations.runner import MigrationError


def run_sql_file(module_file: str) -> None:
    """Execute the ``.sql`` file named as the calling migration module, as one script.

    It runs on the driver's connection, inside the transaction of the whole run: the statements
    go to PostgreSQL as written, with no bind-parameter parsing of colons or percent signs.
    """
    path = Path(module_file).with_suffix(".sql")
    driver = op.get_bind().connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    try:
        driver.execute(path.read_bytes())
    except psycopg.Error as exc:
        raise MigrationError(f"migration {path.stem} failed: {exc}".strip()) from exc
