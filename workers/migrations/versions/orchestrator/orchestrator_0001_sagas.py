"""The saga orchestrator's schema: saga instances, their steps, timers, events heard, outbox."""

from workers.migrations.steps import run_sql_file

revision = "orchestrator_0001"
down_revision = None
branch_labels = ("orchestrator",)
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
