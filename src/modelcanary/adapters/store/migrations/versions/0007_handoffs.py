"""What a stopping gateway held for labels to come (its predictions, the labels waiting to
mature), kept until another gateway adopts it.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "handoffs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("via", sa.String(100), nullable=False),
        sa.Column("rows", sa.Text, nullable=False),
        sa.Column("handed_at", sa.Float, nullable=False),
    )
