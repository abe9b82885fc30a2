"""Joined tables: found from the queryset itself, observed by default, routed as a re-check.

The end-to-end behaviour (an ownership change moving tasks between users' sockets) is in
``tests/e2e/test_related.py``; these check the parts on their own, without a server.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db.models import Exists, OuterRef, Q
from django.test import override_settings
from tasks.consumers import MyTaskConsumer, TaskConsumer
from tasks.models import Project, Task

from pgobserve import registry, relations
from pgobserve.watches import EVERYTHING, Watch, WatchRegistry
from tests.settings import PGOBSERVE

User = get_user_model()


@pytest.mark.parametrize(
    ("queryset", "tables"),
    [
        (Task.objects.all(), set()),
        (Task.objects.filter(project=1, assignee=2), set()),  # the FK columns are the task's
        (Task.objects.filter(Q(project__owner=1) | Q(assignee=1)), {"tasks_project"}),
        (Task.objects.filter(project__owner__username="x"), {"tasks_project", "auth_user"}),
        (Task.objects.filter(assignee__is_active=True), {"auth_user"}),
        (Task.objects.filter(project__in=Project.objects.filter(name="x")), {"tasks_project"}),
        (
            Task.objects.filter(Exists(Project.objects.filter(pk=OuterRef("project"), name="x"))),
            {"tasks_project"},
        ),
        # A subquery over the task table only (other tasks of the project): not followed.
        (Task.objects.exclude(project__tasks__title="x"), set()),
        (Task.objects.exclude(project__tasks__assignee__username="x"), {"auth_user"}),
        (Project.objects.filter(tasks__done=False), {"tasks_task"}),
    ],
)
def test_joined_tables_are_found_from_the_query(queryset, tables):
    assert relations.joined_tables(queryset) == tables


def consumer(cls: type, user) -> object:
    instance = cls()
    instance.scope = {"user": user}
    return instance


@pytest.mark.django_db
def test_a_consumer_follows_its_querysets_joins_and_its_filters(caplog):
    user = User.objects.create_user("joins")
    mine = consumer(MyTaskConsumer, user)
    assert mine.joined_tables() == ["tasks_project"]
    # A query subscription's filter adds its own joins to the queryset's.
    _, joined = mine.query_condition({"done": False})
    assert joined == ["tasks_project"]
    everyone = consumer(TaskConsumer, AnonymousUser())
    assert everyone.joined_tables() == []
    condition = Q(assignee__username="x")
    assert everyone.joined_tables(everyone._query_base().filter(condition)) == ["auth_user"]
    assert consumer(MyTaskConsumer, AnonymousUser()).joined_tables() == []  # .none()
    # Opting out: per class, or for the whole project.
    mine.observe_related = False
    assert mine.joined_tables() == []
    with override_settings(PGOBSERVE={**PGOBSERVE, "OBSERVE_RELATED": False}):
        assert consumer(MyTaskConsumer, user).joined_tables() == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.django_db
def test_a_joined_table_without_triggers_is_named_once_per_class(caplog):
    user = User.objects.create_user("unobserved")
    models = [label for label in PGOBSERVE["MODELS"] if label != "tasks.Project"]

    class Mine(MyTaskConsumer):
        pass

    settings = {**PGOBSERVE, "MODELS": models, "OBSERVE_RELATED": False}
    with override_settings(PGOBSERVE=settings), caplog.at_level(logging.WARNING):
        Mine.observe_related = True  # followed, but tasks_project has no triggers
        for _ in range(3):
            assert consumer(Mine, user).joined_tables() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "Mine reads tasks_project (tasks.Project)" in warnings[0]
    assert 'Add "tasks.Project" to PGOBSERVE["MODELS"]' in warnings[0]


def test_models_reached_by_forward_relations_are_observed_by_default(only_settings_mark_models):
    with override_settings(PGOBSERVE={"MODELS": ["tasks.Task"], "CLOSE_ON_LOGOUT": False}):
        observed = registry.observed_models()
        # Task's foreign keys reach Project and User (one step: Project's owner is User).
        assert observed == [Task, Project, User]
    with override_settings(PGOBSERVE={"MODELS": ["auth.User"], "CLOSE_ON_LOGOUT": False}):
        tables = set(registry.observed_tables())
        # Many-to-many fields: their through tables.
        assert tables == {"auth_user", "auth_user_groups", "auth_user_user_permissions"}
    off = {"MODELS": ["tasks.Task"], "CLOSE_ON_LOGOUT": False, "OBSERVE_RELATED": False}
    with override_settings(PGOBSERVE=off):
        assert registry.observed_models() == [Task]


class CountingWatch(Watch):
    def __init__(self, table: str) -> None:
        self.table = table
        self.refreshes: list = []

    async def refresh(self, pks, batches=None) -> None:
        self.refreshes.append(pks)


async def flushed(watches: WatchRegistry) -> None:
    for _ in range(100):
        await asyncio.sleep(0)
        if watches._task is None or watches._task.done():
            return
    await asyncio.wait_for(watches._task, 5)


async def test_a_joined_table_change_is_one_re_check_of_the_watched_table():
    watches = WatchRegistry(may_get_more=lambda: True)
    tasks, other = CountingWatch("tasks_task"), CountingWatch("testapp_item")
    watches.add(tasks)
    watches.add(other)
    watches.route("tasks_project", "tasks_task")
    watches.route("tasks_project", "tasks_task")  # a second subscription following it

    # Many project rows in several messages, and a task change, in one batch: one re-check.
    for chunk in ([1, 2, 3], [4, 5], [6]):
        watches.changed("tasks_project", chunk, "b1")
    watches.changed("tasks_task", [7], "b1")
    await flushed(watches)
    assert tasks.refreshes == [EVERYTHING]
    assert other.refreshes == []

    watches.changed("auth_user", [1], "b2")  # not followed: nothing
    await flushed(watches)
    assert tasks.refreshes == [EVERYTHING]

    watches.unroute("tasks_project", "tasks_task")  # one follower left
    watches.changed("tasks_project", [1], "b3")
    await flushed(watches)
    assert tasks.refreshes == [EVERYTHING, EVERYTHING]
    watches.unroute("tasks_project", "tasks_task")
    watches.changed("tasks_project", [1], "b4")
    await flushed(watches)
    assert tasks.refreshes == [EVERYTHING, EVERYTHING]
    await watches.close()
