"""Refunds with an unknown outcome go to the reconciler; the late-charge watch runs from a fixed
time of failure."""

from workers.migrations.steps import run_sql_file

revision = "processor_0002"
down_revision = "processor_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
