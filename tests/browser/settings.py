"""Settings of the example's daphne and listener in the browser tests: the example's own
(``example/project/settings.py``, the board as a user gets it) on the test database.

The processes get ``DATABASE_URL`` (the test database) and, in the "redis" mode,
``REDIS_URL`` from the fixture, so the example's settings choose their database and layout
as they do for a user. Only what keeps concurrent runs apart differs: a Redis prefix of the
run's own, and a fast password hasher for the users the tests create.
"""

import os

from project.settings import *  # noqa: F403
from project.settings import CHANNEL_LAYERS

if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = os.environ["PGOBSERVE_TEST_REDIS_PREFIX"]

# The tests create users with this hasher (PBKDF2 costs half a second per login); the
# defaults follow, so a password set any other way still checks.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
