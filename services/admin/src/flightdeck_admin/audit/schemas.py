"""API shapes of the audit log: the ingest batch, chain rows, verification, decisions."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Self

from fastapi import Query
from fastapi.openapi.models import Example
from pydantic import BaseModel, Field, model_validator

from flightdeck_admin.audit.chain import VerifyResult
from flightdeck_admin.audit.models import AuditEventRow
from flightdeck_common.outbox import AuditEvent, canonical_json
from flightdeck_common.pagination import MAX_CURSOR_LENGTH, MAX_PAGE_SIZE
from flightdeck_common.params import UtcDatetime

MAX_INGEST_BATCH = 500
# Query filters compared with stored text: NUL cannot be stored (PostgreSQL refuses it).
NO_NUL_PATTERN = r"^[^\x00]*$"
_COLUMN_TEXT_FIELDS = ("id", "type", "service", "actor", "subject", "ip", "request_id")
# Deeper data could be stored but not served back (pydantic serializes ~250 levels at most).
MAX_DATA_DEPTH = 64
# The JSON nesting an ingest batch may have before it is parsed: {"events": [{"data": ...}]}
# around data of MAX_DATA_DEPTH, with room above it so that data just too deep gets the
# validator's precise 422 (the limit only keeps absurd depths from the parser).
MAX_BATCH_JSON_DEPTH = 2 * MAX_DATA_DEPTH


class AuditEventIn(AuditEvent):
    """An audit event as a service submits it (its outbox payload), checked to be storable."""

    id: str = Field(
        min_length=1, max_length=36, description="Unique event id (the idempotency key)."
    )
    type: str = Field(min_length=1, max_length=100, examples=["pipeline.run.created"])
    service: str = Field(
        min_length=1,
        max_length=40,
        examples=["pipeline"],
        description=(
            "Must be the submitting service account's client id (403 `audit_service_mismatch` "
            "otherwise): a service writes events under its own name only."
        ),
    )
    occurred_at: UtcDatetime

    @model_validator(mode="after")
    def _storable(self) -> Self:
        for name in _COLUMN_TEXT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if "\x00" in value:
                raise ValueError(f"{name} must not contain NUL characters")
            if not _is_encodable(value):
                raise ValueError(f"{name} is not valid Unicode text")
        if _nesting_depth(self.data) > MAX_DATA_DEPTH:
            raise ValueError(f"data is nested more than {MAX_DATA_DEPTH} levels deep")
        if not _is_encodable(canonical_json(self.data)):
            raise ValueError("data contains text that is not valid Unicode")
        return self


def _nesting_depth(value: Any) -> int:
    """How many objects/arrays deep ``value`` goes (walked without recursion)."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DATA_DEPTH:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _is_encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates, which JSON escapes allow
        return False
    return True


class AuditEventBatch(BaseModel):
    """What ``flightdeck_common.outbox_relay.http_sender`` posts."""

    events: list[AuditEventIn] = Field(min_length=1, max_length=MAX_INGEST_BATCH)


AUDIT_BATCH_EXAMPLES: dict[str, Example] = {
    "batch": {
        "summary": "Two events from the pipeline service's outbox",
        "value": {
            "events": [
                {
                    "id": "0b7f4c1e-3f5a-4d8e-9c21-6a1d2e3f4b5c",
                    "type": "pipeline.run.upserted",
                    "service": "pipeline",
                    "actor": "alice",
                    "subject": "acme/shop#1042",
                    "occurred_at": "2026-11-25T10:04:30Z",
                    "request_id": "9d4c6a0e2b7f4e1a",
                    "data": {"status": "completed", "conclusion": "success"},
                },
                {
                    "id": "5e2a9b7c-1d4f-4a3b-8e6d-0c9f8a7b6e5d",
                    "type": "pipeline.deployment.recorded",
                    "service": "pipeline",
                    "actor": "alice",
                    "subject": "acme/shop@production",
                    "occurred_at": "2026-11-25T10:06:00Z",
                    "data": {"sha": "9fceb02d0ae598e95dc970b74767f19372d61af8"},
                },
            ]
        },
    }
}


class AuditAppendOutcome(BaseModel):
    accepted: int = Field(description="Events added to the chain.")
    duplicates: int = Field(
        description="Events skipped: already stored, or repeated in the batch (by id)."
    )


def stored_data(text: str) -> dict[str, Any]:
    """The ``data`` column as an object (a hand-edited, unreadable value is shown as is)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {"unreadable": text}
    return value if isinstance(value, dict) else {"unreadable": text}


class AuditEventRead(BaseModel):
    """One row of the chain."""

    seq: int = Field(description="Position in the chain (1, 2, 3...); the SSE event id.")
    id: str
    type: str
    service: str
    source: str = Field(description="Client id of the service account that submitted it.")
    actor: str | None
    subject: str | None
    occurred_at: datetime
    recorded_at: datetime
    ip: str | None
    request_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: AuditEventRow) -> AuditEventRead:
        return cls(
            seq=row.seq,
            id=row.event_id,
            type=row.type,
            service=row.service,
            source=row.source,
            actor=row.actor,
            subject=row.subject,
            occurred_at=row.occurred_at,
            recorded_at=row.recorded_at,
            ip=row.ip,
            request_id=row.request_id,
            data=stored_data(row.data),
            prev_hash=row.prev_hash,
            hash=row.hash,
        )


class ChainVerification(BaseModel):
    valid: bool
    checked: int = Field(description="Rows found intact before the first broken one.")
    first_invalid_id: str | None = Field(
        description="Event id of the first broken row (null when that row is missing)."
    )
    first_invalid_seq: int | None = Field(description="Position where the chain breaks.")
    first_invalid_source: str | None = Field(
        None, description="Client id of the account that submitted the first broken row."
    )
    reason: str | None
    published_head_matched: bool | None = Field(
        None,
        description=(
            "Given a published head: whether the chain still contains it (false: rewritten)."
        ),
    )

    @classmethod
    def from_result(cls, result: VerifyResult) -> ChainVerification:
        return cls(
            valid=result.valid,
            checked=result.checked,
            first_invalid_id=result.first_invalid_id,
            first_invalid_seq=result.first_invalid_seq,
            first_invalid_source=result.first_invalid_source,
            reason=result.reason,
            published_head_matched=result.anchor_matched,
        )


class SignedChainHead(BaseModel):
    """The chain head signed by admin's audit signing key: keep it outside admin's database
    and pass it to `GET /admin/audit-events/verify` later to detect a rewrite."""

    seq: int = Field(description="Position of the last row (0: empty chain).")
    hash: str = Field(description="Hash of that row.")
    signed_at: str = Field(description="When it was signed (ISO 8601 UTC, as signed).")
    signature: str = Field(description='Base64 Ed25519 signature of "{seq}:{hash}:{signed_at}".')
    public_key: str = Field(description="The Ed25519 public key (PEM) that verifies it.")


class PolicyDecisionRead(BaseModel):
    """A decision recorded in the audit log (login policy, registration approvals)."""

    seq: int
    id: str
    type: str
    actor: str | None
    subject: str | None
    occurred_at: datetime
    data: dict[str, Any]

    @classmethod
    def from_row(cls, row: AuditEventRow) -> PolicyDecisionRead:
        return cls(
            seq=row.seq,
            id=row.event_id,
            type=row.type,
            actor=row.actor,
            subject=row.subject,
            occurred_at=row.occurred_at,
            data=stored_data(row.data),
        )


PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")]
PageCursor = Annotated[
    str | None, Query(max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of a page.")
]
