"""split auth's internal audience by capability: revocation feed, user administration

``flightdeck:auth-internal`` let its holder read the revocation feed AND create users of
any role. Accounts that held it keep the revocation feed; only the built-in ``admin``
account (registrations, user administration) also gets ``flightdeck:auth-users``. Any
other account that administers users must be given that audience again, on purpose.

Revision ID: auth_2026_12_08_audiences
Revises: auth_0002
Create Date: 2026-12-08
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_2026_12_08_audiences"
down_revision: str | None = "auth_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "flightdeck:auth-internal"
REVOCATIONS = "flightdeck:auth-revocations"
USERS = "flightdeck:auth-users"

_accounts = sa.table(
    "service_accounts",
    sa.column("id", sa.Integer()),
    sa.column("client_id", sa.String()),
    sa.column("audiences", sa.String()),
)


def _rewrite(new_audiences: Callable[[str, set[str]], set[str]]) -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_accounts.c.id, _accounts.c.client_id, _accounts.c.audiences)
    ).all()
    for account_id, client_id, audiences in rows:
        current = set(audiences.split())
        new = new_audiences(client_id, current)
        if new != current:
            connection.execute(
                sa.update(_accounts)
                .where(_accounts.c.id == account_id)
                .values(audiences=" ".join(sorted(new)))
            )


def _split(client_id: str, audiences: set[str]) -> set[str]:
    if OLD not in audiences:
        return audiences
    return (audiences - {OLD}) | {REVOCATIONS} | ({USERS} if client_id == "admin" else set())


def _join(client_id: str, audiences: set[str]) -> set[str]:
    if not audiences & {REVOCATIONS, USERS}:
        return audiences
    return (audiences - {REVOCATIONS, USERS}) | {OLD}


def upgrade() -> None:
    _rewrite(_split)


def downgrade() -> None:
    _rewrite(_join)
