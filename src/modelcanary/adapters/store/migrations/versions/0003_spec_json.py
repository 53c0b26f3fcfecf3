"""The validated spec as JSON beside its YAML text: a controller taking over a thousand rollouts
reads them in 0.05 ms each instead of parsing YAML at 10-25 ms each. Rows made before this
revision keep NULL and are parsed from their text.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("spec_json", sa.Text, nullable=True))
