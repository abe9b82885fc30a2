"""Consumers only the tests need: push-time permission, query counters, a failing action,
a model observer routed per project."""

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework import serializers
from tasks.consumers import TASK_FILTERS
from tasks.models import Project, Task
from tasks.serializers import ProjectSerializer, TaskSerializer

from pgobserve import permissions
from pgobserve.decorators import action
from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import (
    ListModelMixin,
    ObserverModelInstanceMixin,
    ObserverQueryMixin,
    PatchModelMixin,
)
from pgobserve.observer import model_observer


class NoSecretPushes(permissions.BasePermission):
    """Every action is allowed, but no push for a task whose title starts with "secret"."""

    def has_permission(self, scope, consumer, action, **kwargs) -> bool:
        if action in ("create", "update", "delete"):
            return not Task.objects.filter(pk=kwargs["pk"], title__startswith="secret").exists()
        return True


class GuardedQueryTaskConsumer(ObserverQueryMixin, GenericAsyncAPIConsumer):
    queryset = Task.objects.all()
    serializer_class = TaskSerializer
    permission_classes = (NoSecretPushes,)
    query_filter_fields = {"project": ["exact"], "title": ["icontains"]}


class GuardedTaskConsumer(ObserverModelInstanceMixin, GenericAsyncAPIConsumer):
    queryset = Task.objects.all()
    serializer_class = TaskSerializer
    permission_classes = (NoSecretPushes,)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads: list[int] = []  # queries made by each push read

    def read_rows(self, pks, action="update"):
        with CaptureQueriesContext(connection) as queries:
            found = super().read_rows(pks, action)
        self.reads.append(len(queries))
        return found

    @action()
    async def push_reads(self, **kwargs):
        return self.reads, 200

    @action()
    async def boom(self, **kwargs):
        raise ValueError("a bug in an action")


class SharedTaskConsumer(ObserverModelInstanceMixin, GenericAsyncAPIConsumer):
    """``share_reads``: its sockets in one process read each batch once between them."""

    queryset = Task.objects.all()
    serializer_class = TaskSerializer
    share_reads = True
    reads: list[int] = []  # class-wide on purpose: the pks of every read, all sockets
    #: Every push's ask, all sockets: (socket, pks, batch ids or None), to explain a count.
    asks: list[tuple[str, list[str], list[str] | None]] = []

    def read_rows(self, pks, action="update"):
        SharedTaskConsumer.reads.append(len(pks))
        return super().read_rows(pks, action)

    async def read_rows_batch(self, pks, batches):
        ids = None if batches is None else sorted(map(str, batches))
        SharedTaskConsumer.asks.append((self.channel_name[-8:], sorted(map(str, pks)), ids))
        return await super().read_rows_batch(pks, batches)

    @action()
    async def shared_reads(self, **kwargs):
        return len(SharedTaskConsumer.reads), 200

    @action()
    async def shared_asks(self, **kwargs):
        return SharedTaskConsumer.asks[-20:], 200


class QueryTaskConsumer(ObserverQueryMixin, GenericAsyncAPIConsumer):
    """Query subscriptions ordered by title (not by pk), counting each push read's queries."""

    queryset = Task.objects.order_by("title", "id")
    serializer_class = TaskSerializer
    query_filter_fields = {"project": ["exact"], "done": ["exact"], "title": ["icontains"]}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads: list[tuple[str, int]] = []  # (which read, queries it made)

    def read_query_matches(self, pks, conditions):
        with CaptureQueriesContext(connection) as queries:
            found = super().read_query_matches(pks, conditions)
        self.reads.append(("matches", len(queries)))
        return found

    def read_query(self, condition, limit=None):
        with CaptureQueriesContext(connection) as queries:
            found = super().read_query(condition, limit)
        self.reads.append(("query", len(queries)))
        return found

    @action()
    async def push_reads(self, **kwargs):
        return self.reads, 200


class DCRFUserSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ("id", "username", "email")


class PortedUserConsumer(ObserverModelInstanceMixin, GenericAsyncAPIConsumer):
    """The consumer of DCRF's tests/test_model_observer.py, imports changed."""

    queryset = get_user_model().objects.all()
    serializer_class = DCRFUserSerializer

    @action()
    async def update_username(self, pk=None, username=None, **kwargs):
        user = await database_sync_to_async(self.get_object)(pk=pk)
        user.username = username
        await database_sync_to_async(user.save)()
        return {"pk": pk}, 200


class ProjectTasksConsumer(GenericAsyncAPIConsumer):
    """DCRF's model observer recipe, routed per project: every change of a task, however
    it was written, reaches the request ids subscribed to the project it was in or is in
    (delete to the project it left, update to the one it stayed in, create to the one it
    joined). The events are computed and serialized by the listener process."""

    queryset = Task.objects.all()
    serializer_class = TaskSerializer

    @model_observer(Task, serializer_class=TaskSerializer)
    async def project_tasks(
        self, message, observer=None, action=None, subscribing_request_ids=(), **kwargs
    ):
        for request_id in subscribing_request_ids:
            await self.reply(data=message, action=action, request_id=request_id)

    @project_tasks.groups_for_signal
    def project_tasks(self, instance=None, **kwargs):
        yield f"project-{instance.project_id}"

    @project_tasks.groups_for_consumer
    def project_tasks(self, project=None, **kwargs):
        yield f"project-{project}"

    @action()
    async def subscribe_project(self, project, request_id, **kwargs):
        await self.project_tasks.subscribe(project=project, request_id=request_id)
        return None, 201

    @action()
    async def unsubscribe_project(self, project, request_id, **kwargs):
        await self.project_tasks.unsubscribe(project=project, request_id=request_id)
        return None, 204


class OtherProjectTasksConsumer(ProjectTasksConsumer):
    """Another consumer class with the same observer (inherited): its sockets share the
    groups, so one serialized event reaches the sockets of both classes."""


# The example's consumers as they were before it required a login: open to anyone, every
# row. The tests use them (routed at the example's paths in asgi.py) to exercise the
# protocol without sessions; the example itself no longer serves anything anonymously.


class AnyoneTaskConsumer(
    ObserverModelInstanceMixin,
    ObserverQueryMixin,
    ListModelMixin,
    PatchModelMixin,
    GenericAsyncAPIConsumer,
):
    """``/ws/tasks/`` in the tests: list, retrieve, patch and subscribe to any task."""

    queryset = Task.objects.all()
    serializer_class = TaskSerializer
    permission_classes = (permissions.AllowAny,)
    query_filter_fields = TASK_FILTERS


class AnyoneOpenTaskConsumer(ObserverModelInstanceMixin, ListModelMixin, GenericAsyncAPIConsumer):
    """``/ws/open-tasks/`` in the tests: only tasks not done."""

    queryset = Task.objects.filter(done=False)
    serializer_class = TaskSerializer
    permission_classes = (permissions.AllowAny,)


class AnyoneProjectConsumer(ObserverModelInstanceMixin, GenericAsyncAPIConsumer):
    """``/ws/projects/`` in the tests: any project, by slug."""

    queryset = Project.objects.all()
    serializer_class = ProjectSerializer
    lookup_field = "slug"
    permission_classes = (permissions.AllowAny,)
