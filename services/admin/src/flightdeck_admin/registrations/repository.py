"""SQL of registration requests. Decisions are conditional UPDATEs: of two concurrent
deciders exactly one matches the row, the other sees a rowcount of 0."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update

from flightdeck_admin.registrations.models import RegistrationRequest, RequestStatus
from flightdeck_common.repository import RepositoryBase

OPEN_STATUSES = (RequestStatus.PENDING.value, RequestStatus.APPROVING.value)


class RegistrationRepository(RepositoryBase[RegistrationRequest]):
    model = RegistrationRequest

    async def open_request_for(self, username: str) -> RegistrationRequest | None:
        """The pending or approving request for ``username``, if any."""
        return await self.session.scalar(
            select(RegistrationRequest).where(
                RegistrationRequest.username == username,
                RegistrationRequest.status.in_(OPEN_STATUSES),
            )
        )

    async def signature_used(self, signature_sha256: str) -> bool:
        found = await self.session.scalar(
            select(RegistrationRequest.id).where(
                RegistrationRequest.signature_sha256 == signature_sha256
            )
        )
        return found is not None

    async def page(
        self, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[RegistrationRequest], str | None]:
        """Newest first; the (status, id) index serves the status filter."""
        statement = select(RegistrationRequest)
        if status is not None:
            statement = statement.where(RegistrationRequest.status == status)
        return await self.paginate(
            statement, order_by=[RegistrationRequest.id], limit=limit, cursor=cursor
        )

    async def claim_for_approval(
        self, request_id: int, *, claimed_at: datetime, abandoned_before: datetime
    ) -> bool:
        """pending (or approving with a claim older than ``abandoned_before``) -> approving."""
        return await self._update(
            request_id,
            or_(
                RegistrationRequest.status == RequestStatus.PENDING.value,
                and_(
                    RegistrationRequest.status == RequestStatus.APPROVING.value,
                    RegistrationRequest.claimed_at < abandoned_before,
                ),
            ),
            status=RequestStatus.APPROVING.value,
            claimed_at=claimed_at,
        )

    async def release_claim(
        self, request_id: int, *, claimed_at: datetime, keep_claim_time: bool
    ) -> bool:
        """Our approving claim -> pending again. ``keep_claim_time`` leaves ``claimed_at``
        set: the approval broke off and the account may exist at auth."""
        return await self._update(
            request_id,
            self._claimed_by(claimed_at),
            status=RequestStatus.PENDING.value,
            claimed_at=claimed_at if keep_claim_time else None,
        )

    async def complete_approval(
        self, request_id: int, *, claimed_at: datetime, decision: dict[str, Any]
    ) -> bool:
        """Our approving claim -> approved, with the decision's fields."""
        return await self._update(
            request_id,
            self._claimed_by(claimed_at),
            status=RequestStatus.APPROVED.value,
            claimed_at=None,
            **decision,
        )

    async def reject(self, request_id: int, *, decision: dict[str, Any]) -> bool:
        """pending -> rejected, with the decision's fields."""
        return await self._update(
            request_id,
            RegistrationRequest.status == RequestStatus.PENDING.value,
            status=RequestStatus.REJECTED.value,
            **decision,
        )

    @staticmethod
    def _claimed_by(claimed_at: datetime) -> Any:
        return and_(
            RegistrationRequest.status == RequestStatus.APPROVING.value,
            RegistrationRequest.claimed_at == claimed_at,
        )

    async def _update(self, request_id: int, condition: Any, **values: Any) -> bool:
        result = await self.session.execute(
            update(RegistrationRequest)
            .where(RegistrationRequest.id == request_id, condition)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return getattr(result, "rowcount", 0) == 1
