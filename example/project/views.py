from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from tasks.models import Project

from project import database

#: Stands for a task id in the psql hint; the page puts in the id of a task on the board.
PK = "{pk}"


@login_required
def board(request):
    """The live board: the user's tasks, kept current over /ws/tasks/ and /ws/projects/
    by pgobserve's client (the page holds no rows of its own: the sockets send them)."""
    first_project = Project.objects.filter(owner=request.user).order_by("name", "id").first()
    return render(
        request,
        "board.html",
        {
            "board_config": {
                "user": {"id": request.user.pk, "username": request.user.get_username()},
                "sockets": {"tasks": "/ws/tasks/", "projects": "/ws/projects/"},
                "adminTask": "/admin/tasks/task/{pk}/change/" if request.user.is_staff else None,
            },
            "psql": psql_hints(first_project),
        },
    )


def psql_hints(project: Project | None) -> list[dict[str, str]]:
    """Commands to paste in a terminal: a writer the application never sees."""
    hints = [
        {
            "id": "psql-toggle",
            "label": "Move a task between Open and Done",
            "command": database.psql_command(
                f"UPDATE tasks_task SET done = NOT done, updated_at = now() WHERE id = {PK}"
            ),
        }
    ]
    if project is None:
        return hints
    insert = (
        "INSERT INTO tasks_task (project_id, title, done, notes, updated_at) "
        f"VALUES ({project.pk}, 'Added in psql', false, '', now())"
    )
    delete = f"DELETE FROM tasks_task WHERE project_id = {project.pk} AND title = 'Added in psql'"
    return [
        *hints,
        {
            "id": "psql-insert",
            "label": f"Add a task to {project.name}",
            "command": database.psql_command(insert),
        },
        {
            "id": "psql-delete",
            "label": "Delete the tasks added in psql",
            "command": database.psql_command(delete),
        },
    ]
