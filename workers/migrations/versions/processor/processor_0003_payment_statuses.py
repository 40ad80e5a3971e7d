"""The processor's record knows every payment status (manual capture's among them)."""

from workers.migrations.steps import run_sql_file

revision = "processor_0003"
down_revision = "processor_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
