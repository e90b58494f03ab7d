"""Settings for running djapp under gunicorn. The session engine and its
store come from the environment, so tests and benchmarks can point every
worker at one store (or at Django's own backends, for comparison)."""

import os
import tempfile

SECRET_KEY = os.environ.get("DJAPP_SECRET_KEY", "djapp-test-secret-key-0123456789abcdef")
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.sessions"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
ROOT_URLCONF = "djapp.urls"
USE_TZ = True
WSGI_APPLICATION = "djapp.wsgi.application"

SESSION_ENGINE = os.environ.get("DJAPP_SESSION_ENGINE", "sessionlog_store.django")
# A private directory by default: a store refuses one that other users can
# write, such as /tmp itself.
SESSIONLOG_PATH = os.environ.get(
    "DJAPP_SESSIONLOG_PATH", os.path.join(tempfile.mkdtemp(prefix="djapp-"), "sessions.db")
)
SESSIONLOG_CONDITIONAL = os.environ.get("DJAPP_CONDITIONAL", "") == "1"
SESSIONLOG_OPTIONS = {"sync": os.environ.get("DJAPP_SYNC", "interval")}
SESSION_FILE_PATH = os.environ.get("DJAPP_SESSION_FILE_PATH") or None
if os.environ.get("DJAPP_MAX_SESSIONS_PER_USER"):
    SESSIONLOG_MAX_SESSIONS_PER_USER = int(os.environ["DJAPP_MAX_SESSIONS_PER_USER"])

_db = os.environ.get("DJAPP_DB", "sqlite")
if _db == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "test",
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "CONN_MAX_AGE": None,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DJAPP_SQLITE", "/tmp/djapp.sqlite3"),
            "OPTIONS": {"timeout": 30},
        }
    }

if os.environ.get("DJAPP_REDIS"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["DJAPP_REDIS"],
            "KEY_PREFIX": os.environ.get("DJAPP_REDIS_PREFIX", ""),
        }
    }
