"""DCRF's ``@action`` decorator tests (upstream tests/test_decorators.py), on pgobserve.

The test bodies are DCRF 1.3.0's with only the imports changed: an async action cannot be
atomic; a sync action runs in ``transaction.atomic`` when ``atomic=True``, or by default
when the default database has ``ATOMIC_REQUESTS``. All pass unchanged.

Upstream sets ``settings.DATABASES["default"]["ATOMIC_REQUESTS"]`` in place, which the
``settings`` fixture does not undo (it restores only attributes it set), so
``restore_atomic_requests`` puts the value back after each test: otherwise a run of one of
these tests alone left every later test's sync actions atomic.
"""

import pytest
from django.db import connections

from pgobserve.decorators import action


@pytest.fixture(autouse=True)
def restore_atomic_requests():
    default = connections["default"].settings_dict
    atomic_requests = default["ATOMIC_REQUESTS"]
    yield
    default["ATOMIC_REQUESTS"] = atomic_requests


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_async_action_works_with_atomic_request_on(settings):
    settings.DATABASES["default"]["ATOMIC_REQUESTS"] = True

    @action()
    async def simple_action():
        return True

    result = await simple_action()
    assert result


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_async_action_fails_when_atomic():

    with pytest.raises(ValueError):

        @action(atomic=True)
        async def simple_action():
            return True


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_sync_action_when_atomic():
    @action(atomic=True)
    def simple_action(self):
        return connections["default"].in_atomic_block, None

    result, _ = await simple_action(None)
    assert result


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_sync_action_when_not_atomic():
    @action(atomic=False)
    def simple_action(self):
        return connections["default"].in_atomic_block, None

    result, _ = await simple_action(None)
    assert not result


@pytest.mark.parametrize("atomic", [True, False])
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_sync_action_users_settings(settings, atomic):
    settings.DATABASES["default"]["ATOMIC_REQUESTS"] = atomic

    @action()
    def simple_action(self):
        return connections["default"].in_atomic_block, None

    result, _ = await simple_action(None)
    assert result == atomic
