"""The web process's instance answers a check's partition rows in time order, and Dagster
builds the same statuses from them (billing_dagster/web/check_order.py)."""

import random
from datetime import timedelta

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # no public name
    AssetCheckEvaluationTargetMaterializationData as Target,
)

from billing_dagster.partitions import hourly_keys_between, hourly_partitions
from billing_dagster.usage.hours import HOUR_COMPLETE, MEASUREMENTS
from billing_dagster.web.check_order import order_check_partitions
from tests.support import SIM_START

CHECK = dg.AssetCheckKey(MEASUREMENTS, HOUR_COMPLETE)


def statuses(instance: dg.DagsterInstance) -> dict[str, set[str]]:
    (state,) = instance.event_log_storage.get_asset_check_state(
        [(CHECK, hourly_partitions)]).values()
    return {status.value: set(subset.subset_value.get_partition_keys())
            for status, subset in state.subsets.items() if not subset.is_empty}


def test_check_rows_come_in_time_order_and_give_the_same_statuses() -> None:
    keys = hourly_keys_between(SIM_START, SIM_START + timedelta(hours=72))
    failed = {k for n, k in enumerate(keys) if n % 10 in (3, 4)}
    shuffled = random.Random(7).sample(keys, len(keys))  # evaluated out of time order
    with dg.DagsterInstance.ephemeral() as instance:
        for key in shuffled:
            instance.report_runless_asset_event(dg.AssetMaterialization(MEASUREMENTS,
                                                                        partition=key))
            (record,) = instance.fetch_materializations(dg.AssetRecordsFilter(
                asset_key=MEASUREMENTS, asset_partitions=[key]), limit=1).records
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=MEASUREMENTS, check_name=HOUR_COMPLETE, passed=key not in failed,
                partition=key, severity=dg.AssetCheckSeverity.WARN,
                target_materialization_data=Target(storage_id=record.storage_id,
                                                   run_id=record.run_id,
                                                   timestamp=record.timestamp)))
        before = statuses(instance)
        order_check_partitions(instance)
        order_check_partitions(instance)  # applied once, however often it is asked
        rows = instance.event_log_storage.get_asset_check_partition_info([CHECK])
        assert [row.partition_key for row in rows] == keys
        assert statuses(instance) == before == {"SUCCEEDED": set(keys) - failed,
                                                "FAILED": failed}
