"""The two processes of a cloud.gov deployment (manifest.yml), started the same way anywhere:

    python -m billing_dagster.deploy web      # the Dagster UI behind the UAA login, on $PORT
    python -m billing_dagster.deploy worker   # the Dagster daemon: schedules, sensors, runs

Each one, before it starts: reads the bound services (``VCAP_SERVICES``: the ``aws-rds``
PostgreSQL instance, and the user-provided ``billing-cf`` service holding the CF and UI
credentials) into the variables the project reads, unless those are already set; applies the
migrations (under the migration lock, so the two processes starting together apply them once);
and writes Dagster's instance configuration into DAGSTER_HOME: the repository's dagster.yaml
(runs in the worker's container), or the one ``BILLING_DAGSTER_YAML`` names
(``dagster.scale-out.yaml``: each run a Cloud Foundry task, README "Scaling out"), storage in
the same PostgreSQL. Nothing secret is logged.

    python -m billing_dagster.deploy task -- <command...>

is how a run's Cloud Foundry task starts (billing_dagster/run_launcher.py): the same reading of
the bindings and the same instance configuration, without the migrations (the processes that
launch runs applied them), then ``<command>`` in its place.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import psycopg

from billing_dagster.migrate import migrate
from billing_dagster.settings import ConfigError, database_settings, sqlalchemy_url

log = logging.getLogger("billing_dagster.deploy")
REPO_ROOT = Path(__file__).resolve().parent.parent
CF_SERVICE = "billing-cf"
# the user-provided service's credential -> the variable it sets
CF_CREDENTIALS = {"cf_api_url": "CF_API_URL", "cf_client_id": "CF_CLIENT_ID",
                  "cf_client_secret": "CF_CLIENT_SECRET", "ui_client_id": "UI_CLIENT_ID",
                  "ui_client_secret": "UI_CLIENT_SECRET", "ui_session_key": "UI_SESSION_KEY",
                  "cf_task_client_id": "CF_TASK_CLIENT_ID",
                  "cf_task_client_secret": "CF_TASK_CLIENT_SECRET"}
# the instance configurations at the repository root BILLING_DAGSTER_YAML may name, and the
# variables each needs besides the database
DAGSTER_YAMLS = {"dagster.yaml": (),
                 "dagster.scale-out.yaml": ("CF_API_URL", "CF_TASK_CLIENT_ID",
                                            "CF_TASK_CLIENT_SECRET")}


def bound_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The variables the bound services supply and the environment does not already set."""
    raw = env.get("VCAP_SERVICES")
    if not raw:
        return {}
    try:
        services = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"VCAP_SERVICES is not valid JSON ({exc})") from exc
    found: dict[str, str] = {}
    for instances in services.values() if isinstance(services, dict) else []:
        for instance in instances if isinstance(instances, list) else []:
            if instance.get("name") != CF_SERVICE and CF_SERVICE not in instance.get("tags", []):
                continue
            credentials = instance.get("credentials") or {}
            unknown = sorted(set(credentials) - set(CF_CREDENTIALS))
            if unknown:
                raise ConfigError(
                    f"VCAP_SERVICES[{CF_SERVICE!r}] has credentials {unknown} this project does "
                    f"not read: use {sorted(CF_CREDENTIALS)}")
            found.update({CF_CREDENTIALS[k]: str(v) for k, v in credentials.items() if v})
    return {name: value for name, value in found.items() if not env.get(name)}


def instance_yaml(env: Mapping[str, str]) -> Path:
    """The instance configuration BILLING_DAGSTER_YAML names (default dagster.yaml), once the
    variables it reads are known to be set; ConfigError naming the fix otherwise."""
    name = env.get("BILLING_DAGSTER_YAML") or "dagster.yaml"
    if name not in DAGSTER_YAMLS:
        raise ConfigError(
            f"BILLING_DAGSTER_YAML={name!r} is not one of the instance configurations at the "
            "repository root: use dagster.yaml (runs in the worker's container, the default) "
            "or dagster.scale-out.yaml (each run a Cloud Foundry task; README, 'Scaling out')")
    missing = [variable for variable in DAGSTER_YAMLS[name] if not env.get(variable)]
    if missing:
        keys = {v: k for k, v in CF_CREDENTIALS.items()}
        raise ConfigError(
            f"{name} needs {', '.join(missing)}: add "
            f"{', '.join(repr(keys[v]) for v in missing)} to the {CF_SERVICE} user-provided "
            "service (cf update-user-provided-service), or set them with cf set-env. The task "
            "client needs cloud_controller.write and SpaceDeveloper in this app's space "
            "(README, 'Scaling out').")
    return REPO_ROOT / name


def prepare(env: dict[str, str], home: Path, *, apply_migrations: bool = True) -> str:
    """Fill ``env`` from the bindings, migrate, write Dagster's instance; the database URL."""
    env.update(bound_variables(env))
    settings = database_settings(env, Path.cwd())
    if settings.url is None:
        raise ConfigError("no database: bind an aws-rds PostgreSQL instance (VCAP_SERVICES) or "
                          "set DATABASE_URL; the embedded server is for make run and make dev")
    log.info("database: %s", settings.describe())
    source = instance_yaml(env)
    if apply_migrations:
        with psycopg.connect(settings.url) as conn:
            applied = migrate(conn)
        log.info("migrations: %s", ", ".join(m.path.name for m in applied) or "up to date")
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, home / "dagster.yaml")
    log.info("Dagster instance: %s", source.name)
    env.update({"DAGSTER_HOME": str(home), "DATABASE_URL": settings.url,
                "BILLING_DAGSTER_PG_URL": sqlalchemy_url(settings.url)})
    return settings.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m billing_dagster.deploy",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("process", choices=("web", "worker", "task"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 3000))
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if (args.process == "task") != bool(command):
        parser.error("give a command after -- with task, and only with task")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    home = Path(os.environ.get("DAGSTER_HOME") or Path.home() / ".dagster_home")
    try:
        env = dict(os.environ)
        prepare(env, home, apply_migrations=args.process != "task")
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if args.process == "task":
        log.info("running the task's command: %s", command[0])
        os.execvpe(command[0], command, env)
    os.environ.update(env)
    if args.process == "web":
        from billing_dagster.web.__main__ import main as web

        return web(["--host", "0.0.0.0", "--port", str(args.port)])
    daemon = shutil.which("dagster-daemon", path=str(Path(sys.executable).parent)) or \
        "dagster-daemon"
    log.info("starting the Dagster daemon")
    os.chdir(home)  # from the app's root, Dagster would warn about the dagster.yaml there
    os.execv(daemon, [daemon, "run", "-w", str(REPO_ROOT / "workspace.yaml")])


if __name__ == "__main__":
    sys.exit(main())
