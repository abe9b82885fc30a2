"""The example's models in the Django admin: "change it in the admin" and watch the board."""

from django.contrib import admin

from .models import Project, Task


class TaskInline(admin.TabularInline):
    model = Task
    fields = ("title", "done", "assignee")
    extra = 1


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "owner")
    list_filter = ("owner",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [TaskInline]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "project", "done", "assignee", "updated_at")
    list_display_links = ("id", "title")
    list_editable = ("done",)
    list_filter = ("done", "project", "project__owner")
    search_fields = ("title", "notes")
    list_select_related = ("project", "assignee")
