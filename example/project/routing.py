from accounts.consumers import UserConsumer
from django.urls import path
from tasks.consumers import MyTaskConsumer, OpenTaskConsumer, ProjectConsumer, TaskConsumer

websocket_urlpatterns = [
    path("ws/users/", UserConsumer.as_asgi()),
    path("ws/tasks/", TaskConsumer.as_asgi()),
    path("ws/open-tasks/", OpenTaskConsumer.as_asgi()),
    path("ws/my-tasks/", MyTaskConsumer.as_asgi()),
    path("ws/projects/", ProjectConsumer.as_asgi()),
]
