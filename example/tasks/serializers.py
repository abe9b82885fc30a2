from rest_framework import serializers

from .models import Project, Task


class ProjectSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ("id", "name", "slug")


class OwnProjectField(serializers.PrimaryKeyRelatedField):
    """A project of the socket's user (the consumer passes its scope in the serializer's
    context): a create or patch cannot put a task into anyone else's project. Another
    user's project answers as a missing one does, so its existence does not leak."""

    def get_queryset(self):
        scope = self.context.get("scope") or {}
        user = scope.get("user")
        if user is None or not user.is_authenticated:
            return Project.objects.none()
        return Project.objects.filter(owner=user.pk)


class TaskSerializer(serializers.ModelSerializer):
    """``notes`` is left out: a change to it alone sends no push."""

    project = OwnProjectField()

    class Meta:
        model = Task
        fields = ("id", "project", "title", "done", "assignee", "updated_at")
        read_only_fields = ("assignee", "updated_at")
