"""Baseline: the processor schema as it was when migrations began."""

from workers.migrations.steps import run_sql_file

revision = "processor_0001"
down_revision = None
branch_labels = ("processor",)
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
