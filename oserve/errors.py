"""Exception hierarchy of oserve.

All errors raised on purpose by oserve derive from :class:`OserveError`::

    OserveError
    ├── ClientError                 (maps to HTTP 4xx)
    │   ├── InvalidRequestError     400, names ``param``
    │   ├── AuthenticationError     401
    │   ├── ModelNotFoundError      404
    │   └── RequestTooLargeError    413
    ├── ServerError                 (maps to HTTP 5xx)
    │   ├── NoReplicaReadyError     503, with ``retry_after_s``
    │   │   ├── QueueTimeoutError   503: waited in the router-side queue past its timeout
    │   │   └── QueueFullError      429: the router-side queue is full
    │   ├── ReplicaError            a replica failed while serving (carries ``replica_id``)
    │   │   └── RequestAbortedError the request was aborted (drain timeout, replica death)
    │   └── EngineStartError        a replica's engine could not start (carries ``cause``)
    ├── ConfigError                 a config field is invalid (names ``field`` and allowed values)
    ├── TraceError                  a trace file is malformed (names file, row, column)
    ├── ProfileError                a profile table does not match the config or is malformed
    └── PlanningError               a planner could not produce any plan
"""

from __future__ import annotations

__all__ = [
    "OserveError",
    "ClientError",
    "InvalidRequestError",
    "AuthenticationError",
    "ModelNotFoundError",
    "RequestTooLargeError",
    "ServerError",
    "NoReplicaReadyError",
    "QueueTimeoutError",
    "QueueFullError",
    "ReplicaError",
    "RequestAbortedError",
    "EngineStartError",
    "ConfigError",
    "TraceError",
    "ProfileError",
    "PlanningError",
]


class OserveError(Exception):
    """Root of every error oserve raises on purpose."""


class ClientError(OserveError):
    """The caller sent something invalid; maps to an HTTP 4xx status.

    Attributes:
        status_code: HTTP status to answer with.
        param: the request field at fault, or None.
        code: a short machine-readable code (OpenAI error envelope ``code``).
    """

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequestError(ClientError):
    status_code = 400


class AuthenticationError(ClientError):
    status_code = 401
    error_type = "authentication_error"


class ModelNotFoundError(ClientError):
    status_code = 404
    error_type = "not_found_error"


class RequestTooLargeError(ClientError):
    status_code = 413


class ServerError(OserveError):
    """oserve could not serve a valid request; maps to an HTTP 5xx status."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class NoReplicaReadyError(ServerError):
    status_code = 503
    error_type = "service_unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message, code="no_replica_ready")
        self.retry_after_s = retry_after_s


class QueueTimeoutError(NoReplicaReadyError):
    """A request waited in the router-side queue longer than its timeout (503, ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.code = "queue_timeout"


class QueueFullError(NoReplicaReadyError):
    """The router-side queue is full (429, ``Retry-After``); the request was not admitted to it."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.code = "queue_full"


class ReplicaError(ServerError):
    def __init__(self, message: str, *, replica_id: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.replica_id = replica_id


class RequestAbortedError(ReplicaError):
    """A request was aborted by oserve (drain timeout, replica death) before it finished."""

    status_code = 503


class EngineStartError(ServerError):
    """A replica's engine failed to start.

    Attributes:
        cause: one of ``"bad_model_path"``, ``"out_of_memory"``, ``"resource_busy"``,
            ``"timeout"``, ``"engine_error"``.
    """

    def __init__(self, message: str, *, cause: str, replica_id: str | None = None) -> None:
        super().__init__(message, code=cause)
        self.cause = cause
        self.replica_id = replica_id


class ConfigError(OserveError, ValueError):
    """A configuration value is invalid.

    Attributes:
        field: dotted path of the field at fault.
        allowed: a description of the allowed values or range.
    """

    def __init__(self, message: str, *, field: str | None = None, allowed: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.allowed = allowed


class TraceError(OserveError, ValueError):
    """A trace file is malformed. Names the file, the 1-based data row and the column."""

    def __init__(
        self, message: str, *, path: str | None = None, row: int | None = None, column: str | None = None
    ) -> None:
        where = ", ".join(
            p for p in (f"file {path}" if path else "", f"row {row}" if row is not None else "",
                        f"column {column!r}" if column else "") if p
        )
        super().__init__(f"{message} ({where})" if where else message)
        self.path = path
        self.row = row
        self.column = column


class ProfileError(OserveError, ValueError):
    """A profile or lookup table is malformed or does not match the configuration."""


class PlanningError(OserveError):
    """A planner could not produce any plan (not raised for merely infeasible demand)."""
