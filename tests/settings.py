"""Settings of the test suite, and of the processes the tests start (listener, daphne).

The database comes from ``tests/pgserver.py``. A process started by a test reaches the
test database by ``PGOBSERVE_TEST_DBNAME`` (pytest-django's ``test_…`` database), and the
channel layer is Redis when ``PGOBSERVE_TEST_LAYER=redis`` (with ``REDIS_URL``).
"""

import os
import sys
from pathlib import Path

from tests.pgserver import django_database, dsn

ROOT = Path(__file__).resolve().parent.parent
# The example project's apps are importable by their short names ("tasks", ...).
if str(ROOT / "example") not in sys.path:
    sys.path.insert(0, str(ROOT / "example"))

SECRET_KEY = "pgobserve-tests"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
    "rest_framework",
    "pgobserve",
    "tests.testapp",
    # --- example apps used by the end-to-end tests (added by the WebSocket work) ---
    "accounts",
    "tasks",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

DATABASES = {"default": django_database(dsn())}
if os.environ.get("PGOBSERVE_TEST_DBNAME"):
    DATABASES["default"]["NAME"] = os.environ["PGOBSERVE_TEST_DBNAME"]
    DATABASES["default"]["TEST"] = {"NAME": os.environ["PGOBSERVE_TEST_DBNAME"]}
# Fault tests (tests/e2e/test_faults.py) start servers with persistent connections and
# group memberships that expire within seconds, standing in for a day.
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("PGOBSERVE_TEST_CONN_MAX_AGE", "0"))
GROUP_EXPIRY = {"group_expiry": int(os.environ.get("PGOBSERVE_TEST_GROUP_EXPIRY", "86400"))}
# A fault test makes the layer drop messages: a tiny capacity, a stopped daphne's channel full.
LAYER_CAPACITY = int(os.environ.get("PGOBSERVE_TEST_LAYER_CAPACITY", "10000"))

PGOBSERVE = {
    "MODELS": [
        # --- tests.testapp models (database-side tests) ---
        "testapp.Item",
        "testapp.UUIDItem",
        "testapp.TextItem",
        "testapp.Weird",
        "testapp.Sentinel",
        "testapp.TestModel",
        # --- example models (end-to-end tests) ---
        "auth.User",
        "tasks.Project",
        "tasks.Task",
    ],
    # The models of the tests' model observers, which the session's install may not see
    # (defined inside test functions, or in a module the run does not collect):
    # tests/test_dcrf_observer.py, test_model_observer_feed.py (whose many_to_many observer
    # needs the old rows of auth_user_groups to name the user a membership was removed from).
    "OLD_ROWS": ["auth.User", "auth.User_groups", "testapp.TestModelWithCustomPK", "tasks.Task"],
}

REDIS_URL = os.environ.get("REDIS_URL", "")
if os.environ.get("PGOBSERVE_TEST_LAYER") == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {"address": REDIS_URL or "redis://127.0.0.1:6379/0", "socket_timeout": None}
                ],
                "capacity": LAYER_CAPACITY,
                "prefix": os.environ.get("PGOBSERVE_TEST_REDIS_PREFIX", "pgobserve-tests"),
                **GROUP_EXPIRY,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "pgobserve.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": LAYER_CAPACITY, **GROUP_EXPIRY},
        }
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pgobserve": {"handlers": ["console"], "level": "INFO"}},
}
