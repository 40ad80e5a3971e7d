"""Apply the migrations and say where a database stands: Alembic, driven from FlowPay's code.

Every history's revisions live under ``versions/``; Alembic records each history's head in
``public.alembic_version`` (outside every service's schema, so that replay's swaps of the ledger
schema never touch it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from workers.core.db import SCHEMA_LOCK
from workers.core.db_roles import apply_grants, assume_owner
from workers.core.errors import DatabaseError

HOME = Path(__file__).resolve().parent
VERSIONS = HOME / "versions"
VERSION_TABLE = "alembic_version"
VERSION_TABLE_SCHEMA = "public"

# <history>_<NNNN>_<slug>: the file of revision <history>_<NNNN>.
_FILE = re.compile(r"(?P<history>[a-z]+)_(?P<number>\d{4})_[a-z0-9_]+")


class MigrationError(DatabaseError):
    """A migration could not be applied, or the histories are not laid out as they must be."""


@dataclass(frozen=True)
class Migration:
    history: str
    revision: str
    description: str
    applied: bool


def migrate(url: str, *, locations: Sequence[Path] = (VERSIONS,)) -> list[Migration]:
    """Apply every pending migration, then the roles' privileges (``db_roles.apply_grants``),
    all in one transaction; returns the migrations applied.

    A failure rolls the whole run back: the database stays as it was. Concurrent runs wait for
    each other (the advisory lock replay's swap also takes), so the second finds nothing to do.
    """
    script = _script(locations)
    config = script_config(locations)
    config.attributes["applied"] = []
    try:
        with _transaction(url) as connection:
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            driver = connection.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            assume_owner(driver, local=True)
            pending = [m for m in _migrations(script, connection) if not m.applied]
            if pending:
                config.attributes["connection"] = connection
                command.upgrade(config, "heads")
            # After every run, not only one that applied something: a role `db init` made
            # since, or a grant made by hand, is set right too.
            apply_grants(driver)
    except MigrationError as exc:
        raise MigrationError(f"no migration was applied: {exc}") from exc
    done = set(config.attributes["applied"])
    return [replace(m, applied=True) for m in pending if m.revision in done]


def status(url: str, *, locations: Sequence[Path] = (VERSIONS,)) -> list[Migration]:
    """Every migration, by history and number, each marked applied or not."""
    script = _script(locations)
    with _transaction(url) as connection:
        return _migrations(script, connection)


def script_config(locations: Sequence[Path]) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HOME))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join(str(p) for p in locations))
    config.set_main_option("recursive_version_locations", "true")
    return config


def _script(locations: Sequence[Path]) -> ScriptDirectory:
    script = ScriptDirectory.from_config(script_config(locations))
    try:
        problems = layout_problems(list(script.walk_revisions()))
    except (CommandError, RevisionError, KeyError) as exc:
        raise MigrationError(f"the migrations cannot be read: {exc}") from exc
    if problems:
        raise MigrationError("the migrations break the numbering rules: " + "; ".join(problems))
    return script


def layout_problems(scripts: Sequence[Script]) -> list[str]:
    """What breaks the rules: per history, files numbered from 0001 with no gap, each revising
    the one before, the first naming its history as its branch label."""
    problems: list[str] = []
    numbered: dict[str, dict[int, Script]] = {}
    for script in scripts:
        path = Path(script.path)
        match = _FILE.fullmatch(path.stem)
        if match is None or match["history"] != path.parent.name:
            problems.append(f"{path.name}: not named <its directory>_<NNNN>_<slug>.py")
            continue
        revision = f"{match['history']}_{match['number']}"
        if script.revision != revision:
            problems.append(f"{path.name}: its revision is {script.revision!r}, not {revision!r}")
        numbered.setdefault(match["history"], {})[int(match["number"])] = script
    for history, by_number in numbered.items():
        problems.extend(_chain_problems(history, by_number))
    return problems


def _chain_problems(history: str, by_number: dict[int, Script]) -> Iterator[str]:
    for number in range(1, max(by_number) + 1):
        script = by_number.get(number)
        expected = None if number == 1 else f"{history}_{number - 1:04d}"
        if script is None:
            yield f"{history}: no migration numbered {number:04d}"
        elif script.down_revision != expected:
            yield f"{script.revision}: revises {script.down_revision!r}, not {expected!r}"
        elif number == 1 and set(script.branch_labels) != {history}:
            yield f"{script.revision}: its branch label must be {history!r}"


def _migrations(script: ScriptDirectory, connection: Connection) -> list[Migration]:
    context = MigrationContext.configure(
        connection,
        opts={"version_table": VERSION_TABLE, "version_table_schema": VERSION_TABLE_SCHEMA},
    )
    heads = context.get_current_heads()
    try:
        applied = {s.revision for s in script.iterate_revisions(heads, "base")}
    except (CommandError, RevisionError) as exc:
        raise MigrationError(
            f"the database is at {', '.join(sorted(heads))}, and some of that is unknown to this"
            " FlowPay: a newer version migrated it (run that version, or restore a backup)"
        ) from exc
    migrations = [
        Migration(Path(s.path).parent.name, s.revision, s.doc, s.revision in applied)
        for s in script.walk_revisions()
    ]
    return sorted(migrations, key=lambda m: (m.history, m.revision))


@contextmanager
def _transaction(url: str) -> Iterator[Connection]:
    """One connection in one transaction, committed when the block ends without an error."""
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(url, connect_timeout=10),
        poolclass=NullPool,
    )
    try:
        with engine.begin() as connection:
            yield connection
    except SQLAlchemyError as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        raise MigrationError(str(cause).strip()) from exc
    finally:
        engine.dispose()
