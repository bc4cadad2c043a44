"""Alerts to the billing team: a JSON payload posted to BILLING_ALERT_WEBHOOK_URL, when set.

Best effort: the sensors record every alert in the database before posting it, so a webhook
that is down loses no alert (it is logged as a warning and the alert stays in its table).
"""

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import httpx

log = logging.getLogger(__name__)
WEBHOOK_VARIABLE = "BILLING_ALERT_WEBHOOK_URL"


def alert_webhook_url() -> str | None:
    """The webhook alerts go to, read when an alert is raised (never at import); None: unset."""
    return os.environ.get(WEBHOOK_VARIABLE) or None


def post_alert(url: str, payload: Mapping[str, Any]) -> None:
    """POST ``payload`` as JSON to ``url``; a failure is logged, never raised."""
    try:
        httpx.post(url, content=json.dumps(payload),
                   headers={"Content-Type": "application/json"}, timeout=10).raise_for_status()
    except httpx.HTTPError as exc:  # the alert is recorded; posting it is best effort
        log.warning("alert webhook %s failed: %s", url, exc)
