"""sessionlog for Python: an embedded, log-structured session store.

session2's store interface (``LogSessionStore``, ``DirSessionStore``,
``MemorySessionStore``), a Django session backend
(``SESSION_ENGINE = "sessionlog_store.django"``) and a Flask session interface
(``sessionlog_store.flask.SessionlogSessionInterface``), all over the Rust engine,
which releases the GIL during every store call. ``metrics()`` returns
what every store of the process counted (loads, saves, conflicts, errors,
latencies, compactions), ``metrics_text()`` the same in the Prometheus text
format.
"""

from ._errors import (
    BackendError,
    BadKeysError,
    ConflictError,
    CorruptError,
    Error,
    InvalidIdError,
    InvalidOwnerError,
    InvalidOptionError,
    IoError,
    KeyMissingError,
    NotAStoreError,
    PoisonedError,
    SerializationError,
    TooLargeError,
    UndecryptableError,
    UnsafeError,
    BusyError,
    ServerTimeoutError,
    QuotaExceededError,
    RandomSourceError,
    UnsupportedVersionError,
)
from ._metrics import metrics, metrics_text
from ._native import DEFAULT_MAX_SESSION_SIZE, MAX_ID_LEN, generate_id, is_valid_id
from ._stores import (
    DirSessionStore,
    LogSessionStore,
    MemorySessionStore,
    OwnedSession,
    SessionStore,
    session_version,
)

__version__ = "0.1.0"

__all__ = [
    "SessionStore",
    "LogSessionStore",
    "DirSessionStore",
    "MemorySessionStore",
    "session_version",
    "OwnedSession",
    "generate_id",
    "metrics",
    "metrics_text",
    "is_valid_id",
    "MAX_ID_LEN",
    "DEFAULT_MAX_SESSION_SIZE",
    "Error",
    "InvalidIdError",
    "InvalidOwnerError",
    "TooLargeError",
    "ConflictError",
    "NotAStoreError",
    "UnsupportedVersionError",
    "CorruptError",
    "IoError",
    "PoisonedError",
    "InvalidOptionError",
    "BackendError",
    "SerializationError",
    "UnsafeError",
    "BusyError",
    "ServerTimeoutError",
    "QuotaExceededError",
    "RandomSourceError",
    "KeyMissingError",
    "UndecryptableError",
    "BadKeysError",
]
