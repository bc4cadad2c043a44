"""Usage events: read incrementally with ``after_guid``, landed once each, kept forever.

Each page is landed in its own transaction together with the cursor that follows it, so a
read that fails half way keeps what it landed and the next run continues from there. A page
read twice lands once (events are keyed by guid). The cursor only moves past events older than
``lag``: CF may commit an event after a later one is visible, so recent events are read again.

Coverage: the changes of a meter are known from the base snapshot on (a complete snapshot taken
when a stream has no cursor, or when CF purged the cursor's event) up to the newest page read,
and, once such a rebasing read has landed every event CF still held, back to the oldest of them:
the state there is rebuilt from those events and the base snapshot (``rebuild_*_history``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain, islice
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.range import Range

from billing_dagster.cf.client import CfApiError, CloudFoundryClient, Page
from billing_dagster.meters import METERS, EventStream
from billing_dagster.sql import copy_rows, query
from billing_dagster.usage.snapshot import land_snapshot, take_snapshot

log = logging.getLogger(__name__)
DEFAULT_LAG = timedelta(minutes=1)
READ_AHEAD = 2  # pages fetched ahead of the landing (5,000 events each: a few MB of JSON)
PROGRESS_PAGES = 20  # a progress line every so many pages of a long read


class MalformedEvent(ValueError):
    """An event without a field the landing needs; the page is refused, nothing is landed."""


@dataclass(frozen=True)
class LandedEvents:
    stream: str
    pages: int
    events_read: int
    events_new: int
    observations: int
    covered_to: datetime | None
    rebased_at: datetime | None  # the base snapshot taken (first read, or cursor purged)
    purged_cursor: str | None  # the guid CF no longer had


def land_events(conn: psycopg.Connection, cf: CloudFoundryClient, stream: EventStream,
                now: datetime, *, lag: timedelta = DEFAULT_LAG,
                run_id: str | None = None) -> LandedEvents:
    """Read every event of ``stream`` after the cursor and land it, page by page."""
    horizon = now.replace(microsecond=0) - lag  # events up to here are final
    cursor = _cursor(conn, stream)
    purged = None
    rebased_at = None
    pages: Iterator[Page] = iter(())
    if cursor is not None and cursor["after_guid"] is None:  # nothing to read after yet
        pages = cf.pages(stream.path)
    elif cursor is not None:
        try:
            pages = cf.pages(stream.path, {"after_guid": cursor["after_guid"]})
            first = list(islice(pages, 1))  # a purged cursor shows on the first request
        except CfApiError as exc:
            if exc.status != 422:
                raise
            purged = cursor["after_guid"]
            log.error("%s: CF no longer has the cursor's event %s (%s): the events after it "
                      "were purged before they were landed. Re-seeding from a snapshot; the "
                      "hours from %s until now are covered only by snapshots, if any.",
                      stream.name, purged, cursor["after_created_at"], cursor["covered_to"])
            _record_lost(conn, stream, cursor, now, run_id)
            cursor = None
        else:
            pages = chain(first, pages)
    if cursor is None:
        rebased_at = _base_snapshot(conn, cf, stream, now, run_id)
        pages = cf.pages(stream.path)
        covered_from, after = rebased_at, None
    else:
        covered_from = cursor["covered_to"]
        after = ((cursor["after_guid"], cursor["after_created_at"])
                 if cursor["after_guid"] is not None else None)

    stats = {"pages": 0, "read": 0, "new": 0, "observations": 0}
    oldest: datetime | None = None  # the oldest event CF served in a rebasing read
    with read_ahead(pages) as ahead:  # the next pages are fetched while this one lands
        page = next(ahead, None)
        while page is not None:
            following = next(ahead, None)
            covered_from, after, page_oldest = _land_page(
                conn, stream, page.resources, covered_from, horizon, last=following is None,
                run_id=run_id, stats=stats, after=after, hold_cursor=rebased_at is not None)
            if page_oldest is not None and (oldest is None or page_oldest < oldest):
                oldest = page_oldest
            if stats["pages"] % PROGRESS_PAGES == 0:
                log.info("%s: %d pages, %d events landed so far (%d new), covered to %s",
                         stream.name, stats["pages"], stats["read"], stats["new"], covered_from)
            page = following
    if rebased_at is not None:
        _rebuild_history(conn, stream, oldest, rebased_at, after, covered_from, run_id)
    log.info("%s: %d pages, %d events read, %d new, %d observations; covered to %s",
             stream.name, stats["pages"], stats["read"], stats["new"], stats["observations"],
             covered_from)
    return LandedEvents(stream.name, stats["pages"], stats["read"], stats["new"],
                        stats["observations"], covered_from, rebased_at, purged)


@contextmanager
def read_ahead(pages: Iterator[Page], depth: int = READ_AHEAD) -> Iterator[Iterator[Page]]:
    """``pages``, fetched by a thread of their own up to ``depth`` pages ahead of the caller.

    Fetching a page (HTTP, JSON) and landing one (PostgreSQL) overlap: both wait on sockets
    most of the time, with the GIL released. A fetch that fails raises in the caller when it
    reaches that page, after the pages before it; leaving the block early (a landing that
    failed) stops the thread after the fetch it is in."""
    buffer: queue.Queue[tuple[Page | None, BaseException | None]] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: tuple[Page | None, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for page in pages:
                if not put((page, None)):
                    return
            put((None, None))
        except BaseException as exc:  # handed to the caller, raised there
            put((None, exc))

    def read() -> Iterator[Page]:
        while True:
            page, error = buffer.get()
            if error is not None:
                raise error
            if page is None:
                return
            yield page

    thread = threading.Thread(target=fetch, name="cf-read-ahead", daemon=True)
    thread.start()
    try:
        yield read()
    finally:
        stop.set()
        thread.join()


def _cursor(conn: psycopg.Connection, stream: EventStream) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query("get_event_cursor"), {"stream": stream.name}).fetchone()


def _base_snapshot(conn: psycopg.Connection, cf: CloudFoundryClient, stream: EventStream,
                   now: datetime, run_id: str | None) -> datetime:
    """A complete snapshot of the stream's meter: the state the events are applied to."""
    meters = tuple(m for m in METERS if m.name == stream.meter)
    snapshot = take_snapshot(cf, meters, now)
    landed = land_snapshot(conn, snapshot, run_id)
    if landed.readings.get(stream.meter) != "complete":
        raise CfApiError(f"{stream.name}: the base snapshot of {stream.meter} could not be read "
                         f"in full ({landed.errors}); events are not landed without a base",
                         url=cf.api_url)
    return snapshot.taken_at


def _record_lost(conn: psycopg.Connection, stream: EventStream, cursor: dict[str, Any],
                 now: datetime, run_id: str | None) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query("insert_events_reading"), {
            "meter": stream.meter, "taken_at": now, "status": "failed", "events": 0,
            "error": f"cursor {cursor['after_guid']} purged at CF: changes after "
                     f"{cursor['covered_to'].isoformat()} were lost before landing",
            "run_id": run_id, "covers": None})
        cur.execute(query("reset_event_cursor"), {"stream": stream.name})


def _rebuild_history(conn: psycopg.Connection, stream: EventStream, oldest: datetime | None,
                     base_at: datetime, after: tuple[str, datetime] | None,
                     covered_to: datetime, run_id: str | None) -> None:
    """After a rebasing read (the first, or after a purge): the state at the oldest event CF
    still held, rebuilt from those events and the base snapshot, so that every hour from
    there on is known exactly; then the cursor, in the same transaction. Until this commits
    the stream has no cursor, so a read that fails half way rebases again next time."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        if oldest is not None and oldest < base_at:
            params: dict[str, Any] = {"meter": stream.meter, "oldest": oldest,
                                      "base_at": base_at, "run_id": run_id}
            reading = cur.execute(query("insert_history_reading"), params).fetchone()
            assert reading is not None
            params["reading_id"] = reading["id"]
            if stream.meter == "cfservices":
                cur.execute(query("ensure_unknown_plan_kind"), params)
            cur.execute(query("stage_rebuild_known"), params)
            cur.execute(query(stream.rebuild), params)
            log.info("%s: history rebuilt from %s (the oldest event CF held) to the base "
                     "snapshot at %s: %d resources", stream.name, oldest.isoformat(),
                     base_at.isoformat(), cur.rowcount)
        _set_cursor(cur, stream, after, covered_to)


def _set_cursor(cur: psycopg.Cursor[Any], stream: EventStream,
                after: tuple[str, datetime] | None, covered_to: datetime) -> None:
    """Where the next read starts (no guid: from the oldest event) and what is covered."""
    cur.execute(query("set_event_cursor"), {
        "stream": stream.name, "after_guid": after[0] if after else None,
        "after_created_at": after[1] if after else None, "covered_to": covered_to})


def _land_page(conn: psycopg.Connection, stream: EventStream, events: list[dict[str, Any]],
               covered_from: datetime, horizon: datetime, *, last: bool, run_id: str | None,
               stats: dict[str, int], after: tuple[str, datetime] | None,
               hold_cursor: bool = False,
               ) -> tuple[datetime, tuple[str, datetime] | None, datetime | None]:
    """Land one page and move the cursor (unless ``hold_cursor``), in one transaction; return
    the new covered-to, the cursor position (guid and time of the last event old enough to
    read after) and the oldest event time of the page."""
    try:
        rows = [stream.row(pos, event) for pos, event in enumerate(events)]
    except (KeyError, TypeError) as exc:
        raise MalformedEvent(f"{stream.name}: an event lacks {exc} (page of {len(events)} "
                             "events); nothing of this page was landed") from exc
    times = [datetime.fromisoformat(r[2]) for r in rows]
    # the newest instant up to which this page proves every change: the end of the read, or,
    # mid-read, the last event's second (more events of that second may follow)
    upper = horizon if last else min(max(times, default=horizon), horizon)
    covers = Range(covered_from, upper, "[)") if upper > covered_from else None
    covered_to = max(upper, covered_from)
    final = [(row, t) for row, t in zip(rows, times, strict=True) if t <= horizon]
    if final:
        after = (final[-1][0][1], final[-1][1])
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query("create_event_staging"))
        copy_rows(cur, stream.copy, rows)
        reading = cur.execute(query("insert_events_reading"), {
            "meter": stream.meter, "taken_at": covered_to, "status": "complete",
            "events": len(rows), "error": None, "run_id": run_id, "covers": covers,
        }).fetchone()
        assert reading is not None
        ids = {"reading_id": reading["id"], "taken_at": covered_to}
        landed = cur.execute(query(stream.land), ids).fetchone()
        cur.execute(query("ensure_event_orgs_and_spaces"), ids)
        cur.execute(query(stream.ensure), ids)
        cur.execute(query(stream.observe), ids)
        stats["observations"] += cur.rowcount
        if not hold_cursor:
            _set_cursor(cur, stream, after, covered_to)
    stats["pages"] += 1
    stats["read"] += len(rows)
    stats["new"] += landed["new_events"] if landed else 0
    return covered_to, after, min(times, default=None)
