"""Settings of the benchmark site (driven by bench/bench_ws.py through the environment)."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.pgserver import django_database  # noqa: E402

SECRET_KEY = "pgobserve-bench"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "channels",
    "rest_framework",
    "pgobserve",
    "benchsite",
]
DATABASES = {"default": django_database(os.environ["PGOBSERVE_BENCH_DSN"])}
DATABASES["default"]["NAME"] = os.environ.get("PGOBSERVE_BENCH_DB", "pgobserve_bench")
# Persistent connections (None) unless bench_ws.py --conn-max-age says otherwise: 0 is
# Django's default, under which Channels' database_sync_to_async closes the connection
# after every call (pgobserve's own reads keep theirs: pgobserve/feed_connection.py).
_max_age = os.environ.get("BENCH_CONN_MAX_AGE", "none")
DATABASES["default"]["CONN_MAX_AGE"] = None if _max_age == "none" else int(_max_age)
if os.environ.get("BENCH_POOL") == "1":  # Django 5.1+'s pool (needs psycopg-pool)
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = True
ASGI_APPLICATION = "benchsite.asgi.application"
PGOBSERVE = {
    "MODELS": ["benchsite.BenchItem", "benchsite.Card"],  # Card brings Board (its FK)
    "IN_PROCESS_LISTENER": os.environ.get("BENCH_LAYER", "memory") == "memory",
}
if os.environ.get("BENCH_LAYER") == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                        "socket_timeout": None,
                    }
                ],
                "capacity": 100_000,
                "prefix": os.environ.get("PGOBSERVE_BENCH_DB", "pgobserve_bench"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "pgobserve.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 100_000},
        }
    }
LOGGING = {"version": 1, "disable_existing_loggers": False}
