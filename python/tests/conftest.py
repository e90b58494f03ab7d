"""Shared fixtures: Django settings for the in-process Django tests, and
helpers to run and always stop child processes."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "apps"))

# One store for the in-process Django tests, configured before any test
# module imports Django models. Tests that need their own store use
# django.test.override_settings(SESSIONLOG_PATH=...).
_DJANGO_DIR = tempfile.mkdtemp(prefix="sessionlog-django-")
atexit.register(shutil.rmtree, _DJANGO_DIR, ignore_errors=True)

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-secret-key-not-for-production-0123456789",
        ALLOWED_HOSTS=["*"],
        # "sessionlog_store" for its management command (sessionlog_import).
        INSTALLED_APPS=["django.contrib.sessions", "sessionlog_store"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        ROOT_URLCONF="djapp.urls",
        SESSION_ENGINE="sessionlog_store.django",
        SESSIONLOG_PATH=os.path.join(_DJANGO_DIR, "sessions.db"),
        # For the import from Django's db backend (test_django_import.py).
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(_DJANGO_DIR, "django.sqlite3"),
            }
        },
        USE_TZ=True,
    )
    django.setup()


def wait_for(cond: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    """Polls ``cond`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)  # polling interval, not synchronisation


class Processes:
    """Starts child processes in their own process groups and stops every
    one of them (and their children) at teardown."""

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen] = []

    def start(self, args, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=15)
            # Workers of a killed master are in its group: make sure none
            # outlives the test.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def processes() -> Iterator[Processes]:
    p = Processes()
    try:
        yield p
    finally:
        p.stop_all()


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "sessions.db")
