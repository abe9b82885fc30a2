from pgobserve import permissions
from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import ListModelMixin, ObserverModelInstanceMixin, PatchModelMixin

from .models import Project, Task
from .serializers import ProjectSerializer, TaskSerializer


class TaskConsumer(
    ObserverModelInstanceMixin, ListModelMixin, PatchModelMixin, GenericAsyncAPIConsumer
):
    """``/ws/tasks/``: list, retrieve, patch and subscribe to any task."""

    queryset = Task.objects.all()
    serializer_class = TaskSerializer
    permission_classes = (permissions.AllowAny,)


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
