"""Queries on users and their known login addresses."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from flightdeck_auth.users.models import User, UserLoginIp
from flightdeck_common.db import utcnow
from flightdeck_common.repository import RepositoryBase
from flightdeck_common.upsert import insert_for


class UserRepository(RepositoryBase[User]):
    model = User

    async def by_username(self, username: str) -> User | None:
        return await self.session.scalar(select(User).where(User.username == username))

    async def by_origin_ref(self, origin_ref: str) -> User | None:
        return await self.session.scalar(select(User).where(User.origin_ref == origin_ref))

    async def count(self) -> int:
        return int(await self.session.scalar(select(func.count(User.id))) or 0)

    async def count_active_admins(self) -> int:
        statement = select(func.count(User.id)).where(User.role == "admin", User.is_active)
        return int(await self.session.scalar(statement) or 0)

    async def lock_active_admins(self) -> None:
        """Serialize changes to the set of active admins until the transaction ends.

        Two requests demoting two different admins would otherwise both count two admins
        and leave none. PostgreSQL: the active admins' rows are locked (in id order, so
        two lockers never deadlock); a waiting locker re-reads them once the other commits.
        SQLite has no row locks: a write takes its single database write lock instead.
        """
        active_admin = (User.role == "admin", User.is_active)
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(
                select(User.id).where(*active_admin).order_by(User.id).with_for_update()
            )
            return
        # A no-op write (updated_at kept as it is, not bumped by onupdate).
        await self.session.execute(
            update(User)
            .where(*active_admin)
            .values(role=User.role, updated_at=User.updated_at)
            .execution_options(synchronize_session=False)
        )

    async def page(
        self,
        *,
        role: str | None,
        is_active: bool | None,
        query: str | None,
        limit: int,
        cursor: str | None,
        username: str | None = None,
    ) -> tuple[list[User], str | None]:
        statement: Any = select(User)
        if username is not None:
            statement = statement.where(User.username == username)
        if role is not None:
            statement = statement.where(User.role == role)
        if is_active is not None:
            statement = statement.where(User.is_active == is_active)
        if query:
            escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            statement = statement.where(User.username.like(f"%{escaped}%", escape="\\"))
        return await self.paginate(
            statement, order_by=[User.id], limit=limit, cursor=cursor, descending=False
        )

    async def known_ip(self, user_id: int, ip: str) -> bool | None:
        """True/False whether ``ip`` was seen; None when the user never signed in."""
        seen = await self.session.scalar(
            select(UserLoginIp.id).where(UserLoginIp.user_id == user_id, UserLoginIp.ip == ip)
        )
        if seen is not None:
            return True
        any_ip = await self.session.scalar(
            select(UserLoginIp.id).where(UserLoginIp.user_id == user_id).limit(1)
        )
        return None if any_ip is None else False

    async def remember_ip(self, user_id: int, ip: str) -> None:
        # One statement: parallel first logins from one address end with one row (a
        # read-then-insert let all but one fail on the unique constraint).
        now = utcnow()
        await self.session.execute(
            insert_for(self.session, UserLoginIp)
            .values(user_id=user_id, ip=ip, first_seen_at=now, last_seen_at=now)
            .on_conflict_do_update(
                index_elements=[UserLoginIp.user_id, UserLoginIp.ip], set_={"last_seen_at": now}
            )
        )

    async def advance_totp_counter(self, user: User, counter: int) -> bool:
        """Record an accepted TOTP time step unless a concurrent request used it first."""
        previous = user.totp_last_counter
        condition = (
            User.totp_last_counter.is_(None)
            if previous is None
            else User.totp_last_counter < counter
        )
        result = await self.session.execute(
            update(User)
            .where(User.id == user.id, condition)
            .values(totp_last_counter=counter)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return False
        user.totp_last_counter = counter
        return True
