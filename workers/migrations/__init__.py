"""Versioned migrations: one numbered history per PostgreSQL schema, applied by Alembic.

``versions/<history>/<history>_<NNNN>_<slug>.sql`` holds a migration's SQL and the ``.py`` of the
same name its place in the history (revision ``<history>_<NNNN>``, revising the number before).
Each service's schema is one history (``api``, ``processor``, ``ledger``, ``notifier``, ``ops``);
what spans schemas (roles, grants, extensions) gets a history of its own whose migrations the
others name in ``depends_on``. ``runner.migrate`` applies every pending one in one transaction;
schema.sql is the same schema written as one readable whole (a test checks the two agree).
"""
