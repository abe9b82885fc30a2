"""The board's sockets. Every consumer here is for logged-in users and only ever reads or
writes the user's own rows: ``get_queryset()`` is scoped to the user (lists, retrieves,
subscriptions and every push go through it), and the serializer refuses to put a task
into a project the user does not own (``TaskSerializer.project``)."""

from accounts.permissions import LoggedIn
from django.db.models import Q

from pgobserve import permissions
from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import (
    CreateModelMixin,
    DeleteModelMixin,
    ListModelMixin,
    ObserverModelInstanceMixin,
    ObserverQueryMixin,
    PatchModelMixin,
)

from .models import Project, Task
from .serializers import ProjectSerializer, TaskSerializer

#: What clients may filter tasks on in ``subscribe_query``.
TASK_FILTERS = {
    "done": ["exact"],
    "project": ["exact", "in"],
    "title": ["icontains"],
    "assignee": ["exact", "isnull"],
}


def user_of(consumer) -> object | None:
    """The socket's logged-in user, or None."""
    user = consumer.scope.get("user")
    return user if user is not None and user.is_authenticated else None


class TaskConsumer(
    ObserverModelInstanceMixin,
    ObserverQueryMixin,
    ListModelMixin,
    CreateModelMixin,
    PatchModelMixin,
    DeleteModelMixin,
    GenericAsyncAPIConsumer,
):
    """``/ws/tasks/``: the tasks of the user's projects: list, retrieve, create, patch,
    delete, and subscribe to one (``subscribe_instance``) or to a filtered list:
    ``{"action": "subscribe_query", "filters": {"done": false}, "request_id": 1}``.
    A task moved out of the user's projects (by any writer) is pushed as ``delete``."""

    serializer_class = TaskSerializer
    permission_classes = (LoggedIn,)
    query_filter_fields = TASK_FILTERS

    def get_queryset(self, **kwargs):
        user = user_of(self)
        if user is None:
            return Task.objects.none()
        return Task.objects.filter(project__owner=user.pk)


class MyTaskConsumer(
    ObserverModelInstanceMixin, ObserverQueryMixin, ListModelMixin, GenericAsyncAPIConsumer
):
    """``/ws/my-tasks/``: the logged-in user's tasks (in projects they own, or assigned to
    them). The queryset depends on the user, so each socket's lists and pushes only ever
    hold that user's rows; a task moved out of them is pushed as ``delete``. The queryset
    joins ``tasks_project``: a project changing owner, by whatever writer, moves its tasks
    from the old owner's subscriptions to the new owner's. ``IsAuthenticated`` as in DCRF:
    an anonymous socket connects, and every action answers 403."""

    serializer_class = TaskSerializer
    permission_classes = (permissions.IsAuthenticated,)
    query_filter_fields = TASK_FILTERS

    def get_queryset(self, **kwargs):
        user = user_of(self)
        if user is None:
            return Task.objects.none()
        return Task.objects.filter(Q(project__owner=user.pk) | Q(assignee=user.pk))


class OpenTaskConsumer(ObserverModelInstanceMixin, ListModelMixin, GenericAsyncAPIConsumer):
    """``/ws/open-tasks/``: the user's tasks not done. Marking a task done pushes ``delete``."""

    serializer_class = TaskSerializer
    permission_classes = (LoggedIn,)

    def get_queryset(self, **kwargs):
        user = user_of(self)
        if user is None:
            return Task.objects.none()
        return Task.objects.filter(project__owner=user.pk, done=False)


class ProjectConsumer(
    ObserverModelInstanceMixin, ObserverQueryMixin, ListModelMixin, GenericAsyncAPIConsumer
):
    """``/ws/projects/``: the user's projects, looked up by slug:
    ``{"action": "subscribe_instance", "slug": "demo"}``, or all of them, kept live:
    ``{"action": "subscribe_query", "filters": {}}`` (the board's columns)."""

    serializer_class = ProjectSerializer
    lookup_field = "slug"
    permission_classes = (LoggedIn,)

    def get_queryset(self, **kwargs):
        user = user_of(self)
        if user is None:
            return Project.objects.none()
        return Project.objects.filter(owner=user.pk).order_by("name", "id")
