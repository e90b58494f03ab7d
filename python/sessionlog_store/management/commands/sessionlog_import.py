"""``manage.py sessionlog_import``: copy the sessions of Django's own
session backends into the sessionlog store, keeping each session's key,
data, expiry and user, so that switching ``SESSION_ENGINE`` to
``"sessionlog_store.django"`` logs nobody out.

Reads the engine ``--engine`` names, or else ``SESSION_ENGINE`` (run it
before switching the setting):

- ``django.contrib.sessions.backends.db`` and ``cached_db``: the
  ``django_session`` table (the database is the record of ``cached_db``);
- ``django.contrib.sessions.backends.file``: the files in
  ``SESSION_FILE_PATH``, whose expiry Django counts from the file's
  modification time;
- ``django.contrib.sessions.backends.cache``: the cache named by
  ``SESSION_CACHE_ALIAS``, when it can list its keys: the local-memory
  cache and Django's Redis cache. Memcached and the file and database
  caches keep no listable session keys (the file cache hashes them), so
  they are refused: move those users with a ``cached_db`` phase first.

Only live sessions are copied. Each gets its expiry as the source
computes it (``get_expiry_date``: the session's own ``set_expiry`` or
``SESSION_COOKIE_AGE`` from its last save) and its ``_auth_user_id`` as
owner. A key already live in the store is left alone unless
``--overwrite``. Signed session data is decoded with the source engine
(under ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``) and stored with
``SESSION_SERIALIZER``, as ``sessionlog_store.django`` stores every session; a
session that does not decode (its signature is wrong) is skipped and
counted."""

from __future__ import annotations

import datetime as _dt
import os
import time
from importlib import import_module
from typing import Any, Dict, Iterator, Optional, Tuple

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ...django import AUTH_USER_KEY, SessionStore as LogStoreSession, get_store
from ..._errors import ConflictError

#: A session read from the source: its key, data and deadline (epoch ms).
Found = Tuple[str, Dict[str, Any], int]

_DB = ("django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cached_db")
_FILE = "django.contrib.sessions.backends.file"
_CACHE = "django.contrib.sessions.backends.cache"
_OURS = "sessionlog_store.django"


def _ms(when: _dt.datetime) -> int:
    return int(when.timestamp() * 1000)


class Undecodable(Exception):
    """A session whose stored data the source engine does not decode."""


def _decode(engine: Any, encoded: str) -> Dict[str, Any]:
    # Django's decode() returns {} for a bad signature; an empty session
    # is not worth copying either.
    data: Dict[str, Any] = engine.SessionStore().decode(encoded)
    if not data:
        raise Undecodable
    return data


def _from_db(engine: Any, now_ms: int) -> Iterator[Any]:
    model = engine.SessionStore.get_model_class()
    now = _dt.datetime.fromtimestamp(now_ms / 1000.0, tz=_dt.timezone.utc)
    if not settings.USE_TZ:
        now = now.replace(tzinfo=None)
    for row in model.objects.filter(expire_date__gt=now).iterator():
        try:
            data = _decode(engine, row.session_data)
        except Undecodable:
            yield None
            continue
        expire = row.expire_date
        if expire.tzinfo is None:
            expire = expire.replace(tzinfo=_dt.timezone.utc)
        yield (row.session_key, data, _ms(expire))


def _from_files(engine: Any, now_ms: int) -> Iterator[Any]:
    store = engine.SessionStore()
    root = store.storage_path
    prefix = settings.SESSION_COOKIE_NAME
    for name in sorted(os.listdir(root)):
        if not name.startswith(prefix):
            continue
        key = name[len(prefix) :]
        path = os.path.join(root, name)
        try:
            with open(path, encoding="ascii") as f:
                encoded = f.read()
            mtime = os.stat(path).st_mtime
        except (OSError, UnicodeDecodeError):
            continue  # removed meanwhile, or not a session file
        try:
            data = _decode(engine, encoded)
        except Undecodable:
            yield None
            continue
        # As the file backend: the expiry counts from the last write.
        modified = _dt.datetime.fromtimestamp(mtime, tz=_dt.timezone.utc)
        age = store.get_expiry_age(modification=modified, expiry=data.get("_session_expiry"))
        deadline = _ms(modified) + int(age * 1000)
        if deadline > now_ms:
            yield (key, data, deadline)


def _from_cache(engine: Any, now_ms: int) -> Iterator[Any]:
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache
    from django.core.cache.backends.redis import RedisCache

    alias = settings.SESSION_CACHE_ALIAS
    cache = caches[alias]
    prefix = engine.KEY_PREFIX
    made_prefix = cache.make_key(prefix)
    if isinstance(cache, LocMemCache):
        # The cache's own dicts: it has no public way to list its keys.
        entries: Dict[str, Any] = getattr(cache, "_cache")
        expire_info: Dict[str, float] = getattr(cache, "_expire_info")
        keys = [(k, expire_info.get(k)) for k in list(entries.keys())]
        found = [(k[len(made_prefix) :], None if e is None else int(e * 1000)) for k, e in keys if k.startswith(made_prefix)]
    else:
        if not isinstance(cache, RedisCache):
            raise CommandError(
                f"the session cache {alias!r} ({type(cache).__name__}) cannot list its keys; "
                "only the local-memory and Redis caches can be imported from"
            )
        client = getattr(cache, "_cache").get_client(None, write=False)
        found = []
        for raw in client.scan_iter(match=made_prefix.replace("*", "[*]") + "*", count=1000):
            k = raw.decode() if isinstance(raw, bytes) else raw
            ttl = client.pttl(raw)
            found.append((k[len(made_prefix) :], None if ttl is None or ttl < 0 else now_ms + ttl))
    for key, deadline in found:
        data = cache.get(prefix + key)
        if not isinstance(data, dict) or not data:
            continue  # expired or removed meanwhile
        if deadline is None:
            # Kept for ever by the cache: the session's own expiry.
            deadline = now_ms + int(engine.SessionStore().get_expiry_age(expiry=data.get("_session_expiry")) * 1000)
        if deadline > now_ms:
            yield (key, data, deadline)


class Command(BaseCommand):
    help = (
        "Copy the sessions of Django's db, cached_db, file or cache session backend into "
        "the sessionlog store (SESSIONLOG_PATH), keeping keys, expiry and users, before "
        "switching SESSION_ENGINE to 'sessionlog_store.django'."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--engine",
            help="the session engine to read (default: SESSION_ENGINE)",
        )
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="replace sessions already live in the sessionlog store",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = options.get("engine") or settings.SESSION_ENGINE
        if name == _OURS:
            raise CommandError(
                "SESSION_ENGINE is already 'sessionlog_store.django': name the engine to import from "
                "with --engine (e.g. django.contrib.sessions.backends.db)"
            )
        if name in _DB:
            read = _from_db
        elif name == _FILE:
            read = _from_files
        elif name == _CACHE:
            read = _from_cache
        else:
            raise CommandError(
                f"cannot import from {name!r}: the db, cached_db, file and cache backends are supported"
            )
        engine = import_module(name)
        native = get_store().native
        serializer = LogStoreSession().serializer()
        now_ms = int(time.time() * 1000)
        copied = skipped = undecodable = 0
        for found in read(engine, now_ms):
            if found is None:
                undecodable += 1
                continue
            key, data, deadline = found
            if not isinstance(key, str) or not LogStoreSession()._validate_session_key(key):
                undecodable += 1
                continue
            user = data.get(AUTH_USER_KEY)
            owner: Optional[str] = None if user is None or user == "" else str(user)
            payload = serializer.dumps(data)
            if options.get("overwrite"):
                native.save(key, payload, deadline, 0, False, owner)
            else:
                try:
                    native.save(key, payload, deadline, 0, True, owner)
                except ConflictError:
                    skipped += 1
                    continue
            copied += 1
        native.sync()
        self.stdout.write(
            f"imported {copied} sessions from {name}; skipped {skipped} "
            f"(already live in the store{'' if options.get('overwrite') else ', kept'}); "
            f"{undecodable} undecodable"
        )
