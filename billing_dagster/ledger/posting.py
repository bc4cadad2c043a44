"""Posting a business month to the ledger, idempotently, in one transaction."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from billing_dagster.ledger.agreements import Lot, draw_down, give_back, hourly_integers
from billing_dagster.sql import copy_rows, query


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
    """Post the agreements that began by the month's end and the modifications effective by
    then, the month's usage (or the change since it was posted), and the expiry of agreements
    that ended within it.

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
        for name in ("post_agreement_credits", "post_month_usage", "post_iaa_ends"):
            cur.execute(query(name), params)
            rows = cur.fetchall()
            if name == "post_month_usage" and rows:
                hourly: dict[str, list[tuple[datetime, Decimal]]] = defaultdict(list)
                for r in cur.execute(query("month_hourly_charges"), params).fetchall():
                    hourly[r["customer_id"]].append((r["hour_start"], r["amount"]))
                for row in rows:  # the entries: which lot each hour of the change draws from
                    _draw_entries(cur, row["transaction_id"], row["customer_id"],
                                  hourly[row["customer_id"]], params)
            posted.extend(Posted(r["customer_id"], r["transaction_type"], r["idempotency_key"],
                                 int(r["amount_microcredits"])) for r in rows)
    return PostedMonth(business_month, posted)


def customer_lots(cur: psycopg.Cursor[dict[str, Any]],
                  customer_id: str) -> tuple[list[Lot], set[str]]:
    """A customer's agreements as lots as the ledger holds them now (query customer_lots; an
    expired lot holds nothing), and the ids of those that have expired."""
    rows = cur.execute(query("customer_lots"), {"customer_id": customer_id}).fetchall()
    expired = {r["iaa_id"] for r in rows if r["expired"]}
    lots = [Lot(r["iaa_id"], r["starts_at"], r["ends_at"], 0 if r["expired"] else r["remaining"],
                tuple((datetime.fromisoformat(at), amount) for at, amount in r["arrivals"]))
            for r in rows]
    return lots, expired


def _draw_entries(cur: psycopg.Cursor[dict[str, Any]], transaction_id: int, customer_id: str,
                  exact: list[tuple[datetime, Decimal]], params: dict[str, Any]) -> None:
    """Write a usage transaction's entries: the month's posted total spread over its hours
    (``exact``: the customer's exact charge per hour, in hour order), less what earlier
    postings of the month drew per hour, drawn from the customer's lots (or given back to
    them) hour by hour; credits_used takes the whole change."""
    at = {**params, "customer_id": customer_id}
    total = cur.execute(query("month_posted_total"), at).fetchone()
    spread = dict(hourly_integers(exact, total["amount"] if total else 0))
    before: dict[datetime, dict[str | None, int]] = defaultdict(dict)
    for r in cur.execute(query("month_draws"), at):
        before[r["hour_start"]][r["iaa_id"]] = r["amount"]
    lots, expired = customer_lots(cur, customer_id)
    change = {hour: spread.get(hour, 0) - sum(before.get(hour, {}).values())
              for hour in set(spread) | set(before)}
    drawn = draw_down(lots, sorted((h, c) for h, c in change.items() if c > 0))
    by_hour = list(drawn.by_hour)
    lots = list(drawn.lots)
    for hour, less in sorted((h, -c) for h, c in change.items() if c < 0):
        back = give_back(before[hour], lots, less, hour)
        by_hour += back.by_hour
        lots = list(back.lots)
    net: dict[str | None, int] = defaultdict(int)
    for _, source, amount in by_hour:
        net[source] += amount
    accounts = {(r["account_type"], r["iaa_id"]): r["id"]
                for r in cur.execute(query("customer_accounts"), at)}
    entries: dict[int, int] = defaultdict(int)  # account -> signed amount (+ debit)
    for source, amount in net.items():
        if source is None:
            entries[accounts[("overage", None)]] += amount
        elif source in expired and amount < 0:  # given back after the lot expired: expires
            entries[accounts[("credits_expired", None)]] += amount
        else:
            entries[accounts[("credit_pool", source)]] += amount
    entries[accounts[("credits_used", None)]] -= sum(net.values())
    cur.executemany(query("insert_entry"), [
        {"transaction_id": transaction_id, "account_id": account,
         "direction": 1 if amount > 0 else -1, "amount": abs(amount)}
        for account, amount in sorted(entries.items()) if amount])
    copy_rows(cur, "copy_draws", [(transaction_id, hour, source, amount)
                                  for hour, source, amount in by_hour if amount])
