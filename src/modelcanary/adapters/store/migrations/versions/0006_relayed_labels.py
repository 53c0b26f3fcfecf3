"""Labels in transit between gateways: a label sent to a gateway that did not make the prediction
waits here until the gateway that did (named by the prediction id's prefix) takes it.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "relayed_labels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("issuer", sa.String(32), nullable=False),
        sa.Column("prediction_id", sa.String(64), nullable=False),
        sa.Column("label", sa.Integer, nullable=False),
        sa.Column("via", sa.String(100), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
    )
    op.create_index("ix_relayed_labels_issuer", "relayed_labels", ["issuer"])
