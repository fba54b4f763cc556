"""Work done as a transaction commits: one mechanism, its order stated here.

Write paths stage work on their session while they write; it is done when that
transaction commits, in this order (:data:`ORDER`):

1. ``rollups`` (``runs/rollups.py``), before the commit: the summed counter differences of
   the transaction's run writes. Those rows are shared by every writer of a day, so they
   are locked only for the commit.
2. ``change_events`` (``events/publish.py``), before the commit and after the rollups: the
   change events, inserted under the lock that orders their ids, which must be the last
   lock a transaction takes (no lock-order cycle with the rows it changed); after the
   commit: announced on the live-event bus.
3. stale metrics (:func:`mark_stale`), after the commit returned: the cached stats,
   history and DORA answers that read what the transaction wrote are dropped. This one is
   asynchronous, so the writer awaits it itself (``WriteSessionDep`` for the API, the
   mapping worker for deliveries) before it answers or reports the write done.

A rollback of the transaction drops what was staged in it; a stage that supports savepoints
(change events) also drops what was staged in a savepoint that is rolled back.

Stages register their hooks (:func:`register`) and attach them to a session when they
first stage something there (:func:`attach`); the session then runs every stage's hook in
:data:`ORDER`, whatever order they attached in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

ORDER = ("rollups", "change_events")

_ATTACHED = "flightdeck_pipeline.commit_work.attached"  # Session.info: set of stage names
_STALE_SCOPES = "flightdeck_pipeline.commit_work.stale_scopes"


@dataclass(frozen=True)
class CommitStage:
    """The hooks of one stage (each optional), run in :data:`ORDER` among the stages."""

    name: str
    before_commit: Callable[[Session], None] | None = None
    after_commit: Callable[[Session], None] | None = None
    after_soft_rollback: Callable[[Session, SessionTransaction], None] | None = None
    after_transaction_end: Callable[[Session, SessionTransaction], None] | None = None


_STAGES: dict[str, CommitStage] = {}


def register(stage: CommitStage) -> CommitStage:
    """Declare a stage; its name must be in :data:`ORDER`."""
    if stage.name not in ORDER:
        raise ValueError(f"commit stage {stage.name!r} has no place in ORDER")
    _STAGES[stage.name] = stage
    return stage


def attach(sync_session: Session, name: str) -> None:
    """Run stage ``name``'s hooks when ``sync_session`` commits (idempotent)."""
    info = sync_session.info
    attached: set[str] | None = info.get(_ATTACHED)
    if attached is None:
        attached = info[_ATTACHED] = set()
        event.listen(sync_session, "before_commit", _before_commit)
        event.listen(sync_session, "after_commit", _after_commit)
        event.listen(sync_session, "after_soft_rollback", _after_soft_rollback)
        event.listen(sync_session, "after_transaction_end", _after_transaction_end)
    attached.add(name)


def _stages(sync_session: Session) -> list[CommitStage]:
    attached: set[str] = sync_session.info.get(_ATTACHED, set())
    return [_STAGES[name] for name in ORDER if name in attached and name in _STAGES]


def _before_commit(sync_session: Session) -> None:
    for stage in _stages(sync_session):
        if stage.before_commit is not None:
            stage.before_commit(sync_session)


def _after_commit(sync_session: Session) -> None:
    for stage in _stages(sync_session):
        if stage.after_commit is not None:
            stage.after_commit(sync_session)


def _after_soft_rollback(sync_session: Session, previous: SessionTransaction) -> None:
    for stage in _stages(sync_session):
        if stage.after_soft_rollback is not None:
            stage.after_soft_rollback(sync_session, previous)


def _after_transaction_end(sync_session: Session, transaction: SessionTransaction) -> None:
    for stage in _stages(sync_session):
        if stage.after_transaction_end is not None:
            stage.after_transaction_end(sync_session, transaction)


# -- stage 3: stale metrics --------------------------------------------------------------


def mark_stale(session: AsyncSession, *scopes: str) -> None:
    """Note that ``session``'s transaction writes what the metrics ``scopes`` read
    (``metrics.cache.RUNS``, ``DEPLOYMENTS``; none named: all, see :func:`stale_scopes`)."""
    session.info.setdefault(_STALE_SCOPES, set()).update(scopes or ("*",))


def stale_scopes(session: AsyncSession, every_scope: tuple[str, ...]) -> list[str]:
    """The scopes :func:`mark_stale` noted on ``session`` (sorted; ``every_scope`` when
    one call named none), to be invalidated once its transaction committed."""
    noted: set[str] = session.info.get(_STALE_SCOPES, set())
    return sorted(every_scope) if "*" in noted else sorted(noted)
