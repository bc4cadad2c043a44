"""HTTP responses of the simulator and the Cloud Controller's v3 error envelope
(docs/cf-and-uaa.md §6.1)."""

import json
from dataclasses import dataclass
from typing import Any

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
# Presenters build fresh trees without cycles, so the circular-reference check is pure cost.
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


@dataclass(frozen=True, slots=True)
class Response:
    """A complete reply: status, body and any headers beyond Content-Type/Content-Length."""

    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()


def dump_json(payload: Any) -> bytes:
    """Compact JSON (no spaces), as fast as the standard library gets."""
    return _ENCODER.encode(payload).encode()


def json_response(
    status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    return Response(status=status, body=dump_json(payload), headers=headers)


def cf_error_body(title: str, code: int, detail: str) -> dict[str, Any]:
    return {"errors": [{"detail": detail, "title": title, "code": code}]}


class ApiError(Exception):
    """A v3 error reply raised from deep inside a handler: ``{"errors": [...]}``."""

    def __init__(self, status: int, title: str, code: int, detail: str) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.code = code
        self.detail = detail

    def response(self) -> Response:
        return json_response(self.status, cf_error_body(self.title, self.code, self.detail))


def not_authenticated() -> ApiError:
    return ApiError(401, "CF-NotAuthenticated", 10002, "Authentication error")


def invalid_auth_token() -> ApiError:
    return ApiError(401, "CF-InvalidAuthToken", 1000, "Invalid Auth Token")


def not_authorized() -> ApiError:
    return ApiError(
        403, "CF-NotAuthorized", 10003, "You are not authorized to perform the requested action"
    )


def bad_query_parameter(detail: str) -> ApiError:
    return ApiError(
        400, "CF-BadQueryParameter", 10005, f"The query parameter is invalid: {detail}"
    )


def unprocessable(detail: str) -> ApiError:
    return ApiError(422, "CF-UnprocessableEntity", 10008, detail)


def resource_not_found(detail: str) -> ApiError:
    return ApiError(404, "CF-ResourceNotFound", 10010, detail)
