"""Posting a business month to the ledger, idempotently, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import psycopg
from psycopg.rows import dict_row

from billing_dagster.sql import query


@dataclass(frozen=True)
class Posted:
    """A transaction written by this run."""

    customer_id: str
    transaction_type: str
    idempotency_key: str
    amount_microcredits: int  # signed for adjustments (negative: charges went down)


@dataclass(frozen=True)
class PostedMonth:
    business_month: date
    posted: list[Posted]

    def of_type(self, transaction_type: str) -> list[Posted]:
        return [p for p in self.posted if p.transaction_type == transaction_type]


def post_month(conn: psycopg.Connection, business_month: date, month_start: datetime,
               month_end: datetime) -> PostedMonth:
    """Post the agreements that began by the month's end, the month's usage (or the change
    since it was posted), and the expiry of agreements that ended within it.

    ``month_start``/``month_end`` are the UTC instants of the New York month. Running it again
    posts nothing new unless the month's charges changed; two runs at once serialise on an
    advisory lock, and idempotency keys stop any duplicate that slipped past it.
    """
    params = {"business_month": business_month, "month_label": f"{business_month:%Y-%m}",
              "month_start": month_start, "month_end": month_end}
    posted: list[Posted] = []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('billing.ledger'))")
        cur.execute(query("ensure_accounts"))
        for name in ("post_iaa_starts", "post_month_usage", "post_iaa_ends"):
            cur.execute(query(name), params)
            posted.extend(Posted(r["customer_id"], r["transaction_type"], r["idempotency_key"],
                                 int(r["amount_microcredits"])) for r in cur.fetchall())
    return PostedMonth(business_month, posted)
