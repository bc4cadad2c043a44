"""boto3 clients for the AWS meters: one session, retries of throttling, bounded timeouts.

Production reads the foundation's AWS account with read-only credentials (README, "AWS
permissions"); the demo, dev and tests read moto's server on loopback through the very same
calls (embedded.py). Every failure of a call reaches the meters as ``AwsApiError``, whose
message names the service, the operation and what to check.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from boto3.session import Session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from billing_dagster.settings import ConfigError

DEFAULT_REGION = "us-gov-west-1"  # cloud.gov's region
VCAP_LABEL = "billing-aws"  # a user-provided service holding the read-only credentials


class AwsApiError(RuntimeError):
    """An AWS call failed after its retries; the message names the call."""


@dataclass(frozen=True)
class AwsSettings:
    region: str = DEFAULT_REGION
    endpoint_url: str | None = None  # moto's server, or a VPC endpoint
    access_key_id: str | None = None  # None: boto3's own chain (env, profile, role)
    secret_access_key: str | None = None
    session_token: str | None = None
    max_attempts: int = 6
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0

    def describe(self) -> str:
        where = self.endpoint_url or f"AWS {self.region}"
        who = "given keys" if self.access_key_id else "boto3's credential chain"
        return f"{where} with {who}"


def aws_credentials_from_vcap(raw: str | None) -> dict[str, str]:
    """Keys of the ``billing-aws`` user-provided service bound to the app, if any.

    ``cf create-user-provided-service billing-aws -p '{"aws_access_key_id": ...,
    "aws_secret_access_key": ..., "region": "us-gov-west-1"}'``; its name or a tag
    ``billing-aws`` finds it.
    """
    if not raw:
        return {}
    try:
        services = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"VCAP_SERVICES is not valid JSON ({exc})") from exc
    for instance in services.get("user-provided", []) if isinstance(services, dict) else []:
        if instance.get("name") == VCAP_LABEL or VCAP_LABEL in (instance.get("tags") or []):
            credentials = instance.get("credentials") or {}
            missing = [k for k in ("aws_access_key_id", "aws_secret_access_key")
                       if not credentials.get(k)]
            if missing:
                raise ConfigError(
                    f"the {VCAP_LABEL} service in VCAP_SERVICES has no {', '.join(missing)}: "
                    "update it with cf update-user-provided-service billing-aws -p "
                    "'{\"aws_access_key_id\": ..., \"aws_secret_access_key\": ...}'")
            return {k: str(v) for k, v in credentials.items() if isinstance(v, str | int)}
    return {}


class AwsClients:
    """One boto3 session and a client per service, created on first use."""

    def __init__(self, settings: AwsSettings) -> None:
        self.settings = settings
        self._session = Session(
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            aws_session_token=settings.session_token,
            region_name=settings.region)
        self._config = Config(
            retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            # a custom endpoint (moto, a VPC endpoint) has no per-bucket DNS names
            s3={"addressing_style": "path" if settings.endpoint_url else "auto"})
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(
                service, endpoint_url=self.settings.endpoint_url, config=self._config)
        return self._clients[service]

    def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """One call (retried by botocore on throttling and 5xx); AwsApiError once it gives up."""
        try:
            return getattr(self.client(service), operation)(**params)
        except ClientError as exc:
            raise AwsApiError(_client_error(service, operation, exc)) from exc
        except BotoCoreError as exc:
            raise AwsApiError(f"{service} {operation} failed: {exc}; check that "
                              f"{self.settings.describe()} is reachable and the credentials "
                              "are set") from exc

    def pages(self, service: str, operation: str, key: str,
              **params: Any) -> Iterator[list[dict[str, Any]]]:
        """The items under ``key`` of each page of a paginated listing."""
        try:
            for page in self.client(service).get_paginator(operation).paginate(**params):
                yield page.get(key, [])
        except ClientError as exc:
            raise AwsApiError(_client_error(service, operation, exc)) from exc
        except BotoCoreError as exc:
            raise AwsApiError(f"{service} {operation} failed: {exc}; check that "
                              f"{self.settings.describe()} is reachable") from exc


def error_code(exc: BaseException) -> str | None:
    """The AWS error code behind an AwsApiError (or a ClientError), if there is one."""
    cause = exc.__cause__ if isinstance(exc, AwsApiError) else exc
    if isinstance(cause, ClientError):
        return cause.response.get("Error", {}).get("Code")
    return None


def _client_error(service: str, operation: str, exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    code, message = error.get("Code", "?"), error.get("Message", "")
    attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
    hint = {"AccessDenied": "grant the read-only permissions listed in the README",
            "AccessDeniedException": "grant the read-only permissions listed in the README",
            "UnrecognizedClientException": "check the AWS access key",
            "InvalidClientTokenId": "check the AWS access key",
            "SignatureDoesNotMatch": "check the AWS secret key"}.get(
                code, "retried as far as the retry policy allows")
    return (f"{service} {operation} failed with {code} after {attempts + 1} attempt(s): "
            f"{message}; {hint}")


def tags_of(tag_list: list[Mapping[str, Any]] | None) -> dict[str, str]:
    """AWS's [{Key, Value}] tag lists as a dict."""
    return {str(t["Key"]): str(t.get("Value", "")) for t in tag_list or []}
