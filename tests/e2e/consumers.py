"""Consumers only the tests need: a push-time permission, a query counter, a failing action."""

from django.db import connection
from django.test.utils import CaptureQueriesContext
from tasks.models import Task
from tasks.serializers import TaskSerializer

from pgobserve import permissions
from pgobserve.decorators import action
from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import ObserverModelInstanceMixin


class NoSecretPushes(permissions.BasePermission):
    """Every action is allowed, but no push for a task whose title starts with "secret"."""

    def has_permission(self, scope, consumer, action, **kwargs) -> bool:
        if action in ("update", "delete"):
            return not Task.objects.filter(pk=kwargs["pk"], title__startswith="secret").exists()
        return True


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
