"""Settings of the example project: one process, in-process listener, in-memory layer.

Set ``REDIS_URL`` to switch to the production layout: the Redis channel layer and a
separate ``python example/manage.py pgobserve listen`` process.
"""

import os
from pathlib import Path

from .database import database_url, django_database

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "pgobserve-example-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
# Serving on another interface (demo --host 0.0.0.0)? Name the host: DJANGO_ALLOWED_HOSTS=a,b
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "pgobserve",
    "accounts",
    "tasks",
    "project",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {"default": django_database(database_url())}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

PGOBSERVE = {
    "MODELS": ["auth.User", "tasks.Project", "tasks.Task"],
    # One process: the listener runs inside daphne. With Redis, run `pgobserve listen`.
    "IN_PROCESS_LISTENER": not os.environ.get("REDIS_URL"),
}

if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 times an idle receive() out after 5 s unless this is None.
                "hosts": [{"address": os.environ["REDIS_URL"], "socket_timeout": None}],
                "capacity": 10_000,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "pgobserve.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 10_000},
        }
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pgobserve": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
