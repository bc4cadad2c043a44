"""Hourly priced postings, derived from measurements in one transaction per window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg
from psycopg.rows import dict_row

from billing_dagster.database import ensure_month_partitions
from billing_dagster.sql import query
from billing_dagster.usage.measurements import check_window


@dataclass(frozen=True)
class HeldUsage:
    """Usage that is kept but cannot be charged yet, and why."""

    reason: str  # "no price" or "no customer"
    meter: str
    kind: str
    org: str | None
    hours: int
    resource_hours: int
    quantity: int


@dataclass(frozen=True)
class PricedWindow:
    start: datetime
    end: datetime
    rows: int
    by_customer: dict[str, Decimal]  # exact microcredits, before the monthly rounding
    held: list[HeldUsage]

    @property
    def unpriced_kinds(self) -> list[str]:
        return sorted({f"{h.meter}:{h.kind}" for h in self.held if h.reason == "no price"})

    @property
    def orgs_without_customer(self) -> list[str]:
        return sorted({h.org or "(unknown org)" for h in self.held if h.reason == "no customer"})


def price_window(conn: psycopg.Connection, start: datetime, end: datetime) -> PricedWindow:
    """Replace the priced postings of [start, end) from its measurements, atomically."""
    start, end = check_window(start, end)
    window = {"window_start": start, "window_end": end}
    ensure_month_partitions(conn, start, end)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('billing.hourly_posting'))")
        cur.execute(query("delete_postings"), window)
        cur.execute(query("derive_postings"), window)
        rows = cur.rowcount
    with conn.cursor(row_factory=dict_row) as cur:
        by_customer = {r["customer_id"]: r["amount_microcredits"]
                       for r in cur.execute(query("postings_by_customer"), window)}
        held = [HeldUsage(**r) for r in cur.execute(query("held_usage"), window)]
    return PricedWindow(start, end, rows, by_customer, held)
