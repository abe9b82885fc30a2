from django.shortcuts import render
from tasks.models import Task


def live(request):
    """The live page: every task, kept current over /ws/tasks/."""
    return render(request, "live.html", {"tasks": Task.objects.order_by("id")})
