"""``flightdeck-pipeline deliveries list|reprocess``: the deliveries API from a shell
(same rules, audited with actor ``cli``)."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_common.cli import CliCommand
from flightdeck_common.db import create_engine, create_sessionmaker, session_scope
from flightdeck_common.pagination import MAX_PAGE_SIZE
from flightdeck_pipeline.settings import Settings
from flightdeck_pipeline.webhooks import deliveries_service as service
from flightdeck_pipeline.webhooks.deliveries_repository import DeliveryFilter
from flightdeck_pipeline.webhooks.deliveries_schemas import (
    DELIVERY_ID_PATTERN,
    EVENT_PATTERN,
    BulkReprocess,
    DeliveryRead,
)
from flightdeck_pipeline.webhooks.models import RESULTS

T = TypeVar("T")

ACTOR = "cli"
MAX_LIST_LIMIT = 10_000
ERROR_WIDTH = 60
_DELIVERY_ID = re.compile(DELIVERY_ID_PATTERN)
_EVENT = re.compile(EVENT_PATTERN)
_WORKER_NOTE = (
    "A running service maps reprocessed deliveries within about a second: this command "
    "cannot wake its mapping workers (another process), which poll for pending deliveries "
    "every second."
)


def _delivery_id(value: str) -> str:
    if not _DELIVERY_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"not a delivery id: {value!r}")
    return value


def _event(value: str) -> str:
    if not _EVENT.fullmatch(value):
        raise argparse.ArgumentTypeError(f"not an event name: {value!r}")
    return value


def _moment(value: str) -> datetime:
    """An ISO 8601 time; without a timezone it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from exc


def _limit(value: str) -> int:
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise argparse.ArgumentTypeError(f"a number from 1 to {MAX_LIST_LIMIT}: {value!r}")
    return limit


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--event", type=_event, help="only this X-GitHub-Event")
    parser.add_argument(
        "--since", type=_moment, metavar="ISO8601", help="received at or after (UTC if no zone)"
    )
    parser.add_argument(
        "--until", type=_moment, metavar="ISO8601", help="received before (UTC if no zone)"
    )


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Read the stored GitHub webhook deliveries and set them back to pending to be mapped "
        "again. " + _WORKER_NOTE
    )
    commands = parser.add_subparsers(dest="deliveries_command", required=True)

    listing = commands.add_parser(
        "list",
        help="list stored deliveries, newest first",
        description="List stored deliveries, newest first (filters combine).",
    )
    listing.add_argument("--result", choices=RESULTS, help="only deliveries with this result")
    _add_filters(listing)
    listing.add_argument(
        "--limit",
        type=_limit,
        default=50,
        help=f"at most this many (default 50, max {MAX_LIST_LIMIT})",
    )
    listing.set_defaults(deliveries_run=_list, usage_error=listing.error)

    reprocess = commands.add_parser(
        "reprocess",
        help="set deliveries back to pending (named ones, or --failed with filters)",
        description=(
            "Set deliveries back to pending so that they are mapped again: the named ones "
            "(exit 1 when one is unknown or already pending; the others are reprocessed), or "
            f"with --failed every failed one the filters select (at most "
            f"{service.MAX_BULK_REPROCESS:,} per call; exit 1 when more match). Audited with "
            f"actor {ACTOR!r}. " + _WORKER_NOTE
        ),
    )
    reprocess.add_argument(
        "delivery_ids",
        nargs="*",
        type=_delivery_id,
        metavar="DELIVERY_ID",
        help="X-GitHub-Delivery",
    )
    which = reprocess.add_mutually_exclusive_group()
    which.add_argument(
        "--failed",
        dest="bulk_result",
        action="store_const",
        const="failed",
        help="every failed delivery the filters select",
    )
    which.add_argument(
        "--result",
        dest="bulk_result",
        choices=("failed", "processed", "ignored"),
        help="every delivery with this result the filters select",
    )
    _add_filters(reprocess)
    reprocess.set_defaults(deliveries_run=_reprocess, usage_error=reprocess.error)


def _run(settings: Any, args: argparse.Namespace) -> int:
    if args.since is not None and args.until is not None and args.until <= args.since:
        args.usage_error("--until must be later than --since")
    code: int = args.deliveries_run(settings, args)
    return code


def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_engine(settings)
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(main())


# -- list ---------------------------------------------------------------------------------


def _list(settings: Settings, args: argparse.Namespace) -> int:
    selection = DeliveryFilter(
        result=args.result, event=args.event, since=args.since, until=args.until
    )

    async def work(session: AsyncSession) -> tuple[list[DeliveryRead], bool]:
        items: list[DeliveryRead] = []
        cursor: str | None = None
        while True:
            page = await service.list_deliveries(
                session,
                selection,
                limit=min(MAX_PAGE_SIZE, args.limit - len(items)),
                cursor=cursor,
            )
            items.extend(page.items)
            cursor = page.next_cursor
            if cursor is None or len(items) >= args.limit:
                return items, cursor is not None

    items, more = _with_session(settings, work)
    if not items:
        print("no deliveries match")
        return 0
    print(format_table(items))
    if more:
        print(f"(only the newest {len(items)} shown: raise --limit or narrow the filters)")
    return 0


def _text(value: str | None) -> str:
    return " ".join(value.split()) if value else "-"


def _truncated(value: str | None, width: int = ERROR_WIDTH) -> str:
    text = _text(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(items: Sequence[DeliveryRead]) -> str:
    """The deliveries as an aligned text table (errors on one line, truncated)."""
    header = ("DELIVERY ID", "EVENT", "ACTION", "RESULT", "ATTEMPTS", "RECEIVED AT", "ERROR")
    rows = [
        (
            item.delivery_id,
            item.event,
            _text(item.action),
            item.result.value,
            str(item.attempts),
            item.received_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            _truncated(item.error),
        )
        for item in items
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    lines = [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]
        ).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)


# -- reprocess ----------------------------------------------------------------------------


def _reprocess(settings: Settings, args: argparse.Namespace) -> int:
    filtered = args.event is not None or args.since is not None or args.until is not None
    if args.delivery_ids and args.bulk_result:
        args.usage_error("give delivery ids or --failed (--result), not both")
    if not args.delivery_ids and not args.bulk_result:
        args.usage_error("give delivery ids, or --failed (--result) to select by filters")
    if args.delivery_ids and filtered:
        args.usage_error("--event, --since and --until select with --failed (--result)")
    if args.delivery_ids:
        return _reprocess_named(settings, list(dict.fromkeys(args.delivery_ids)))
    return _reprocess_matching(settings, args)


def _reprocess_named(settings: Settings, delivery_ids: list[str]) -> int:
    async def work(session: AsyncSession) -> int:
        refused = 0
        for delivery_id in delivery_ids:
            try:
                delivery = await service.reprocess_delivery(session, delivery_id, actor=ACTOR)
            except (service.DeliveryNotFound, service.DeliveryPending) as exc:
                refused += 1
                print(f"flightdeck-pipeline: {exc.detail or exc.title}", file=sys.stderr)
                continue
            print(f"delivery {delivery.delivery_id} ({delivery.event}): pending again")
        return refused

    refused = _with_session(settings, work)
    return 1 if refused else 0


def _reprocess_matching(settings: Settings, args: argparse.Namespace) -> int:
    request = BulkReprocess(
        result=args.bulk_result, event=args.event, since=args.since, until=args.until
    )

    async def work(session: AsyncSession) -> int:
        result = await service.reprocess_deliveries(
            session, request, actor=ACTOR, backlog_limit=settings.webhook_backlog_limit
        )
        return result.reprocessed

    try:
        reprocessed = _with_session(settings, work)
    except (service.TooManyDeliveries, service.BacklogWouldOverflow) as exc:
        print(f"flightdeck-pipeline: {exc.detail}", file=sys.stderr)
        return 1
    print(f"{reprocessed} {request.result} deliveries set back to pending")
    return 0


DELIVERIES = CliCommand(
    name="deliveries",
    help="list stored webhook deliveries, or set them back to pending (reprocess)",
    add_arguments=_arguments,
    run=_run,
)
