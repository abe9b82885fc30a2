"""``/ws/users/``: a user's own row, kept live (no one else's: no other user's e-mail)."""

from django.contrib.auth import get_user_model

from pgobserve import permissions
from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import ObserverModelInstanceMixin

from . import serializers


class UserConsumer(ObserverModelInstanceMixin, GenericAsyncAPIConsumer):
    """Retrieve and subscribe to yourself: another user's pk answers 404, as a missing one.
    ``IsAuthenticated`` as in DCRF: an anonymous socket connects, every action is 403."""

    serializer_class = serializers.UserSerializer
    permission_classes = (permissions.IsAuthenticated,)

    def get_queryset(self, **kwargs):
        user = self.scope.get("user")
        users = get_user_model().objects
        if user is None or not user.is_authenticated:
            return users.none()
        return users.filter(pk=user.pk)
