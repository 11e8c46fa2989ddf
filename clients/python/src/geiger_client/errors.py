"""Typed client errors, as the Rust SDK has them: the API's own errors by
code, transport failures after every endpoint was tried, answers that break
the contract, and records that fail verification (:class:`VerifyError`)."""

from __future__ import annotations

from typing import Any, Optional

from .verify import VerifyError

__all__ = ["ClientError", "ApiError", "PreviousAlreadyUsed", "Unavailable", "ProtocolError", "VerifyError"]


class ClientError(Exception):
    """Base of every error the client raises except :class:`VerifyError`."""


class ApiError(ClientError):
    """A node answered in the error shape ``{"error": {"code", "message"}}``
    (a 4xx, or a 5xx after every retry)."""

    def __init__(self, status: int, code: str, message: str, body: Any) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class PreviousAlreadyUsed(ApiError):
    """``previous`` already has a successor that is not this request's
    replay; ``existing_id`` is the draw already issued after it."""

    def __init__(self, status: int, message: str, body: Any, existing_id: str) -> None:
        super().__init__(status, "previous_already_used", message, body)
        self.existing_id = existing_id


class Unavailable(ClientError):
    """No endpoint answered in time, after every retry."""

    def __init__(self, attempts: int, last: str) -> None:
        super().__init__(f"no node answered after {attempts} attempts: {last}")
        self.attempts = attempts
        self.last = last


class ProtocolError(ClientError):
    """The answer was not what the contract says."""

    def __init__(self, endpoint: str, detail: str) -> None:
        super().__init__(f"unexpected answer from {endpoint}: {detail}")
        self.endpoint = endpoint
        self.detail = detail


def api_error(status: int, body: Any, endpoint: str) -> ClientError:
    """The typed error for a non-success answer."""
    detail: Optional[Any] = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict) or not isinstance(detail.get("code"), str):
        return ProtocolError(endpoint, f"status {status} without the error shape: {body!r}")
    code, message = detail["code"], str(detail.get("message", ""))
    if code == "previous_already_used" and isinstance(detail.get("existing_id"), str):
        return PreviousAlreadyUsed(status, message, body, detail["existing_id"])
    return ApiError(status, code, message, body)
