"""Registration requests: filed by visitors, decided by admins with a signed approval."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from flightdeck_admin.db import Base
from flightdeck_common.db import TimestampMixin, UTCDateTime


class RequestStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVING = "approving"  # claimed by an approval that is creating the account at auth
    APPROVED = "approved"
    REJECTED = "rejected"


class RegistrationRequest(TimestampMixin, Base):
    __tablename__ = "registration_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), nullable=False)
    # The applicant's argon2id hash until the request is decided, then cleared (None).
    password_hash: Mapped[str | None] = mapped_column(String(512), nullable=True)
    reason: Mapped[str] = mapped_column(String(1000), nullable=False, default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=RequestStatus.PENDING)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Set while an approval creates the account (status "approving"); a claim older than a
    # few minutes is abandoned (the process died) and may be taken again. Left set on a
    # pending request when an approval broke off not knowing whether auth made the account.
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    decided_by_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decision_note: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    signed_at: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The decision's signature (base64, as sent) and the public key it verified with, so
    # the decision can be verified again later; its SHA-256 (hex) is accepted once.
    signature: Mapped[str | None] = mapped_column(Text, nullable=True)
    signature_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    key_fingerprint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    public_key_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        # One open request per username (a pending or approving one).
        Index(
            "uq_registration_requests_open_username",
            "username",
            unique=True,
            postgresql_where=text("status IN ('pending', 'approving')"),
            sqlite_where=text("status IN ('pending', 'approving')"),
        ),
        Index("ix_registration_requests_status_id", "status", "id"),
    )
