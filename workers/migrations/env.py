"""Alembic's environment: run the pending migrations on the connection the runner opened.

The runner holds that connection's transaction: every migration of one run commits together, or
none does. Offline mode (SQL scripts instead of a connection) is not offered.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo

from workers.migrations.runner import VERSION_TABLE, VERSION_TABLE_SCHEMA


def _run() -> None:
    config = context.config
    applied: list[str] = config.attributes["applied"]

    def record(
        ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Any
    ) -> None:
        applied.extend(step.up_revision_ids)

    context.configure(
        connection=config.attributes["connection"],
        version_table=VERSION_TABLE,
        version_table_schema=VERSION_TABLE_SCHEMA,
        transaction_per_migration=False,
        on_version_apply=record,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("FlowPay's migrations run on a database connection only")
_run()
