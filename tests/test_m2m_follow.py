"""Many-to-many: which ``through`` tables a consumer follows, and the opt-outs.

The pushes themselves (``add``, ``remove``, ``clear``, ``set``, raw SQL, TRUNCATE) are in
``tests/e2e/test_m2m.py``.
"""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.test import override_settings
from tasks.models import Task

from pgobserve import relations
from pgobserve.generics import GenericAsyncAPIConsumer
from tests.e2e.m2m_consumers import PortedM2MUserConsumer
from tests.settings import PGOBSERVE

User = get_user_model()
USER_M2M = ["auth_user_groups", "auth_user_user_permissions"]


# Which through tables have triggers is what these tests check.
pytestmark = pytest.mark.usefixtures("only_settings_mark_models")


class GroupConsumer(GenericAsyncAPIConsumer):
    queryset = Group.objects.all()


def joined(cls: type, **attributes) -> list[str]:
    consumer = cls()
    consumer.scope = {"user": AnonymousUser()}
    consumer.__dict__.update(attributes)
    return consumer.joined_tables()


def test_through_tables_of_both_sides_are_found():
    assert relations.many_to_many_tables(User) == set(USER_M2M)
    assert relations.many_to_many_tables(Group) == {"auth_user_groups", "auth_group_permissions"}
    assert relations.many_to_many_tables(Task) == set()


def test_a_consumer_follows_the_observed_through_tables_of_its_model(caplog):
    with caplog.at_level(logging.WARNING):
        assert joined(PortedM2MUserConsumer) == USER_M2M
        assert joined(PortedM2MUserConsumer, observer_many_to_many_relationships=True) == USER_M2M
        # Both sides, where both are observed: Group.user_set reads auth_user_groups.
        both = {**PGOBSERVE, "MODELS": ["auth.User", "auth.Group"]}
        with override_settings(PGOBSERVE=both):
            assert joined(GroupConsumer) == ["auth_group_permissions", "auth_user_groups"]
        # The user side unobserved: its through table has no triggers and is left out.
        alone = {"MODELS": ["auth.Group"], "CLOSE_ON_LOGOUT": False}
        with override_settings(PGOBSERVE=alone):
            assert joined(GroupConsumer) == ["auth_group_permissions"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_opt_outs_stop_following_through_tables():
    assert joined(PortedM2MUserConsumer, observe_related=False) == []
    assert joined(PortedM2MUserConsumer, observer_many_to_many_relationships=False) == []
    # Nor does a model observer keep the old rows of a through table (that needs triggers).
    unrelated = {**PGOBSERVE, "OBSERVE_RELATED": False, "OLD_ROWS": ["auth.User"]}
    with override_settings(PGOBSERVE=unrelated):
        assert joined(PortedM2MUserConsumer) == []
        # Following forced on for the class: only tables that have triggers.
        assert joined(PortedM2MUserConsumer, observe_related=True) == []
    # A query joining the through table still follows it: that decides visibility.
    consumer = PortedM2MUserConsumer()
    consumer.observer_many_to_many_relationships = False
    members = User.objects.filter(groups=1)
    assert consumer.joined_tables(members) == ["auth_user_groups"]
