from rest_framework import serializers

from .models import Project, Task


class ProjectSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ("id", "name", "slug")


class TaskSerializer(serializers.ModelSerializer):
    """``notes`` is left out: a change to it alone sends no push."""

    class Meta:
        model = Task
        fields = ("id", "project", "title", "done", "assignee", "updated_at")
