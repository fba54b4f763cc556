"""Writing side of the live stream: ``record_change`` in the transaction that makes the change.

A recorded change is kept on the session and written as the transaction commits (the
``change_events`` stage of ``commit_work.py``, after the rollups: flush the transaction's
own changes, then insert the change events), and announced on the bus once the commit
succeeded. Hence:

- the event exists if and only if the change does (same transaction; a rollback, or the
  rollback of the savepoint it was recorded in, drops it);
- on PostgreSQL the lock that orders the writers of change events (see
  ``repository.append_changes``) is the last lock a transaction takes and is held only for
  the insert and the commit: writers do not wait on each other while they work, and no
  lock-order deadlock with the rows they change is possible, wherever in the transaction
  ``record_change`` is called.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import pydantic_core
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from flightdeck_pipeline import commit_work
from flightdeck_pipeline.events.bus import ChangeBus
from flightdeck_pipeline.events.repository import append_changes

RUN_UPDATED = "run.updated"
DEPLOYMENT_UPDATED = "deployment.updated"

# "<entity>.<verb>", lower case: it is the SSE event name (and fits change_events.kind).
KIND_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
KIND_MAX_LENGTH = 32
_KIND = re.compile(KIND_PATTERN)

# Keys of Session.info (the sync session behind an AsyncSession).
logger = logging.getLogger(__name__)

_STAGED = "flightdeck_pipeline.events.staged"  # list[_StagedChange], not yet inserted
_ANNOUNCE = "flightdeck_pipeline.events.announce"  # {bus: highest id inserted}
_LOOP = "flightdeck_pipeline.events.loop"


@dataclass(frozen=True)
class _StagedChange:
    kind: str
    payload_json: str
    bus: ChangeBus | None
    # The innermost savepoint when it was recorded (None: the transaction itself).
    savepoint: SessionTransaction | None


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is a valid change kind (``run.updated``), else raise ValueError."""
    if len(kind) > KIND_MAX_LENGTH or not _KIND.fullmatch(kind):
        raise ValueError(
            f"invalid change kind {kind!r}: expected '<entity>.<verb>' in lower case, "
            f"at most {KIND_MAX_LENGTH} characters"
        )
    return kind


async def record_change(
    session: AsyncSession,
    bus: ChangeBus | None,
    kind: str,
    payload: Mapping[str, Any],
) -> None:
    """Record a change event (``kind``, JSON ``payload``) in ``session``'s transaction.

    The row is inserted when the transaction commits and ``bus.notify(id)`` is scheduled
    on the event loop once the commit succeeded; a rollback records and announces nothing.
    ``bus`` is ``None`` where no bus exists (a CLI command): the servers' backstop pollers
    pick the event up within about a second. ``payload`` is serialized now (datetimes,
    UUIDs, enums as strings), so it describes the state at the time of the call.
    """
    check_kind(kind)
    payload_json = pydantic_core.to_json(dict(payload)).decode()
    # Begin the transaction (if the session has none yet) so that its rollback or commit,
    # not a later one, decides the fate of this change.
    await session.connection()
    sync_session = session.sync_session
    info = sync_session.info
    commit_work.attach(sync_session, "change_events")
    if bus is not None:
        # The commit hooks run synchronously (in SQLAlchemy's greenlet, on the loop's
        # thread): they only schedule the notification on the loop.
        info[_LOOP] = asyncio.get_running_loop()
    staged: list[_StagedChange] = info.setdefault(_STAGED, [])
    staged.append(_StagedChange(kind, payload_json, bus, sync_session.get_nested_transaction()))


def _write_staged(sync_session: Session) -> None:
    if sync_session.in_nested_transaction():
        return  # a savepoint is being released: its changes move to the enclosing scope
    staged: list[_StagedChange] | None = sync_session.info.pop(_STAGED, None)
    if not staged:
        return
    sync_session.flush()  # the transaction's own row locks come before the ordering lock
    ids = append_changes(sync_session, [(c.kind, c.payload_json) for c in staged])
    announce: dict[ChangeBus, int] = sync_session.info.setdefault(_ANNOUNCE, {})
    for change, change_id in zip(staged, ids, strict=True):
        if change.bus is not None:
            announce[change.bus] = max(announce.get(change.bus, 0), change_id)


def _announce(sync_session: Session) -> None:
    released = sync_session.get_nested_transaction()
    if released is not None:
        # A savepoint was released: what was recorded in it now belongs to the enclosing
        # savepoint (or the transaction), and goes if that one is rolled back.
        enclosing = released.parent if released.parent and released.parent.nested else None
        staged: list[_StagedChange] = sync_session.info.get(_STAGED, [])
        staged[:] = [
            replace(c, savepoint=enclosing) if c.savepoint is released else c for c in staged
        ]
        return
    if sync_session.info.get(_STAGED):
        # Only when the transaction was committed while a savepoint was still open.
        logger.error(
            "change events recorded in a savepoint still open at commit were not written; "
            "close savepoints before committing"
        )
    announce: dict[ChangeBus, int] | None = sync_session.info.pop(_ANNOUNCE, None)
    if not announce:
        return
    loop: asyncio.AbstractEventLoop = sync_session.info[_LOOP]
    for bus, change_id in announce.items():
        loop.call_soon_threadsafe(bus.notify, change_id)


def _drop_rolled_back(sync_session: Session, previous_transaction: SessionTransaction) -> None:
    if not previous_transaction.nested:
        _forget(sync_session, previous_transaction)
        return
    # Changes recorded inside the rolled-back savepoint (or savepoints within it) are gone.
    staged: list[_StagedChange] | None = sync_session.info.get(_STAGED)
    if staged:
        staged[:] = [c for c in staged if not _within(c.savepoint, previous_transaction)]


def _forget(sync_session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        sync_session.info.pop(_STAGED, None)
        sync_session.info.pop(_ANNOUNCE, None)


def _within(savepoint: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while savepoint is not None:
        if savepoint is ancestor:
            return True
        savepoint = savepoint.parent
    return False


commit_work.register(
    commit_work.CommitStage(
        "change_events",
        before_commit=_write_staged,
        after_commit=_announce,
        after_soft_rollback=_drop_rolled_back,
        after_transaction_end=_forget,
    )
)
