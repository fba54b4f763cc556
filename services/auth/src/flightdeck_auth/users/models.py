"""Users and the addresses they signed in from."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from flightdeck_auth.db import Base
from flightdeck_common.db import TimestampMixin, UTCDateTime, utcnow


class User(TimestampMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    # TOTP: sealed secret; pending until confirmed; last accepted time step (replay guard).
    totp_secret: Mapped[str | None] = mapped_column(String(512), nullable=True)
    totp_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    totp_last_counter: Mapped[int | None] = mapped_column(Integer, nullable=True)
    approval_key_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    approval_key_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    approval_key_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Idempotency key of the call that created the user (e.g. "registration:42" from admin).
    origin_ref: Mapped[str | None] = mapped_column(String(100), unique=True, nullable=True)

    @property
    def mfa_enabled(self) -> bool:
        return self.totp_confirmed_at is not None


class UserLoginIp(Base):
    """Addresses a user has signed in from (the risk policy's "new IP" signal)."""

    __tablename__ = "user_login_ips"
    __table_args__ = (UniqueConstraint("user_id", "ip"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    ip: Mapped[str] = mapped_column(String(64), nullable=False)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
