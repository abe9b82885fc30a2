from django.db.models import Q

from pgobserve import permissions
from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import (
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


class TaskConsumer(
    ObserverModelInstanceMixin,
    ObserverQueryMixin,
    ListModelMixin,
    PatchModelMixin,
    GenericAsyncAPIConsumer,
):
    """``/ws/tasks/``: list, retrieve, patch and subscribe to any task, or to a filtered
    list: ``{"action": "subscribe_query", "filters": {"done": false}, "request_id": 1}``."""

    queryset = Task.objects.all()
    serializer_class = TaskSerializer
    permission_classes = (permissions.AllowAny,)
    query_filter_fields = TASK_FILTERS


class MyTaskConsumer(
    ObserverModelInstanceMixin, ObserverQueryMixin, ListModelMixin, GenericAsyncAPIConsumer
):
    """``/ws/my-tasks/``: the logged-in user's tasks (in projects they own, or assigned to
    them). The queryset depends on the user, so each socket's lists and pushes only ever
    hold that user's rows; a task moved out of them is pushed as ``delete``. The queryset
    joins ``tasks_project``: a project changing owner, by whatever writer, moves its tasks
    from the old owner's subscriptions to the new owner's."""

    serializer_class = TaskSerializer
    permission_classes = (permissions.IsAuthenticated,)
    query_filter_fields = TASK_FILTERS

    def get_queryset(self, **kwargs):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return Task.objects.none()
        return Task.objects.filter(Q(project__owner=user.pk) | Q(assignee=user.pk))


class OpenTaskConsumer(ObserverModelInstanceMixin, ListModelMixin, GenericAsyncAPIConsumer):
    """``/ws/open-tasks/``: only tasks not done. Marking a task done pushes ``delete``."""

    queryset = Task.objects.filter(done=False)
    serializer_class = TaskSerializer
    permission_classes = (permissions.AllowAny,)


class ProjectConsumer(ObserverModelInstanceMixin, GenericAsyncAPIConsumer):
    """``/ws/projects/``: by slug: ``{"action": "subscribe_instance", "slug": "demo"}``."""

    queryset = Project.objects.all()
    serializer_class = ProjectSerializer
    lookup_field = "slug"
    permission_classes = (permissions.AllowAny,)
