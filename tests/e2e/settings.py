"""Settings of the daphne and listener processes the end-to-end tests start.

``tests.settings`` plus: the in-process listener when ``PGOBSERVE_TEST_IN_PROCESS=1``, a
leader-lock key of the test's own, so no other listener on the test database can lead, and
the app daphne serves as ``ASGI_APPLICATION``: ``manage.py pgobserve listen`` imports it to
know the model observers of its consumers, whose events it sends.
"""

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, PGOBSERVE

ASGI_APPLICATION = "tests.e2e.asgi.application"

PGOBSERVE = {
    **PGOBSERVE,
    "IN_PROCESS_LISTENER": os.environ.get("PGOBSERVE_TEST_IN_PROCESS") == "1",
    "LEADER_LOCK_KEY": int(os.environ.get("PGOBSERVE_TEST_LOCK_KEY", "7340")),
    # Settings a fault test runs with (tests/e2e/test_faults.py), as JSON.
    **json.loads(os.environ.get("PGOBSERVE_TEST_SETTINGS", "{}")),
}

# Behind PgBouncer in transaction pooling (tests/e2e/test_pgbouncer.py): "default" (Django's
# requests and pushes' re-reads) through the pooler at PGOBSERVE_TEST_POOLER (host:port),
# "direct" to the server for the listener, which needs a session (LISTEN, its lock).
if os.environ.get("PGOBSERVE_TEST_POOLER"):
    _host, _port = os.environ["PGOBSERVE_TEST_POOLER"].rsplit(":", 1)
    DATABASES["direct"] = dict(DATABASES["default"])
    DATABASES["default"] = {
        **DATABASES["default"],
        "HOST": _host,
        "PORT": _port,
        "DISABLE_SERVER_SIDE_CURSORS": True,
    }
