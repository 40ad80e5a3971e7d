"""The orchestrator's commands the processor executed, for deduping redeliveries."""

from workers.migrations.steps import run_sql_file

revision = "processor_0004"
down_revision = "processor_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
