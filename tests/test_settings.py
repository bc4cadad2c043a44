import json
from pathlib import Path

import pytest

from billing_dagster.cf.client import CfApiError, CloudFoundryClient, RetryPolicy
from billing_dagster.resources import BillingDatabase
from billing_dagster.settings import (
    ConfigError,
    cloud_foundry_settings,
    database_settings,
    redact_password,
    sqlalchemy_url,
)
from tests.support import free_port

CWD = Path("/srv/billing")


def test_database_url_wins_over_everything():
    env = {"DATABASE_URL": "postgres://u:p@db:5432/billing", "PGHOST": "other"}
    settings = database_settings(env, CWD)
    assert (settings.source, settings.url) == ("DATABASE_URL", "postgresql://u:p@db:5432/billing")
    assert settings.describe() == "postgresql://u:***@db:5432/billing (from DATABASE_URL)"


def test_pg_variables_make_a_url():
    env = {"PGHOST": "127.0.0.1", "PGUSER": "postgres", "PGDATABASE": "billing"}
    assert database_settings(env, CWD).url == "postgresql://postgres@127.0.0.1:5432/billing"


def test_a_socket_directory_in_pghost_goes_in_the_query():
    env = {"PGHOST": "/run/postgresql", "PGUSER": "me"}
    assert database_settings(env, CWD).url == "postgresql://me@/me?host=/run/postgresql"


def test_a_cloud_gov_rds_binding_is_used():
    vcap = {"aws-rds": [{"name": "billing-db", "credentials": {
        "uri": "postgres://u:secret@rds.example:5432/cgawsbrokerprod"}}]}
    settings = database_settings({"VCAP_SERVICES": json.dumps(vcap)}, CWD)
    assert settings.source == "VCAP_SERVICES"
    assert settings.url == "postgresql://u:secret@rds.example:5432/cgawsbrokerprod"


def test_nothing_configured_means_the_embedded_server_under_the_working_directory():
    settings = database_settings({}, CWD)
    assert (settings.source, settings.url) == ("embedded", None)
    assert settings.embedded_data_dir == CWD / ".billing" / "pgdata"
    relative = database_settings({"BILLING_DATA_DIR": "data"}, CWD)
    assert relative.embedded_data_dir == CWD / "data" / "pgdata"


@pytest.mark.parametrize(("env", "names"), [
    ({"DATABASE_URL": "mysql://x"}, ["DATABASE_URL", "postgresql://"]),
    ({"PGPORT": "five"}, ["PGPORT"]),
    ({"VCAP_SERVICES": "{not json"}, ["VCAP_SERVICES", "DATABASE_URL"]),
    ({"VCAP_SERVICES": json.dumps({"s3": [{"credentials": {}}]})}, ["aws-rds", "DATABASE_URL"]),
])
def test_bad_database_settings_name_the_variable_and_the_fix(env, names):
    with pytest.raises(ConfigError) as error:
        database_settings(env, CWD)
    for name in names:
        assert name in str(error.value)


def test_cloud_foundry_settings_name_every_missing_variable():
    with pytest.raises(ConfigError) as error:
        cloud_foundry_settings({"CF_API_URL": "https://api.example"})
    assert "CF_CLIENT_ID, CF_CLIENT_SECRET not set" in str(error.value)
    with pytest.raises(ConfigError, match="not an http"):
        cloud_foundry_settings({"CF_API_URL": "api.example", "CF_CLIENT_ID": "a",
                                "CF_CLIENT_SECRET": "b"})
    ok = cloud_foundry_settings({"CF_API_URL": "https://api.example/", "CF_CLIENT_ID": "a",
                                 "CF_CLIENT_SECRET": "b"})
    assert ok.api_url == "https://api.example"


def test_dagster_gets_a_psycopg2_url_and_logs_get_no_password():
    assert sqlalchemy_url("postgresql://u:p@h:1/d?host=/s") == "postgresql+psycopg2://u:p@h:1/d?host=/s"
    assert redact_password("postgresql://u:p@h/d") == "postgresql://u:***@h/d"


def test_a_database_url_pointing_nowhere_is_an_error_naming_the_variable(monkeypatch):
    # Found by the fault campaign: the run failed with psycopg's bare "connection refused".
    url = f"postgresql://billing:s3cret@127.0.0.1:{free_port()}/billing"
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigError) as refused:
        BillingDatabase().connection_url()
    message = str(refused.value)
    assert "given by DATABASE_URL" in message and "Check DATABASE_URL" in message
    assert "s3cret" not in message and ":***@" in message


def test_an_unreachable_cf_api_url_is_named_and_later_reads_fail_at_once():
    # Found by the fault campaign: the error did not name CF_API_URL, and every list of the
    # snapshot tried the dead root again with all its retries (42 s for one landing).
    waits: list[float] = []
    with CloudFoundryClient(f"http://127.0.0.1:{free_port()}", "billing", "secret",
                            retry=RetryPolicy(max_attempts=3, backoff_seconds=0.01),
                            sleep=waits.append) as client:
        with pytest.raises(CfApiError, match=r"\(CF_API_URL\)"):
            client.get("/v3/organizations")
        assert len(waits) == 2
        with pytest.raises(CfApiError, match="Check CF_API_URL"):
            client.get("/v3/spaces")
        assert len(waits) == 2  # no new attempts
