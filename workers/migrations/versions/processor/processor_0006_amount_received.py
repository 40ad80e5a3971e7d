"""What a manual capture took, beside the amount the payment was made for."""

from workers.migrations.steps import run_sql_file

revision = "processor_0006"
down_revision = "processor_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
