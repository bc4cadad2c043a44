"""The database, not only Python, keeps the ledger balanced and append-only, landed usage
append-only, and prices unique."""

from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.types.range import Range

from billing_dagster.meters import STREAMS
from billing_dagster.usage.events import land_events
from tests.support import cf_client


def make_customer_accounts(conn: psycopg.Connection) -> dict[str, int]:
    conn.execute("INSERT INTO billing.customer (id, name) VALUES ('acme', 'Acme Agency')")
    rows = conn.execute(
        "INSERT INTO billing.account (customer_id, account_type) "
        "SELECT 'acme', name FROM billing.account_type RETURNING account_type, id").fetchall()
    conn.commit()
    return dict(rows)


def post(conn: psycopg.Connection, key: str, entries: list[tuple[int, int, int]]) -> int:
    """Insert a transaction and its entries (account, direction, amount) in one transaction."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO billing.ledger_transaction "
            "(transaction_type, idempotency_key, customer_id, effective_at, description) "
            "VALUES ('adjustment', %s, 'acme', now(), 'test') RETURNING id", (key,)).fetchone()
        assert row is not None
        for account, direction, amount in entries:
            conn.execute("INSERT INTO billing.ledger_entry "
                         "(transaction_id, account_id, direction, amount_microcredits) "
                         "VALUES (%s, %s, %s, %s)", (row[0], account, direction, amount))
    return row[0]


def test_a_balanced_transaction_commits(conn):
    accounts = make_customer_accounts(conn)
    tx = post(conn, "ok", [(accounts["credit_pool"], 1, 700), (accounts["credits_used"], -1, 700)])
    count = conn.execute("SELECT count(*) FROM billing.ledger_entry WHERE transaction_id = %s",
                         (tx,)).fetchone()
    assert count == (2,)


def test_the_database_rejects_an_unbalanced_transaction(conn):
    accounts = make_customer_accounts(conn)
    with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"):
        post(conn, "bad", [(accounts["credit_pool"], 1, 700), (accounts["credits_used"], -1, 699)])
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM billing.ledger_transaction").fetchone() == (0,)


def test_the_database_rejects_a_transaction_without_entries(conn):
    make_customer_accounts(conn)
    with pytest.raises(psycopg.errors.CheckViolation, match="at least a debit and a credit"):
        post(conn, "empty", [])


def test_posted_entries_cannot_be_updated_or_deleted(conn):
    accounts = make_customer_accounts(conn)
    tx = post(conn, "ok", [(accounts["credit_pool"], 1, 5), (accounts["credits_used"], -1, 5)])
    for statement in (
        "UPDATE billing.ledger_entry SET amount_microcredits = 6 WHERE transaction_id = %s",
        "DELETE FROM billing.ledger_entry WHERE transaction_id = %s",
        "UPDATE billing.ledger_transaction SET description = 'x' WHERE id = %s",
        "DELETE FROM billing.ledger_transaction WHERE id = %s",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement, (tx,))
        conn.rollback()


def test_posted_price_lines_cannot_be_truncated(conn):
    # Found by the fault campaign: UPDATE and DELETE were refused, TRUNCATE emptied them.
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("TRUNCATE billing.posting_line")


@pytest.mark.parametrize("statement", [
    "UPDATE billing.app_usage_event SET state = 'STOPPED'",
    "DELETE FROM billing.service_usage_event",
    "DELETE FROM billing.observation",
    "TRUNCATE billing.app_usage_event",
    "TRUNCATE billing.observation",
])
def test_landed_usage_cannot_be_changed_or_removed(conn, simulator, statement):
    with cf_client(simulator) as client:
        for stream in STREAMS:
            land_events(conn, client, stream, simulator.foundation.now)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute(statement)


def test_two_prices_of_one_kind_cannot_be_valid_at_once(conn):
    kind = conn.execute("SELECT id FROM billing.resource_kind WHERE natural_id = 'app-memory'"
                        ).fetchone()
    assert kind is not None
    insert = ("INSERT INTO billing.price (resource_kind_id, microcredits_per_unit, unit, "
              "valid_during) VALUES (%s, 1000000, 2691072000, %s)")
    march = datetime(2025, 3, 1, 5, tzinfo=UTC)
    april = datetime(2025, 4, 1, 4, tzinfo=UTC)
    conn.execute(insert, (kind[0], Range(march, april, "[)")))
    conn.execute(insert, (kind[0], Range(april, None, "[)")))  # adjacent: allowed
    conn.commit()
    with pytest.raises(psycopg.errors.ExclusionViolation, match="price_no_overlap"):
        conn.execute(insert, (kind[0], Range(datetime(2025, 3, 15, tzinfo=UTC), None, "[)")))
