"""Failed deliveries on an index of their own: the notifier's gauges count them every second."""

from workers.migrations.steps import run_sql_file

revision = "notifier_0005"
down_revision = "notifier_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
