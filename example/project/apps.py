from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project package is also an app: the demo command, the live page, the login form."""

    name = "project"
