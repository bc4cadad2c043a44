"""Dagster's partition statuses of an asset check, built in time order.

The UI's checks view (and the asset's health) asks Dagster for each partitioned check's
statuses. Dagster's storage builds them, on every request (open-source storage keeps no
checkpoint of them), from one row per partition, adding the rows one by one to time-window
subsets; each addition sorts the subset's windows again. Rows in time order merge into one
window per run of equal statuses, so each addition is cheap; rows in the order a hash plan
returns them (the order PostgreSQL picks once it has statistics of Dagster's tables) leave one
window per hour, and the additions cost the square of the partitions: a year of
``hour_complete`` (8,760 partitions) took 26-31 s of the webserver's CPU per request, and the
checks view 78-154 s (bench/ui_pages.py). Sorting the rows first costs milliseconds.

``order_check_partitions`` makes an instance's event log storage return those rows sorted by
check and partition key (hourly and monthly keys sort as their times); the web process applies
it to its instance. Nothing is written differently: each row is a different partition's
latest execution, so the statuses are the same in any order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import AssetCheckKey, DagsterInstance

ORDERED = "_billing_check_partitions_ordered"


def order_check_partitions(instance: DagsterInstance) -> None:
    """Have ``instance``'s event log storage answer check partition rows in time order."""
    storage = instance.event_log_storage
    if getattr(storage, ORDERED, False):
        return
    unordered = storage.get_asset_check_partition_info

    def ordered(keys: Sequence[AssetCheckKey], after_storage_id: int | None = None,
                partition_keys: Sequence[str] | None = None) -> Sequence[Any]:
        rows = unordered(keys, after_storage_id=after_storage_id, partition_keys=partition_keys)
        return sorted(rows, key=lambda row: (row.check_key.to_user_string(),
                                             row.partition_key or ""))

    storage.get_asset_check_partition_info = ordered  # type: ignore[method-assign]
    setattr(storage, ORDERED, True)
