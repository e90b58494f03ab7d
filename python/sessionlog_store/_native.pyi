"""Type stubs for the Rust half of sessionlog (``sessionlog_store._native``)."""

from os import PathLike
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union, final

__all__ = [
    "Store",
    "generate_id",
    "is_valid_id",
    "metrics_samples",
    "MAX_ID_LEN",
    "DEFAULT_MAX_SESSION_SIZE",
]

MAX_ID_LEN: int
DEFAULT_MAX_SESSION_SIZE: int

def generate_id() -> str:
    """A new random session id: 128 bits, 22 base64url characters."""

def is_valid_id(id: str) -> bool:
    """Whether ``id`` is 1 to 128 of ``A-Z a-z 0-9 - _ ,``."""

@final
class Store:
    """A LogStore, DirStore or MemoryStore: bytes in, bytes out, times in
    milliseconds since the Unix epoch. Every call releases the GIL."""

    @staticmethod
    def log(
        path: Union[str, PathLike[str]],
        *,
        sync: str = "interval",
        sync_interval: float = 1.0,
        max_idle: Optional[float] = None,
        max_session_size: Optional[int] = None,
        repair: bool = False,
        background: bool = True,
        hashed_ids: bool = False,
        allow_others_to_write_directory: bool = False,
        maintain_as_owner: bool = False,
        max_sessions: Optional[int] = None,
        max_bytes: Optional[int] = None,
        when_full: Optional[str] = None,
        encryption_key_file: Optional[Union[str, PathLike[str]]] = None,
        encryption_keys: Optional[Sequence[str]] = None,
        encryption_accept_plaintext: bool = False,
        max_sessions_per_owner: Optional[int] = None,
    ) -> Store: ...
    @staticmethod
    def dir(
        path: Union[str, PathLike[str]],
        *,
        sync: str = "interval",
        sync_interval: float = 1.0,
        max_idle: Optional[float] = None,
        max_session_size: Optional[int] = None,
        hashed_ids: bool = False,
        allow_others_to_read_directory: bool = False,
        allow_others_to_write_directory: bool = False,
        maintain_as_owner: bool = False,
        encryption_key_file: Optional[Union[str, PathLike[str]]] = None,
        encryption_keys: Optional[Sequence[str]] = None,
        encryption_accept_plaintext: bool = False,
        max_sessions: Optional[int] = None,
        max_bytes: Optional[int] = None,
        max_sessions_per_owner: Optional[int] = None,
    ) -> Store: ...
    @staticmethod
    def memory(
        *,
        max_idle: Optional[float] = None,
        max_session_size: Optional[int] = None,
        encryption_key_file: Optional[Union[str, PathLike[str]]] = None,
        encryption_keys: Optional[Sequence[str]] = None,
        max_sessions_per_owner: Optional[int] = None,
    ) -> Store: ...
    @property
    def kind(self) -> str: ...
    @property
    def path(self) -> Optional[Path]:
        """The store's file or directory (None for memory)."""
    @property
    def owner_uid(self) -> Optional[int]:
        """The user id the store's files belong to (None for memory)."""
    @property
    def hashed_ids(self) -> bool:
        """True if only digests of session ids are stored."""
    @property
    def encrypted(self) -> bool:
        """True if session data is encrypted (``encryption_keys``)."""
    @property
    def is_thread_safe(self) -> bool: ...
    @property
    def is_multiprocess_safe(self) -> bool: ...
    def setup(self) -> None: ...
    def load(self, id: str) -> Optional[Tuple[bytes, int, Optional[int], Optional[int]]]:
        """``(data, version, expires_ms, modified_ms)`` or None."""
    def save(
        self,
        id: str,
        data: bytes,
        expires_ms: Optional[int] = None,
        version: int = 0,
        if_unchanged: bool = False,
        owner: Optional[str] = None,
    ) -> Tuple[int, Optional[int]]:
        """Returns ``(new_version, modified_ms)``; ``ConflictError`` if
        ``if_unchanged`` and the stored version is not ``version``."""
    def load_owned(self, id: str) -> Optional[Tuple[bytes, int, Optional[int], Optional[int], Optional[str]]]:
        """``(data, version, expires_ms, modified_ms, owner)`` or None."""
    def sessions_of(self, owner: str) -> List[Tuple[str, int, Optional[int], int, int]]:
        """``(id, modified_ms, expires_ms, version, size)``, newest first."""
    def delete_sessions_of(self, owner: str, keep: Optional[str] = None) -> int: ...
    def erase_sessions_of(self, owner: str) -> int: ...
    def delete(self, id: str) -> bool: ...
    def has(self, id: str) -> bool: ...
    def touch(self, id: str) -> bool: ...
    def sessions(self) -> List[Tuple[str, bytes, int, Optional[int], Optional[int]]]: ...
    def delete_old(self, max_idle: float) -> int: ...
    def delete_expired(self) -> int: ...
    def sync(self) -> None: ...
    def compact(self) -> Dict[str, int]: ...

def metrics_samples() -> List[Tuple[str, str, Dict[str, str], Optional[int], float, Optional[str]]]:
    """``(kind, name, labels, count, value, help)`` of every metric the
    stores of this process reported; a histogram's ``count`` and its sum in
    ``value``."""
