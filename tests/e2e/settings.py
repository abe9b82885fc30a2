"""Settings of the daphne and listener processes the end-to-end tests start.

``tests.settings`` plus: the in-process listener when ``PGOBSERVE_TEST_IN_PROCESS=1``, a
leader-lock key of the test's own, so no other listener on the test database can lead, and
the app daphne serves as ``ASGI_APPLICATION``: ``manage.py pgobserve listen`` imports it to
know the model observers of its consumers, whose events it sends.
"""

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import PGOBSERVE

ASGI_APPLICATION = "tests.e2e.asgi.application"

PGOBSERVE = {
    **PGOBSERVE,
    "IN_PROCESS_LISTENER": os.environ.get("PGOBSERVE_TEST_IN_PROCESS") == "1",
    "LEADER_LOCK_KEY": int(os.environ.get("PGOBSERVE_TEST_LOCK_KEY", "7340")),
    # Settings a fault test runs with (tests/e2e/test_faults.py), as JSON.
    **json.loads(os.environ.get("PGOBSERVE_TEST_SETTINGS", "{}")),
}
